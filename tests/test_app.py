"""app.run end to end with a tiny model: order, outputs, batching, drops, interrupts."""

from __future__ import annotations

import dataclasses
import itertools
import json
import threading
import time

import numpy as np
import pytest
import torch
from conftest import CLIP_FRAMES
from stream_media import (
    CVC_FRAMES,
    decode_video,
    moving_disc,
    write_video,
)

from streamseg.app import StreamConfig, run
from streamseg.device import Precision
from streamseg.findings import Findings
from streamseg.frames import Frame
from streamseg.segmenter import ModelSettings, Segmenter
from streamseg.sinks import FrameList, OutputSettings
from streamseg.smoothing import SmoothingSettings
from streamseg.sources import Source, SourceError, SourceSettings, read_video


def _config(source, model_file, **sections):
    config = StreamConfig(
        source=SourceSettings(uri=str(source)),
        model=ModelSettings(
            path=model_file,
            device="cpu",
            batch_size=4,
            precision="fp32",  # compared with fp32 segmenters below
            channels_last=False,
        ),
    )
    return dataclasses.replace(config, **sections)


def test_file_run_writes_every_frame_in_order_to_every_output(
    clip, model_file, tmp_path
):
    output = OutputSettings(
        video=tmp_path / "out.mp4",
        events=tmp_path / "out.jsonl",
        masks=tmp_path / "masks",
    )
    frames = FrameList()
    stats = run(_config(clip, model_file, output=output), sinks=[frames])

    assert [p.frame.index for p in frames.predictions] == list(range(CLIP_FRAMES))
    assert all(image.shape == (48, 64, 3) for image in frames.images)
    assert (stats.frames_in, stats.frames_out, stats.frames_dropped) == (
        CLIP_FRAMES,
        CLIP_FRAMES,
        0,
    )
    assert stats.stopped == "end of source" and not stats.live
    names = [stage.name for stage in stats.stages]
    for stage in (
        "decode wait",
        "inference",
        "smoothing",
        "overlay",
        "encode enqueue",
        "events",
        "masks",
    ):
        assert stage in names
    assert set(stats.latency_ms) == {50, 95, 99} and stats.latency_ms[50] > 0

    images, times = decode_video(tmp_path / "out.mp4")
    assert len(images) == CLIP_FRAMES
    assert times == pytest.approx([i / 25 for i in range(CLIP_FRAMES)], abs=1e-3)
    events = [
        json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()
    ]
    assert [e["index"] for e in events] == list(range(CLIP_FRAMES))
    assert len(list((tmp_path / "masks").glob("*.png"))) == CLIP_FRAMES
    assert frames.closed


def test_pipeline_probabilities_equal_the_segmenter_on_the_decoded_frames(
    clip, model_file
):
    # Batching and the threads add nothing: each frame's probabilities are
    # what the segmenter computes for that frame alone.
    frames = FrameList()
    run(
        _config(clip, model_file, smoothing=SmoothingSettings(enabled=False)),
        sinks=[frames],
    )
    segmenter = Segmenter.from_file(model_file, torch.device("cpu"), Precision(None))
    for prediction, frame in zip(
        frames.predictions, read_video(str(clip)), strict=True
    ):
        expected = segmenter(frame).probabilities
        assert torch.allclose(prediction.probabilities, expected, atol=1e-5)


def test_real_endoscopy_frames_from_a_folder(model_file):
    frames = FrameList()
    stats = run(_config(CVC_FRAMES, model_file), sinks=[frames])
    assert stats.frames_out == 3
    assert [p.frame.hw for p in frames.predictions] == [(144, 192)] * 3
    assert all(
        0 <= float(p.probabilities.min()) and float(p.probabilities.max()) <= 1
        for p in frames.predictions
    )


def test_max_frames_stops_early(clip, model_file):
    config = _config(clip, model_file)
    config = dataclasses.replace(
        config, source=dataclasses.replace(config.source, max_frames=3)
    )
    frames = FrameList()
    stats = run(config, sinks=[frames])
    assert stats.frames_out == 3 and stats.stopped == "max frames"
    assert [p.frame.index for p in frames.predictions] == [0, 1, 2]


class _SlowSink(FrameList):
    name = "slow"

    def write(self, prediction, image):
        super().write(prediction, image)
        time.sleep(0.06)


