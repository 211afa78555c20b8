"""Alerts when a polyp first appears (cooldown, flash, bell); the NO SIGNAL card."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pty
import sys
import threading

import numpy as np
import pytest
from live_helpers import RedDiscSegmenter, use_red_disc_segmenter
from stream_media import disc_image, write_video

from streamseg.alerts import Alerter, AlertSettings, should_alert
from streamseg.app import StreamConfig, run
from streamseg.cli import main
from streamseg.overlay import OverlayStyle, draw_border, no_signal_image
from streamseg.segmenter import ModelSettings
from streamseg.sinks import FrameList
from streamseg.sources import SourceSettings


@pytest.mark.parametrize(
    ("present", "was_present", "last_alert_s", "now_s", "expected"),
    [
        (True, False, None, 0.0, True),  # first appearance
        (True, True, None, 1.0, False),  # still there: no new alert
        (False, True, 0.0, 1.0, False),
        (True, False, 0.0, 4.9, False),  # back within the cooldown
        (True, False, 0.0, 5.0, True),  # back after the cooldown
    ],
)
def test_should_alert(present, was_present, last_alert_s, now_s, expected):
    assert should_alert(present, was_present, last_alert_s, now_s, 5.0) is expected


def test_alerts_are_off_by_default_and_the_bell_rings_once_per_alert():
    silent = Alerter(AlertSettings())
    assert not AlertSettings().enabled
    assert not silent.update(True, 0.0) and silent.count == 0

    rings = []
    alerter = Alerter(
        AlertSettings(sound="bell", cooldown_s=1.0), ring=lambda: rings.append(1)
    )
    found = [alerter.update(p, t) for p, t in [(True, 0), (True, 0.1), (False, 0.2)]]
    alerter.signal_lost()
    found += [alerter.update(True, 1.5)]
    assert found == [True, False, False, True] and rings == [1, 1]
    assert not alerter.flashing(1.5), "no flash unless asked for"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("cooldown_s", -1.0, "cooldown_s: expected >= 0"),
        ("flash_s", 0.0, "flash_s: expected > 0"),
        ("border_px", 0, "border_px: expected >= 1"),
        ("border_rgb", (0, 0, 300), "border_rgb: expected"),
    ],
)
def test_alert_settings_are_checked(field, value, message):
    with pytest.raises(ValueError, match=message):
        AlertSettings(**{field: value})


def test_border_and_no_signal_card():
    image = np.zeros((20, 30, 3), np.uint8)
    draw_border(image, (255, 40, 40), 3)
    assert (image[:3] == (255, 40, 40)).all() and (image[:, -3:] == (255, 40, 40)).all()
    assert (image[3:-3, 3:-3] == 0).all()

    style = OverlayStyle()
    card = no_signal_image((120, 160), style, 3.0)
    assert card.shape == (120, 160, 3) and card.dtype == np.uint8
    assert (card == style.alert_rgb).all(axis=-1).sum() > 200  # the band
    assert (card == style.hud_rgb).all(axis=-1).any()  # the text
    assert not (card == style.fill_rgb).all(axis=-1).any()  # no overlay
    assert no_signal_image(None, style).shape == (360, 640, 3)


def test_run_flashes_the_border_when_a_polyp_first_appears(
    tmp_path, tiny_spec, monkeypatch
):
    hw = (48, 64)
    empty = np.full((*hw, 3), (40, 20, 10), np.uint8)
    images = [empty] * 10 + [disc_image(hw, (24, 32), 10)] * 10
    clip = write_video(tmp_path / "clip.mp4", images)
    rings = []
    monkeypatch.setattr("streamseg.alerts.terminal_bell", lambda: rings.append(1))
    config = StreamConfig(
        source=SourceSettings(uri=str(clip)),
        model=ModelSettings(device="cpu"),
        alerts=AlertSettings(flash=True, sound="bell", flash_s=0.18, border_px=2),
    )
    config = dataclasses.replace(
        config, smoothing=dataclasses.replace(config.smoothing, enabled=False)
    )
    frames = FrameList()
    run(config, segmenter=RedDiscSegmenter(tiny_spec), sinks=[frames])
    border = [bool((image[-2:, :] == (255, 40, 40)).all()) for image in frames.images]
    # The polyp appears at frame 10 (0.40 s) and is shown (tracking's minimum
    # on-time, 0.04 s) from frame 11; the border stays 0.18 s: frames 11-15.
    assert border == [11 <= i < 16 for i in range(20)]
    assert rings == [1]


def _polyp_clip(path, hw=(48, 64), empty_frames=10, polyp_frames=10):
    empty = np.full((*hw, 3), (40, 20, 10), np.uint8)
    disc = disc_image(hw, (hw[0] / 2, hw[1] / 2), min(hw) / 5)
    return write_video(path, [empty] * empty_frames + [disc] * polyp_frames)


def test_the_flash_border_never_covers_the_hud(tmp_path, tiny_spec):
    clip = _polyp_clip(tmp_path / "clip.mp4", hw=(240, 320))
    alerts = AlertSettings(flash=True, flash_s=0.18)  # border_px 12: frames 11-15
    config = StreamConfig(
        source=SourceSettings(uri=str(clip)),
        model=ModelSettings(device="cpu"),
        alerts=alerts,
    )
    config = dataclasses.replace(
        config, smoothing=dataclasses.replace(config.smoothing, enabled=False)
    )
    frames = FrameList()
    run(config, segmenter=RedDiscSegmenter(tiny_spec), sinks=[frames])
    band = alerts.border_px
    style = OverlayStyle()

    def indicator_px(image):  # the "POLYP" box of the HUD, in the top-left corner
        corner = image[:80, :160]
        return int(np.all(corner == style.alert_rgb, axis=-1).sum())

    flashed, steady = frames.images[11:16], frames.images[16:]
    assert all((image[:band] == alerts.border_rgb).all() for image in flashed)
    assert not any((image[:band] == alerts.border_rgb).all() for image in steady)
    assert indicator_px(steady[0]) > 100
    assert [indicator_px(image) for image in flashed] == [indicator_px(steady[0])] * 5
    for image in frames.images:  # the figures' text stays inside the border
        text = np.argwhere(np.all(image[:80, :200] == style.hud_rgb, axis=-1))
        assert len(text) and text.min() >= band


def test_the_bell_rings_on_a_file_run_while_the_progress_bar_shows(
    tmp_path, tiny_spec, monkeypatch
):
    # The progress display redirects stderr and drops control characters; the
    # bell must reach the terminal anyway (here a pseudo-terminal).
    clip = _polyp_clip(tmp_path / "clip.mp4")
    use_red_disc_segmenter(monkeypatch, tiny_spec)
    controller, terminal = pty.openpty()
    written = bytearray()

    def drain():
        with contextlib.suppress(OSError):
            while chunk := os.read(controller, 4096):
                written.extend(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    stderr = open(terminal, "w", buffering=1, encoding="utf-8")
    monkeypatch.setattr(sys, "stderr", stderr)
    try:
        code = main(
            [
                *("run", str(clip), "--device", "cpu"),
                *("--set", "alerts.sound=bell", "--set", "smoothing.enabled=false"),
            ]
        )
    finally:
        stderr.close()
        reader.join(timeout=5.0)
        os.close(controller)
    assert code == 0, written.decode(errors="replace")
    assert b"/20" in written, "the progress bar was shown"
    assert written.count(b"\a") == 1, written.decode(errors="replace")
