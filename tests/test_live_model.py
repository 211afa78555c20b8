"""The live model choice: the bundled default unless its network is too slow here."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import pytest
import torch
from stream_media import moving_disc, write_video

from streamseg import app, live_model
from streamseg.app import StreamConfig, run
from streamseg.model import file_sha256, resolve_model_path
from streamseg.segmenter import ModelSettings, Segmenter
from streamseg.sinks import FrameList, OutputSettings
from streamseg.sources import SourceSettings

CPU = torch.device("cpu")


def test_the_budget_is_a_share_of_the_source_frame_interval_up_to_30_fps():
    assert live_model.budget_ms(25.0) == pytest.approx(0.6 * 40.0)
    assert live_model.budget_ms(None) == live_model.budget_ms(25.0)  # undeclared
    assert live_model.budget_ms(0.0) == live_model.budget_ms(25.0)
    assert live_model.budget_ms(15.0) == pytest.approx(0.6 * 1000.0 / 15.0)
    assert live_model.budget_ms(60.0) == live_model.budget_ms(30.0) == pytest.approx(20)


@pytest.mark.parametrize(
    ("change", "device", "expected"),
    [
        ({}, CPU, True),
        ({"live_fallback": False}, CPU, False),
        ({"path": Path("bundled:default")}, CPU, False),  # asked for by name
        ({"path": Path("model.safetensors")}, CPU, False),
        ({"input_hw": (256, 256)}, CPU, False),
        ({}, torch.device("cuda"), False),
    ],
)
def test_only_a_model_left_to_the_tool_on_the_cpu_may_fall_back(
    change, device, expected
):
    settings = dataclasses.replace(ModelSettings(), **change)
    assert live_model.applies(settings, device) is expected


def _fake_choice(times_ms, source_fps=25.0):
    """choose() with fake segmenters: each candidate's settings, timed as given."""
    built = []

    def build(settings):
        built.append(settings)
        return settings  # stands in for the segmenter

    def measure(segmenter):
        return times_ms[len(built) - 1]

    chosen = live_model.choose(
        ModelSettings(), source_fps=source_fps, build=build, measure=measure
    )
    return chosen, built


def test_the_default_runs_where_its_network_keeps_up():
    chosen, built = _fake_choice([24.0, 1.0, 1.0])
    assert chosen.settings == ModelSettings() and chosen.segmenter is built[0]
    assert not chosen.fell_back and len(built) == 1
    assert chosen.timed_ms == (("bundled:default", 24.0),)
    assert "bundled:default 24 ms" in chosen.describe()
    assert "keeps the default" not in chosen.describe()


def test_a_slow_default_falls_back_to_the_fast_model_at_its_own_input():
    chosen, built = _fake_choice([56.0, 23.0, 1.0])
    assert chosen.settings.path == Path("bundled:fast")
    assert chosen.settings.input_hw is None and chosen.segmenter is built[1]
    assert chosen.fell_back and len(built) == 2
    line = chosen.describe()
    assert "bundled:default 56 ms, bundled:fast 23 ms" in line
    assert "at most 24 ms keeps up -> bundled:fast" in line
    assert "--model bundled:default keeps the default" in line


def test_then_to_the_fast_model_at_256_and_that_runs_even_if_too_slow():
    chosen, _ = _fake_choice([56.0, 33.0, 21.0])
    assert chosen.settings.path == Path("bundled:fast")
    assert chosen.settings.input_hw == (256, 256)
    assert chosen.timed_ms[-1] == ("bundled:fast at 256x256", 21.0)
    chosen, built = _fake_choice([56.0, 33.0, 30.0])
    assert chosen.settings.input_hw == (256, 256) and len(built) == 3
    assert "none keeps up" in chosen.describe()


def test_a_faster_source_asks_more_of_the_network():
    chosen, _ = _fake_choice([24.0, 1.0, 1.0], source_fps=30.0)
    assert chosen.fell_back  # 24 ms > 0.6 x 33.3 ms
    chosen, _ = _fake_choice([24.0, 1.0, 1.0], source_fps=15.0)
    assert not chosen.fell_back