def test_simulated_live_source_drops_frames_but_never_reorders_them(
    tmp_path, model_file
):
    path = write_video(
        tmp_path / "fast.mp4", [f.pixels for f in moving_disc(30, fps=100.0)], fps=100.0
    )
    config = _config(path, model_file)
    config = dataclasses.replace(
        config, source=dataclasses.replace(config.source, realtime=True)
    )
    sink = _SlowSink()
    stats = run(config, sinks=[sink])
    indices = [p.frame.index for p in sink.predictions]
    assert stats.live
    assert all(b > a for a, b in itertools.pairwise(indices))
    assert indices[-1] == 29
    # Every frame taken from the source reached the sinks; the rest were dropped
    # at the source queue, and the statistics say so.
    assert stats.frames_in == stats.frames_out == len(indices)
    assert stats.frames_dropped == len(set(range(30)) - set(indices)) > 0


def test_a_run_of_per_frame_results_only_draws_no_overlay(
    clip, model_file, tmp_path, monkeypatch
):
    import streamseg.app as app

    # The reference: the same outputs beside a recording, which needs the overlay.
    both = OutputSettings(
        video=tmp_path / "out.mp4",
        events=tmp_path / "with_video.jsonl",
        masks=tmp_path / "masks_with_video",
    )
    stats = run(_config(clip, model_file, output=both))
    assert "overlay" in {stage.name for stage in stats.stages}

    def no_drawing(*args, **kwargs):
        raise AssertionError("nothing of this run shows or records the overlay")

    monkeypatch.setattr(app, "render", no_drawing)
    alerts = app.AlertSettings(flash=True)  # the alert state still follows frames
    results = OutputSettings(events=tmp_path / "only.jsonl", masks=tmp_path / "masks")
    seen = []
    stats = run(
        _config(clip, model_file, output=results, alerts=alerts),
        on_progress=lambda done, total, figures: seen.append(figures.frames_done),
    )
    assert stats.frames_out == CLIP_FRAMES
    assert "overlay" not in {stage.name for stage in stats.stages}
    # The same per-frame results as with the recording; the progress figures move.
    assert (tmp_path / "only.jsonl").read_text() == (
        tmp_path / "with_video.jsonl"
    ).read_text()
    masks = sorted(path.name for path in (tmp_path / "masks").iterdir())
    assert len(masks) == CLIP_FRAMES
    for name in masks:
        assert (tmp_path / "masks" / name).read_bytes() == (
            tmp_path / "masks_with_video" / name
        ).read_bytes()
    assert seen == list(range(1, CLIP_FRAMES + 1))


def test_a_sink_that_does_not_say_whether_it_wants_the_image_gets_it(
    clip, model_file, tmp_path
):
    images = []

    class _Plain:  # no wants_image attribute: counts as wanting the image
        name = "plain"

        def write(self, findings, image):
            images.append(image)

        def close(self):
            pass

    results = OutputSettings(events=tmp_path / "events.jsonl")
    run(_config(clip, model_file, output=results), sinks=[_Plain()])
    assert len(images) == CLIP_FRAMES
    assert all(image.shape == (48, 64, 3) for image in images)


class _FailingSink(FrameList):
    name = "failing"

    def __init__(self, fail_at, error):
        super().__init__()
        self.fail_at, self.error = fail_at, error

    def write(self, prediction, image):
        if prediction.frame.index == self.fail_at:
            raise self.error
        super().write(prediction, image)


def test_a_failure_mid_run_still_leaves_a_playable_video(clip, model_file, tmp_path):
    config = _config(
        clip, model_file, output=OutputSettings(video=tmp_path / "out.mp4")
    )
    with pytest.raises(RuntimeError, match="sink broke"):
        run(config, sinks=[_FailingSink(4, RuntimeError("sink broke"))])
    images, _ = decode_video(tmp_path / "out.mp4")
    assert len(images) == 5  # frames 0-4 were encoded before the failing sink ran on 4


def test_an_interrupt_mid_run_finalizes_outputs_and_is_reported(
    clip, model_file, tmp_path
):
    config = _config(
        clip,
        model_file,
        output=OutputSettings(video=tmp_path / "out.mp4", events=tmp_path / "e.jsonl"),
    )
    stats = run(config, sinks=[_FailingSink(4, KeyboardInterrupt())])
    assert stats.stopped == "interrupted" and stats.frames_out == 4
    images, _ = decode_video(tmp_path / "out.mp4")
    assert len(images) == 5
    assert len((tmp_path / "e.jsonl").read_text().splitlines()) == 5
    assert np.all(np.isfinite([stage.mean_ms for stage in stats.stages]))


