"""The polyp tracker: stable ids, on/off times in seconds, gates, arrows."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from streamseg.detections import Detection, FrameRegions, detect
from streamseg.tracking import (
    Tracker,
    TrackingSettings,
    associate,
    box_iou,
    exit_point,
)

HW = (120, 160)


def regions(*boxes, color=None, hw=HW) -> FrameRegions:
    """Detections for boxes (x, y, w, h); area = the box's, colour optional."""
    return FrameRegions(
        hw,
        tuple(
            Detection(box, box[2] * box[3], label=i + 1, color_lab=color)
            for i, box in enumerate(boxes)
        ),
    )


def play(tracker, frames, fps=25.0, start_s=0.0):
    """Feed (regions per frame) at ``fps``; the TrackFrames."""
    return [tracker(start_s + i / fps, r) for i, r in enumerate(frames)]


def test_a_moving_polyp_keeps_one_id_and_its_time_on_screen_grows():
    tracker = Tracker(TrackingSettings(min_on_s=0.0))
    frames = [regions((10 + 3 * i, 20 + i, 40, 30)) for i in range(20)]
    out = play(tracker, frames)
    assert all(f.track_ids == (1,) for f in out)
    assert out[-1].polyps_seen == 1
    assert out[-1].tracks[0].on_screen_s == pytest.approx(19 / 25)
    assert out[-1].tracks[0].box_xywh == (67, 39, 40, 30)


@pytest.mark.parametrize("fps", [25.0, 50.0])
def test_min_on_and_keep_are_seconds_at_any_frame_rate(fps):
    settings = TrackingSettings(min_on_s=0.08, keep_s=0.2, max_gap_s=0.5)
    tracker = Tracker(settings)
    present_s, absent_s = 1.0, 0.6
    n_on, n_off = round(present_s * fps), round(absent_s * fps)
    frames = [regions((30, 30, 40, 40))] * n_on + [regions()] * n_off
    out = play(tracker, frames, fps)
    shown = [
        t for t, f in zip(np.arange(len(out)) / fps, out, strict=True) if f.present
    ]
    # Shown from 0.08 s (after min_on_s of detections) to 0.2 s after the last one.
    assert shown[0] == pytest.approx(0.08)
    assert shown[-1] == pytest.approx((n_on - 1) / fps + 0.2)
    held = [f for f in out if f.present and not f.tracks[0].detected]
    assert held and all(f.tracks[0].detection is None for f in held)


def test_a_missed_frame_within_keep_does_not_blink_or_change_the_id():
    tracker = Tracker(TrackingSettings(min_on_s=0.0, keep_s=0.2))
    box = (30, 30, 40, 40)
    frames = [regions(box)] * 5 + [regions()] * 3 + [regions(box)] * 5
    out = play(tracker, frames)
    assert all(f.present for f in out)
    assert {f.track_ids for f in out} == {(1,)}


def test_a_polyp_back_after_max_gap_gets_a_new_id():
    tracker = Tracker(TrackingSettings(min_on_s=0.0, keep_s=0.2, max_gap_s=0.4))
    box = (30, 30, 40, 40)
    out = play(tracker, [regions(box)] * 3 + [regions()] * 15 + [regions(box)] * 3)
    assert out[2].track_ids == (1,)
    assert not out[10].present
    assert out[-1].track_ids == (2,) and out[-1].polyps_seen == 2


def test_two_polyps_get_two_ids_and_a_blip_under_min_on_none():
    tracker = Tracker(TrackingSettings(min_on_s=0.08))
    frames = [regions((5, 5, 30, 30), (100, 60, 40, 40)) for _ in range(6)]
    frames[2] = regions((5, 5, 30, 30), (100, 60, 40, 40), (60, 100, 8, 8))  # blip
    out = play(tracker, frames)
    assert out[-1].track_ids == (1, 2)
    assert out[-1].polyps_seen == 2


def test_a_split_mask_stays_one_polyp():
    tracker = Tracker(TrackingSettings(min_on_s=0.0))
    out = play(
        tracker,
        [regions((20, 20, 60, 40))] * 3
        + [regions((20, 20, 30, 40), (52, 20, 28, 40))] * 3,  # the mask splits
    )
    assert out[-1].track_ids == (1,) and out[-1].polyps_seen == 1
    assert out[-1].shown_detections() == frozenset({0, 1})