def test_a_build_without_the_fast_model_keeps_the_default(monkeypatch):
    def missing(value):
        raise live_model.ModelFileError(f"{value}: no such bundled model")

    monkeypatch.setattr(live_model, "resolve_model_path", missing)
    chosen, built = _fake_choice([56.0])
    assert chosen.settings == ModelSettings() and len(built) == 1


def test_the_network_is_timed_at_batch_1_after_untimed_calls(model_file):
    segmenter = Segmenter.from_file(model_file, CPU)
    shapes = []
    probabilities = segmenter.probabilities

    def counted(images, **kwargs):
        shapes.append(tuple(images.shape))
        return probabilities(images, **kwargs)

    segmenter.probabilities = counted
    ms = live_model.network_ms(segmenter)
    assert 0 < ms < 10_000
    calls = live_model.WARM_CALLS + live_model.TIMED_CALLS
    assert shapes == [(1, 3, *segmenter.spec.input_hw)] * calls


def _live_run(tmp_path, monkeypatch, times_ms, *, path=None):
    """A live clip with the model left to the tool; the network times faked."""
    times = iter(times_ms)
    timed = []

    def fake(segmenter):
        timed.append(segmenter.spec.input_hw)
        return next(times)

    monkeypatch.setattr(live_model, "network_ms", fake)
    panel = []
    live_status = app._live_status

    def watched(*args, **kwargs):
        panel.append(live_status(*args, **kwargs))
        return panel[-1]

    monkeypatch.setattr(app, "_live_status", watched)
    clip = write_video(
        tmp_path / "live.mp4", [f.pixels for f in moving_disc(12, fps=25.0)], fps=25.0
    )
    tracks = tmp_path / "tracks.json"
    config = StreamConfig(
        source=SourceSettings(uri=str(clip), realtime=True),
        model=ModelSettings(path=path, device="cpu"),
        output=OutputSettings(tracks=tracks),
    )
    stats = run(config, sinks=[FrameList()])
    assert stats.frames_out > 0
    model = json.loads(tracks.read_text())["model"]
    (status,) = panel
    assert stats.model == status()["model"]  # the run's statistics name it too
    return {**model, "panel": status()["model"]}, timed


def test_a_live_run_on_a_slow_cpu_runs_the_fast_model_and_says_so(
    tmp_path, monkeypatch, caplog
):
    with caplog.at_level(logging.INFO, logger="streamseg.app"):
        model, timed = _live_run(tmp_path, monkeypatch, [56.0, 23.0])
    assert timed == [(320, 320), (320, 320)]
    assert model["sha256"] == file_sha256(resolve_model_path("bundled:fast"))
    assert model["input_hw"] == [320, 320]
    assert model["panel"] == "bundled:fast, 320x320"  # the browser view's status
    (line,) = [r.getMessage() for r in caplog.records if "network time" in r.message]
    assert "-> bundled:fast (its accuracy" in line
    assert [r.levelname for r in caplog.records if r.getMessage() == line] == [
        "WARNING"
    ]


def test_a_live_run_falls_back_to_256_where_the_fast_model_is_slow_too(
    tmp_path, monkeypatch
):
    model, timed = _live_run(tmp_path, monkeypatch, [56.0, 33.0, 21.0])
    assert timed == [(320, 320), (320, 320), (256, 256)]
    assert model["sha256"] == file_sha256(resolve_model_path("bundled:fast"))
    assert model["input_hw"] == [256, 256]
    assert model["panel"] == "bundled:fast, 256x256"


def test_a_live_run_keeps_the_default_when_it_keeps_up_or_is_named(
    tmp_path, monkeypatch
):
    default_sha = file_sha256(resolve_model_path("bundled:default"))
    model, timed = _live_run(tmp_path, monkeypatch, [20.0])
    assert model["sha256"] == default_sha and timed == [(320, 320)]
    assert model["panel"] == "bundled:default, 320x320"
    model, timed = _live_run(
        tmp_path, monkeypatch, [], path=Path("bundled:default")
    )  # never timed
    assert model["sha256"] == default_sha and timed == []
    assert model["panel"] == "bundled:default, 320x320"


def test_the_status_panel_names_a_model_file_by_its_file_name(model_file):
    segmenter = Segmenter.from_file(model_file, CPU)
    height, width = segmenter.spec.input_hw
    label = app._model_label(ModelSettings(path=model_file), segmenter)
    assert label == f"{model_file.name}, {width}x{height}"