def test_a_live_device_that_stops_delivering_fails_clearly_after_writing_its_frames(
    clip, model_file, tmp_path
):
    # OpenCV opens the clip like a camera; after its last frame it delivers nothing.
    config = _config(
        clip, model_file, output=OutputSettings(video=tmp_path / "out.mp4")
    )
    source = dataclasses.replace(config.source, kind="device", stall_timeout_s=0.3)
    sink = FrameList()
    with pytest.raises(SourceError, match=r"no frame for 0\.3 s"):
        run(dataclasses.replace(config, source=source), sinks=[sink])
    indices = [p.frame.index for p in sink.predictions]
    last = CLIP_FRAMES - 1
    assert indices and indices == sorted(set(indices)) and indices[-1] == last
    assert len(decode_video(tmp_path / "out.mp4")[0]) == len(indices)


def test_a_hung_live_source_raises_after_the_stall_timeout(
    clip, model_file, monkeypatch
):
    release = threading.Event()

    def hung():
        yield from moving_disc(2)
        release.wait(10.0)  # a driver call that never returns

    fake = Source("fake camera", "device", True, None, None, hung)
    monkeypatch.setattr("streamseg.app.open_source", lambda settings, **_: fake)
    config = _config(clip, model_file)
    config = dataclasses.replace(
        config, source=dataclasses.replace(config.source, stall_timeout_s=0.3)
    )
    start = time.monotonic()
    try:
        with pytest.raises(SourceError, match=r"fake camera: no frame for 0\.3 s"):
            run(config)
        assert time.monotonic() - start < 5.0
    finally:
        release.set()


def test_on_the_cpu_inference_runs_one_batch_ahead_on_its_own_thread(
    clip, model_file, tmp_path, monkeypatch
):
    threads_seen = []
    segment = Segmenter.segment

    def recording(self, frames, **kwargs):
        threads_seen.append(threading.current_thread().name)
        return segment(self, frames, **kwargs)

    monkeypatch.setattr(Segmenter, "segment", recording)
    drawn = []

    class _Recording(FrameList):
        name = "recording"

        def write(self, findings, image):
            drawn.append(findings.frame.index)
            super().write(findings, image)

    config = _config(clip, model_file)  # batch 4: 6 frames make two batches
    stats = run(config, sinks=[_Recording()])
    assert threads_seen == ["streamseg-infer_0"] * 2
    assert drawn == list(range(CLIP_FRAMES))  # in order, none lost
    assert {stage.name for stage in stats.stages} >= {"inference", "prediction wait"}
    # In the loop (as on a GPU): the same frames, on the calling thread.
    threads_seen.clear()
    drawn.clear()
    run(config, sinks=[_Recording()], infer_ahead=False)
    assert threads_seen == [threading.current_thread().name] * 2
    assert drawn == list(range(CLIP_FRAMES))
    # An interrupt mid-run stops the worker and the source with the run.
    stats = run(config, sinks=[_FailingSink(1, KeyboardInterrupt())])
    assert stats.stopped == "interrupted"
    alive = {thread.name for thread in threading.enumerate()}
    assert not alive & {"streamseg-inference", "streamseg-source", "streamseg-infer_0"}


def test_with_streams_that_many_batches_run_at_once_and_come_back_in_order(
    clip, model_file, monkeypatch
):
    running, most = [0], [0]
    lock = threading.Lock()
    segment = Segmenter.segment

    def overlapping(self, frames, **kwargs):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            # The first batch is slow: the second finishes first.
            time.sleep(0.3 if frames[0].index == 0 else 0.0)
            return segment(self, frames, **kwargs)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(Segmenter, "segment", overlapping)
    config = _config(clip, model_file)
    config = dataclasses.replace(
        config, model=dataclasses.replace(config.model, batch_size=2)
    )
    segmenter = Segmenter.from_settings(config.model)
    one_at_a_time = FrameList()
    run(config, segmenter=segmenter, sinks=[one_at_a_time])
    assert most[0] == 1
    segmenter.streams = 2  # as an OpenVINO segmenter with two streams has
    sink = FrameList()
    stats = run(config, segmenter=segmenter, sinks=[sink])
    assert most[0] == 2
    assert [f.frame.index for f in sink.findings] == list(range(CLIP_FRAMES))
    pairs = zip(sink.predictions, one_at_a_time.predictions, strict=True)
    for got, expected in pairs:
        assert torch.equal(got.probabilities, expected.probabilities)
    assert "inference (2 at once)" in {stage.name for stage in stats.stages}

    # A failure in one of the calls in flight ends the run with that error.
    def failing(self, frames, **kwargs):
        if frames[0].index >= 2:
            raise RuntimeError("inference failed")
        return segment(self, frames, **kwargs)

    monkeypatch.setattr(Segmenter, "segment", failing)
    with pytest.raises(RuntimeError, match="inference failed"):
        run(config, segmenter=segmenter, sinks=[FrameList()])
    alive = {thread.name for thread in threading.enumerate()}
    assert not any(name.startswith("streamseg-infer") for name in alive)


