"""Overlay: fill and contour inside the mask, boxes around regions, input unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from stream_media import CVC_FRAMES

from streamseg.findings import Findings
from streamseg.frames import Frame, Prediction
from streamseg.overlay import (
    HudText,
    OverlayStyle,
    inner_edge,
    inner_edge_pooled,
    render,
    render_host,
    render_tensor,
)

PLAIN = OverlayStyle(boxes=False, hud=False)


@pytest.fixture
def real_frame():
    import cv2

    bgr = cv2.imread(str(CVC_FRAMES / "1.png"))
    return Frame(0, 0.0, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def _square_mask(hw, top, left, size):
    mask = torch.zeros(hw)
    mask[top : top + size, left : left + size] = 0.9
    return mask


def test_pixels_outside_the_mask_are_untouched_and_the_input_is_not_modified(
    real_frame,
):
    original = real_frame.pixels.copy()
    probabilities = _square_mask(real_frame.hw, 40, 60, 50)
    image = render(Findings.of(Prediction(real_frame, probabilities, 0.5)), PLAIN)
    outside = (probabilities < 0.5).numpy()
    assert np.array_equal(image[outside], original[outside])
    assert not np.array_equal(image[~outside], original[~outside])
    assert np.array_equal(real_frame.pixels, original), (
        "the input frame must not change"
    )
    assert image.shape == original.shape and image.dtype == np.uint8
    assert not np.shares_memory(image, real_frame.pixels)


def test_fill_blends_the_configured_colour_and_the_contour_has_the_configured_width():
    frame = Frame(0, 0.0, np.full((40, 40, 3), 100, np.uint8))
    style = OverlayStyle(
        fill_rgb=(0, 200, 0),
        fill_opacity=0.5,
        contour_rgb=(255, 0, 255),
        contour_px=2,
        boxes=False,
        hud=False,
    )
    image = render(
        Findings.of(Prediction(frame, _square_mask((40, 40), 10, 10, 20), 0.5)), style
    )
    assert tuple(image[20, 20]) == (50, 150, 50)  # interior: halfway to the fill colour
    for y in (10, 11, 28, 29):  # the 2 px inner edge
        assert tuple(image[y, 20]) == (255, 0, 255)
    assert tuple(image[12, 20]) == (50, 150, 50)
    assert tuple(image[9, 20]) == (100, 100, 100)  # just outside


def test_boxes_surround_each_region_without_touching_other_pixels(real_frame):
    original = real_frame.pixels
    probabilities = _square_mask(real_frame.hw, 20, 20, 30) + _square_mask(
        real_frame.hw, 80, 120, 20
    )
    style = OverlayStyle(
        boxes=True, box_px=2, box_margin_px=3, box_rgb=(255, 255, 0), hud=False
    )
    image = render(Findings.of(Prediction(real_frame, probabilities, 0.5)), style)
    changed = np.any(image != original, axis=-1)
    # Each box line runs 3-5 px outside its region: rows 15/16 above the first square.
    assert np.all(image[16, 20:50] == (255, 255, 0))
    assert np.all(image[75, 120:140] == (255, 255, 0))
    # Nothing changes far from both regions.
    assert not changed[:10].any() and not changed[:, 150:].any()


def test_no_mask_means_an_identical_copy(real_frame):
    image = render(
        Findings.of(Prediction(real_frame, torch.zeros(real_frame.hw), 0.5)),
        OverlayStyle(hud=False),
    )
    assert np.array_equal(image, real_frame.pixels)
    assert not np.shares_memory(image, real_frame.pixels)


def test_hud_shows_the_polyp_indicator_only_when_there_is_a_polyp(real_frame):
    style = OverlayStyle(fill_opacity=0, contour_px=0, boxes=False, hud=True)
    with_polyp = render(
        Findings.of(
            Prediction(real_frame, _square_mask(real_frame.hw, 80, 120, 20), 0.5)
        ),
        style,
        HudText(25.0, 40.0),
    )
    without = render(
        Findings.of(Prediction(real_frame, torch.zeros(real_frame.hw), 0.5)),
        style,
        HudText(25.0, 40.0),
    )
    corner = (slice(0, 20), slice(0, 40))
    alert = np.array(style.alert_rgb)
    assert np.sum(np.all(with_polyp[corner] == alert, axis=-1)) > 50
    assert np.sum(np.all(without[corner] == alert, axis=-1)) == 0
    assert not np.array_equal(without, real_frame.pixels)  # fps / latency text


def test_the_opencv_and_the_tensor_edge_paths_agree():
    mask = torch.zeros(30, 40, dtype=torch.bool)
    mask[0:12, 5:20] = True  # touches the frame border
    mask[15:28, 22:38] = True
    mask[20, 30] = False  # a hole
    for width_px in (1, 2, 3):
        assert torch.equal(
            inner_edge(mask, width_px), inner_edge_pooled(mask, width_px)
        )
    edge = inner_edge(mask, 1)
    assert not edge[0, 10], "the frame border is not a region edge"
    assert edge[19:22, 29:32].sum() == 8, "a hole has an edge around it"


def _blobs(hw, seed):
    """A mask with a disc, a ring (hole), speckle and a region on the frame border."""
    height, width = hw
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    radius = np.hypot(yy - height * 0.5, xx - width * 0.4)
    mask = radius < height * 0.2
    mask |= (radius > height * 0.28) & (radius < height * 0.33)
    mask |= rng.random(hw) > 0.998
    mask[: height // 6, -width // 5 :] = True  # touches the top and right borders
    return torch.from_numpy(mask)


@pytest.mark.parametrize(
    ("mask_kind", "style"),
    [
        (0, OverlayStyle()),
        (1, OverlayStyle(hud=False, contour_px=1)),
        (2, OverlayStyle(fill_opacity=1.0, contour_px=3)),
        (3, OverlayStyle(fill_opacity=0.0, box_px=1)),
        (4, OverlayStyle(contour_px=0, boxes=False)),
        (5, OverlayStyle(fill_rgb=(200, 40, 90), fill_opacity=0.7)),
        ("full", OverlayStyle()),
        ("empty", OverlayStyle()),
    ],
)
def test_the_opencv_host_path_draws_exactly_what_the_tensor_path_draws(
    real_frame, mask_kind, style
):
    """render() on the CPU (OpenCV, bounding box only) vs the GPU path on the CPU."""
    if mask_kind == "full":
        mask = torch.ones(real_frame.hw, dtype=torch.bool)
    elif mask_kind == "empty":
        mask = torch.zeros(real_frame.hw, dtype=torch.bool)
    else:
        mask = _blobs(real_frame.hw, mask_kind)
    original = real_frame.pixels.copy()
    prediction = Prediction(real_frame, mask.float(), 0.5)
    hud = HudText(25.0, 40.0)
    host = render(Findings.of(prediction), style, hud)
    reference = render_tensor(Findings.of(prediction), style, hud)
    assert host.dtype == np.uint8 and host.shape == reference.shape
    assert np.array_equal(host, reference)
    assert np.array_equal(real_frame.pixels, original)
    assert not np.shares_memory(host, real_frame.pixels)


def test_the_host_path_accepts_a_read_only_frame_and_a_strided_mask(real_frame):
    pixels = real_frame.pixels.copy()
    pixels.setflags(write=False)
    mask = _blobs((real_frame.hw[1], real_frame.hw[0]), 7).T.numpy()  # not C-contiguous
    image = render_host(pixels, mask, OverlayStyle(), HudText())
    reference = render_tensor(
        Findings.of(
            Prediction(Frame(0, 0.0, pixels), torch.from_numpy(mask).float(), 0.5)
        ),
        OverlayStyle(),
    )
    assert np.array_equal(image, reference)


@pytest.mark.parametrize(
    ("style", "message"),
    [
        ({"fill_rgb": (0, 300, 0)}, "fill_rgb"),
        ({"fill_opacity": 1.5}, "fill_opacity"),
        ({"contour_px": -1}, "contour_px"),
    ],
)
def test_invalid_style_names_the_key(style, message):
    with pytest.raises(ValueError, match=message):
        OverlayStyle(**style)


def test_findings_scale_a_map_at_the_network_size_to_the_frame():
    """A 32x32 map (the network's size) over a 90x160 frame: the mask, area,
    boxes and drawing are at the frame's size, and the tracker reuses the one
    labelling."""
    from streamseg.regions import find_regions, scale_mask
    from streamseg.tracking import Tracker, TrackingSettings

    frame = Frame(0, 0.0, np.zeros((90, 160, 3), np.uint8))
    probabilities = torch.zeros(32, 32)
    probabilities[8:16, 4:12] = 0.9  # a quarter of the height, of the width
    findings = Findings.of(Prediction(frame, probabilities, 0.5))
    assert findings.mask.shape == (90, 160)
    assert np.array_equal(
        findings.mask, scale_mask(probabilities.numpy() >= 0.5, (90, 160))
    )
    assert findings.area_fraction == pytest.approx(1 / 16, abs=0.01)
    ((x, y, w, h),) = findings.boxes_xywh
    assert (x, y) == pytest.approx((20, 22.5), abs=2.5)
    assert (w, h) == pytest.approx((40, 22.5), abs=2.5)
    # Boxes from the map's regions: the box of the drawn mask, area within scaling.
    ((box, area),) = [(r.box_xywh, r.area_px) for r in find_regions(findings.mask)]
    assert findings.regions[0].box_xywh == box
    assert findings.regions[0].area_px == pytest.approx(area, rel=0.05)
    image = render(findings, OverlayStyle(hud=False, boxes=False))
    assert image.shape == (90, 160, 3)
    assert (image[findings.mask] != 0).any() and not image[~findings.mask].any()
    tracked = findings.tracked(Tracker(TrackingSettings(min_on_s=0.0)))
    assert tracked.tracks is not None and tracked.tracks.hw == (90, 160)


@pytest.mark.parametrize("map_hw", [(320, 320), (352, 352), (256, 320)])
@pytest.mark.parametrize(
    "frame_hw", [(720, 1280), (1080, 1920), (576, 768), (481, 643), (600, 300)]
)
def test_scaling_only_around_the_mask_equals_scaling_the_whole_mask(map_hw, frame_hw):
    import cv2

    from streamseg.regions import scale_mask

    rng = np.random.default_rng(sum(map_hw) + sum(frame_hw))
    masks = [np.zeros(map_hw, bool), np.ones(map_hw, bool)]
    for _ in range(12):
        mask = np.zeros(map_hw, bool)
        for _ in range(rng.integers(1, 4)):  # blobs, some on the edges
            y, x = rng.integers(0, map_hw[0]), rng.integers(0, map_hw[1])
            mask[y : y + rng.integers(1, 90), x : x + rng.integers(1, 90)] = True
        masks.append(mask & (rng.random(map_hw) > 0.1))  # ragged outlines
    for mask in masks:
        whole = cv2.resize(
            mask.view(np.uint8) * np.uint8(255),
            frame_hw[::-1],
            interpolation=cv2.INTER_LINEAR,
        )
        assert np.array_equal(scale_mask(mask, frame_hw), whole >= 128)


def test_regions_are_counted_on_the_map_not_on_the_scaled_mask():
    """Two map pixels touching only at a corner are one 8-connected region;
    bilinear scaling separates them. The region count, boxes and tracks follow
    the map."""
    from streamseg.regions import find_regions
    from streamseg.tracking import Tracker, TrackingSettings

    frame = Frame(0, 0.0, np.zeros((20, 21, 3), np.uint8))
    probabilities = torch.zeros(6, 6)
    probabilities[1:3, 1:3] = 0.9
    probabilities[3:5, 3:5] = 0.9  # touches the first block at one corner
    findings = Findings.of(Prediction(frame, probabilities, 0.5))
    assert len(find_regions(findings.mask)) == 2  # the scaled mask splits
    assert len(findings.regions) == 1
    assert findings.regions[0].box_xywh == (3, 3, 15, 14)
    tracked = findings.tracked(Tracker(TrackingSettings(min_on_s=0.0)))
    assert tracked.tracks is not None and len(tracked.tracks.track_ids) == 1