def test_a_differently_coloured_polyp_in_the_same_place_is_a_new_polyp():
    tracker = Tracker(TrackingSettings(min_on_s=0.0))
    box = (30, 30, 50, 40)
    out = play(
        tracker,
        [regions(box, color=(120.0, 150.0, 150.0))] * 4
        + [regions(box, color=(120.0, 175.0, 150.0))] * 4,  # a cut to another polyp
    )
    assert out[3].track_ids == (1,)
    assert out[-1].polyps_seen == 2 and 2 in out[-1].track_ids
    # Exposure changes lightness fast; that alone does not split a polyp.
    tracker = Tracker(TrackingSettings(min_on_s=0.0))
    out = play(
        tracker,
        [regions(box, color=(80.0 + 8 * i, 150.0, 150.0)) for i in range(8)],
    )
    assert out[-1].polyps_seen == 1


def test_a_sudden_tenfold_area_change_is_a_new_polyp():
    tracker = Tracker(TrackingSettings(min_on_s=0.0))
    out = play(
        tracker, [regions((40, 40, 10, 10))] * 3 + [regions((20, 20, 60, 60))] * 3
    )
    assert out[-1].polyps_seen == 2


def test_arrows_point_where_a_polyp_left_the_view():
    settings = TrackingSettings(
        min_on_s=0.0, keep_s=0.12, arrows=True, arrow_window_s=1.0
    )
    tracker = Tracker(settings)
    # Moving right at 250 px/s until it touches the right edge, then gone.
    frames = [regions((60 + 10 * i, 50, 30, 20)) for i in range(8)] + [regions()] * 30
    out = play(tracker, frames)
    with_arrow = [f for f in out if f.departures]
    assert with_arrow, "no arrow after the polyp left"
    first = with_arrow[0].departures[0]
    assert first.track_id == 1
    assert first.direction_xy[0] > 0.9  # pointing right, out of the frame
    assert first.exit_xy[0] == pytest.approx(HW[1])
    # Not while it is still shown, and not after the window.
    assert not any(f.departures for f in out if f.present)
    assert not out[-1].departures
    off = Tracker(TrackingSettings(min_on_s=0.0, keep_s=0.12))
    assert not any(f.departures for f in play(off, frames))


def test_a_polyp_lost_in_the_middle_of_the_view_gets_no_arrow():
    tracker = Tracker(TrackingSettings(min_on_s=0.0, keep_s=0.1, arrows=True))
    out = play(tracker, [regions((60, 45, 30, 30))] * 5 + [regions()] * 20)
    assert not any(f.departures for f in out)


def test_a_timestamp_going_back_ends_every_track_but_keeps_the_count():
    tracker = Tracker(TrackingSettings(min_on_s=0.0))
    play(tracker, [regions((30, 30, 40, 40))] * 3)
    out = tracker(0.0, regions((30, 30, 40, 40)))
    assert out.track_ids == (2,) and out.polyps_seen == 2


def test_detect_finds_regions_largest_first_with_their_colours():
    mask = np.zeros((40, 60), bool)
    mask[2:6, 2:6] = True
    mask[10:30, 20:50] = True
    pixels = np.zeros((40, 60, 3), np.uint8)
    pixels[10:30, 20:50] = (200, 40, 40)
    found = detect(mask, pixels)
    assert [d.box_xywh for d in found.detections] == [(20, 10, 30, 20), (2, 2, 4, 4)]
    red, black = found.detections[0].color_lab, found.detections[1].color_lab
    assert red[1] > 150 and black == (0.0, 128.0, 128.0)
    assert found.mask_of({0}).sum() == 600
    assert detect(np.zeros((4, 4), bool)).detections == ()


def test_association_and_geometry_helpers():
    assert box_iou((0, 0, 10, 10), (20, 20, 5, 5)) == 0.0
    pairs = associate(
        [(0, 0, 10, 10), (50, 50, 10, 10)],
        [(52, 50, 10, 10), (1, 0, 10, 10)],
        match_iou=0.1,
        max_distance_px=5,
    )
    assert sorted(pairs) == [(0, 1), (1, 0)]
    assert (
        associate(
            [(0, 0, 10, 10)],
            [(0, 0, 10, 10)],
            match_iou=0.1,
            max_distance_px=5,
            allowed=lambda i, j: False,
        )
        == []
    )
    point, direction = exit_point((100, 200), (100.0, 10.0), (0.0, -50.0))
    assert point == (100.0, 0.0) and direction == (0.0, -1.0)