def _held_findings(segmenter, items, *, max_age_s, now_s):
    """Run the ``every_frame`` display on ``items`` (a list of _Decoded)."""
    from streamseg.app import _HeldFindings
    from streamseg.stats import StatsRecorder

    stats = StatsRecorder("test", live=True)
    held = _HeldFindings(
        iter([[item] for item in items]),
        segmenter,
        stats,
        Findings.of,
        max_outline_age_s=max_age_s,
        clock=lambda: now_s,
    )
    try:
        return [found[0] for _, found in held]
    finally:
        held.close()


def test_every_frame_display_draws_each_frame_with_the_newest_finished_outline(
    model_file, monkeypatch
):
    from streamseg.app import _Decoded

    segmenter = Segmenter.from_settings(
        ModelSettings(path=model_file, device="cpu", precision="fp32")
    )
    segment = Segmenter.segment
    calls = []

    def slow(self, frames, **kwargs):
        calls.append(frames[0].index)
        time.sleep(0.15)
        return segment(self, frames, **kwargs)

    monkeypatch.setattr(Segmenter, "segment", slow)
    frames = moving_disc(6)  # all there at once: faster than the network
    items = [_Decoded(frame, 0.0) for frame in frames]
    shown = _held_findings(segmenter, items, max_age_s=10.0, now_s=0.0)
    # Every frame is drawn, in order; the first waits for its own outline,
    # the next ones get that outline while the network works on the newest.
    assert [f.frame.index for f in shown] == list(range(6))
    assert shown[0].segmented_frame.index == 0 and not shown[0].held
    assert calls[0] == 0 and len(calls) < 6
    assert any(f.held for f in shown)
    sources = [f.segmented_frame.index for f in shown]
    assert sources == sorted(sources)  # never an older outline after a newer one
    assert all(s <= f.frame.index for s, f in zip(sources, shown, strict=True))
    assert set(sources) <= set(calls)
    for findings in shown:  # the mask is the segmented frame's, as computed
        own = Findings.of(segmenter.segment([findings.segmented_frame])[0])
        assert np.array_equal(findings.mask, own.mask)
        assert findings.frame.pixels is frames[findings.frame.index].pixels

    # An outline older than max_outline_age_s is never drawn on a later frame:
    # each frame then waits for the network (here: its own outline).
    calls.clear()
    shown = _held_findings(segmenter, items, max_age_s=0.01, now_s=100.0)
    assert [f.segmented_frame.index for f in shown] == list(range(6))
    assert not any(f.held for f in shown)


def test_every_frame_display_never_draws_an_outline_on_a_frame_of_another_size(
    model_file,
):
    from streamseg.app import _Decoded

    segmenter = Segmenter.from_settings(
        ModelSettings(path=model_file, device="cpu", precision="fp32")
    )
    small = moving_disc(2)
    large = moving_disc(2, hw=(64, 96))
    items = [_Decoded(f, 0.0) for f in small] + [
        _Decoded(dataclasses.replace(f, index=f.index + 2), 0.0) for f in large
    ]
    shown = _held_findings(segmenter, items, max_age_s=10.0, now_s=0.0)
    for findings in shown:
        assert findings.segmented_frame.hw == findings.frame.hw
    assert shown[2].segmented_frame.index == 2  # the new size waits for its own


def _slow_network_on_a_fast_clip(tmp_path, monkeypatch):
    """A 30-frame 100 fps clip and a network 8 frame intervals slow: a live run of
    it segments only some of its frames."""
    segment = Segmenter.segment

    def slow(self, frames, **kwargs):
        time.sleep(0.08)
        return segment(self, frames, **kwargs)

    monkeypatch.setattr(Segmenter, "segment", slow)
    return write_video(
        tmp_path / "fast.mp4", [f.pixels for f in moving_disc(30, fps=100.0)], fps=100.0
    )


def _live_config(path, model_file, display, **changes):
    """The clip played as a live source with the given display."""
    config = _config(path, model_file)
    source = dataclasses.replace(config.source, realtime=True, live_display=display)
    return dataclasses.replace(config, source=source, **changes)


