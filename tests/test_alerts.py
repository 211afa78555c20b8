"""Alerts when a polyp first appears (cooldown, flash, bell); the NO SIGNAL card."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from live_helpers import RedDiscSegmenter
from stream_media import disc_image, write_video

from streamseg.alerts import Alerter, AlertSettings, should_alert
from streamseg.app import StreamConfig, run
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
    # The polyp appears at frame 10 (0.40 s); the border stays 0.18 s: frames 10-14.
    assert border == [10 <= i < 15 for i in range(20)]
    assert rings == [1]