@pytest.mark.parametrize(
    "changes",
    [
        {"keep_s": 2.0, "max_gap_s": 1.0},
        {"min_on_s": -1.0},
        {"match_iou": 1.5},
        {"max_area_ratio": 0.5},
        {"edge_margin": 0.6},
    ],
)
def test_settings_reject_values_that_cannot_work(changes):
    with pytest.raises(ValueError):
        TrackingSettings(**changes)


def _tracked_findings(tracker, index, center_x, hw=(96, 128)):
    """The findings of one frame with a red disc at ``center_x`` (None: no disc)."""
    import torch

    from streamseg.findings import Findings
    from streamseg.frames import Frame, Prediction

    yy, xx = np.mgrid[: hw[0], : hw[1]]
    disc = (
        (yy - 48) ** 2 + (xx - center_x) ** 2 <= 15**2
        if center_x
        else np.zeros(hw, bool)
    )
    pixels = np.full((*hw, 3), 90, np.uint8)
    pixels[disc] = (200, 60, 60)
    prediction = Prediction(
        Frame(index, index / 25, pixels), torch.from_numpy(disc.astype(np.float32)), 0.5
    )
    return Findings.of(prediction).tracked(tracker)


def test_the_overlay_draws_the_id_the_count_and_an_edge_arrow():
    from streamseg.overlay import OverlayStyle, render

    style = OverlayStyle(fill_opacity=0.0, contour_px=0)
    tracker = Tracker(
        TrackingSettings(min_on_s=0.0, keep_s=0.08, arrows=True, arrow_window_s=2.0)
    )
    # A disc moves right and leaves through the right edge.
    images = [
        render(_tracked_findings(tracker, i, 40 + 10 * i if i < 9 else None), style)
        for i in range(14)
    ]
    plain = render(_tracked_findings(Tracker(TrackingSettings()), 0, None), style)
    box = np.array(style.box_rgb)
    # Frame 3: the id label sits on a filled box-coloured patch above the disc.
    label = np.all(images[3][10:33, 55:110] == box, axis=-1)
    assert label.sum() > 100
    # Frame 13: no polyp shown; an arrow in box colour at the right edge.
    right = np.all(images[13][:, -40:] == box, axis=-1)
    left = np.all(images[13][:, :40] == box, axis=-1)
    assert right.sum() > 30 and left.sum() == 0
    assert not np.array_equal(images[13], plain)


def test_the_web_status_has_the_count_and_the_track_list():
    from streamseg.web import WebView

    tracker = Tracker(TrackingSettings(min_on_s=0.0))
    web = WebView("127.0.0.1:0")
    try:
        for i in range(3):
            findings = _tracked_findings(tracker, i, 50)
            web.write(findings, findings.frame.pixels)
        status = web.status()
    finally:
        web.close()
    assert status["polyps_seen"] == 1
    assert status["tracks"] == [{"id": 1, "on_screen_s": 0.1, "detected": True}]


def test_the_web_count_survives_a_loss_of_signal():
    from streamseg.web import WebView

    tracker = Tracker(TrackingSettings(min_on_s=0.0))
    web = WebView("127.0.0.1:0")
    try:
        findings = _tracked_findings(tracker, 0, 50)
        web.write(findings, findings.frame.pixels)
        web.show_no_signal(findings.frame.pixels)
        status = web.status()
    finally:
        web.close()
    assert status["signal"] is False
    assert status["polyps_seen"] == 1 and status["tracks"] == []


def test_findings_carry_the_tracks_of_their_own_frame():
    tracker = Tracker(TrackingSettings(min_on_s=0.0))
    findings = _tracked_findings(tracker, 0, 50)
    assert findings.track_ids == (1,) and findings.tracks.polyps_seen == 1
    plain = dataclasses.replace(findings, tracks=None)
    assert plain.track_ids == ()
    other = Tracker(TrackingSettings(min_on_s=0.0))(0.0, detect(np.zeros((8, 8), bool)))
    with pytest.raises(ValueError, match="tracks"):
        dataclasses.replace(findings, tracks=other)