def test_every_frame_live_run_shows_more_frames_and_logs_the_outline_age(
    tmp_path, model_file, monkeypatch
):
    path = _slow_network_on_a_fast_clip(tmp_path, monkeypatch)
    results = {}
    for display in ("segmented", "every_frame"):
        config = _live_config(
            path,
            model_file,
            display,
            output=OutputSettings(events=tmp_path / f"{display}.jsonl"),
        )
        sink = FrameList()
        stats = run(config, sinks=[sink])
        lines = (tmp_path / f"{display}.jsonl").read_text().splitlines()
        results[display] = stats, sink, [json.loads(line) for line in lines]
    stats, sink, events = results["segmented"]
    assert stats.frames_held == 0 and not stats.outline_ms
    assert not any("segmented_index" in event for event in events)
    stats, sink, events = results["every_frame"]
    assert stats.frames_out > results["segmented"][0].frames_out
    assert stats.frames_held == sum(f.held for f in sink.findings) > 0
    assert set(stats.outline_ms) == {50, 95, 99}
    assert stats.outline_ms[50] >= stats.latency_ms[50]
    for event, findings in zip(events, sink.findings, strict=True):
        assert event["index"] == findings.frame.index
        if findings.held:
            assert event["segmented_index"] == findings.segmented_frame.index
        else:
            assert "segmented_index" not in event


def test_a_live_run_that_drops_frames_says_once_what_to_change(
    tmp_path, model_file, monkeypatch, caplog
):
    import functools
    import logging

    from streamseg import app, stats

    path = _slow_network_on_a_fast_clip(tmp_path, monkeypatch)
    monkeypatch.setattr(
        app, "KeepUpCheck", functools.partial(stats.KeepUpCheck, after_s=0.1)
    )
    warnings, counts = {}, {}
    for display in ("segmented", "every_frame"):
        config = _live_config(path, model_file, display)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="streamseg.app"):
            done = run(config, sinks=[FrameList()])
        warnings[display] = [r.getMessage() for r in caplog.records]
        counts[display] = done.frames_out, done.frames_dropped
    assert len(warnings["segmented"]) == 1, counts
    (line,) = warnings["segmented"]
    assert "of the source's frames dropped over" in line
    assert "--model bundled:fast" in line and "live_display=every_frame" in line
    assert not warnings["every_frame"]  # it shows every frame: nothing is dropped


def test_every_frame_display_never_holds_an_outline_longer_than_its_age_limit(
    model_file, monkeypatch
):
    from streamseg.app import _Decoded, _HeldFindings
    from streamseg.stats import StatsRecorder

    segmenter = Segmenter.from_settings(
        ModelSettings(path=model_file, device="cpu", precision="fp32")
    )
    segment = Segmenter.segment

    def slow(self, frames, **kwargs):
        time.sleep(0.03)
        return segment(self, frames, **kwargs)

    monkeypatch.setattr(Segmenter, "segment", slow)
    pixels = moving_disc(1)[0].pixels
    now_s = [0.0]  # the run's clock: the capture time of the newest frame

    def live(count):  # frames 10 ms apart, faster than the network
        for index in range(count):
            now_s[0] = index * 0.01
            yield [_Decoded(Frame(index, now_s[0], pixels), now_s[0])]

    held = _HeldFindings(
        live(30),
        segmenter,
        StatsRecorder("test", live=True),
        Findings.of,
        max_outline_age_s=0.05,
        clock=lambda: now_s[0],
    )
    try:
        shown = [found[0] for _, found in held]
    finally:
        held.close()
    assert [f.frame.index for f in shown] == list(range(30))
    assert shown[1].held and shown[1].segmented_frame.index == 0
    for findings in shown:
        age_s = findings.frame.timestamp_s - findings.segmented_frame.timestamp_s
        assert age_s <= (0.05 + 1e-9 if findings.held else 0.0)


def test_every_frame_display_refuses_a_compiled_or_captured_cuda_network():
    from streamseg.app import _check_every_frame
    from streamseg.config import ConfigError

    cuda = torch.device("cuda")
    for settings in (ModelSettings(compile=True), ModelSettings(cuda_graphs=True)):
        with pytest.raises(ConfigError, match="live_display=segmented"):
            _check_every_frame(settings, cuda)
        _check_every_frame(settings, torch.device("cpu"))  # CPU: worker threads ok
    _check_every_frame(ModelSettings(), cuda)


def test_the_keep_up_advice_suggests_the_fast_model_only_where_it_is_not_running():
    from streamseg.app import _keep_up_advice
    from streamseg.stats import FallingBehind

    behind = FallingBehind(0.47, 13.2, 25.0, 10.0)
    line = _keep_up_advice("camera 0", behind, ModelSettings())
    assert line.startswith(
        "camera 0: 47% of the source's frames dropped over 10 s "
        "(13.2 of 25.0 frames a second segmented); to keep up: --model bundled:fast"
    )
    line = _keep_up_advice("camera 0", behind, ModelSettings(path="bundled:fast"))
    assert "bundled:fast" not in line and "live_display=every_frame" in line
