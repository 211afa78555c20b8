"""The benchmark harness: statistics, clips, variants, the three measurements, the CLI.

Timings are never asserted (they depend on the machine and its load); the
tests check what is measured, how it is counted and what is reported.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import threading
import time

import numpy as np
import pytest
import torch
from conftest import FIXTURES
from stream_media import decode_video, moving_disc, write_video

from streamseg.app import StreamConfig
from streamseg.cli import main
from streamseg.device import Precision, cpu_has_native_bf16
from streamseg.evaluation import bench, bench_inputs, bench_timing, bench_validate
from streamseg.evaluation.metrics import dice_score
from streamseg.frames import Frame
from streamseg.model import load_model
from streamseg.segmenter import ModelSettings, Segmenter
from streamseg.sources import probe_video
from streamseg.transforms import resize

CPU = torch.device("cpu")
FRAMES = 10


@pytest.fixture
def clip(tmp_path):
    return write_video(
        tmp_path / "clip.mp4", [f.pixels for f in moving_disc(FRAMES, hw=(64, 96))]
    )


@pytest.fixture
def config(model_file):
    # fp32 eager, as the harness's own checks below expect "config" to run; the
    # runtime default (bf16 + channels_last on CPUs with native bf16) is covered
    # in test_variants_set_every_fast_path_option.
    return StreamConfig(model=fp32_settings(path=model_file))


def fp32_settings(**fields):
    return ModelSettings(device="cpu", precision="fp32", channels_last=False, **fields)


# --- statistics ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        ([0.004, 0.001, 0.003, 0.002], (4, 2.5, 2.5, 4.0)),
        ([0.010], (1, 10.0, 10.0, 10.0)),
    ],
)
def test_latency_summary_in_milliseconds(seconds, expected):
    summary = bench_timing.LatencySummary.of(seconds)
    assert (summary.count, summary.mean_ms, summary.p50_ms, summary.max_ms) == (
        pytest.approx(expected)
    )
    assert summary.p50_ms <= summary.p95_ms <= summary.p99_ms <= summary.max_ms


def test_latency_summary_of_nothing_is_empty():
    summary = bench_timing.LatencySummary.of([])
    assert summary.count == 0 and math.isnan(summary.p99_ms)


@pytest.mark.parametrize(
    ("times_s", "skip", "batch_size", "expected"),
    [
        ([0.0, 1.0, 2.0, 3.0, 4.0], 0, 1, 1.0),
        ([0.0, 10.0, 11.0, 12.0, 13.0], 2, 1, 1.0),  # the slow frame 1 left out
        ([0.0, 10.0, 11.0], 4, 1, 2 / 11),  # too few frames to skip: all of them
        # Batches of 4 complete in bursts (one slow, then one per second): the
        # count starts at a batch boundary, whatever the skip inside a batch.
        ([10.0] * 4 + [11.0] * 4 + [12.0] * 4 + [13.0] * 4, 4, 4, 4.0),
        ([10.0] * 4 + [11.0] * 4 + [12.0] * 4 + [13.0] * 4, 5, 4, 4.0),
    ],
)
def test_steady_throughput_leaves_out_warm_up_frames(
    times_s, skip, batch_size, expected
):
    assert bench_timing.steady_throughput(times_s, skip, batch_size) == pytest.approx(
        expected
    )


def test_steady_throughput_needs_two_frames():
    assert math.isnan(bench_timing.steady_throughput([1.0], 0))


# --- parsing ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size_wh"),
    [("720p", (1280, 720)), ("1080p", (1920, 1080)), ("640x360", (640, 360))],
)
def test_resolutions(text, size_wh):
    assert bench_inputs.parse_resolution(text) == size_wh


@pytest.mark.parametrize("text", ["4k", "1280*720", "8x8", ""])
def test_bad_resolutions_name_the_accepted_forms(text):
    with pytest.raises(bench_inputs.BenchError, match="720p, 1080p or WIDTHxHEIGHT"):
        bench_inputs.parse_resolution(text)


def test_random_model_specs(tmp_path):
    spec = bench_inputs.parse_random_spec("random:UnetPlusPlus/efficientnet-b2@320")
    assert (spec.architecture, spec.encoder_name, spec.input_hw) == (
        "UnetPlusPlus",
        "efficientnet-b2",
        (320, 320),
    )
    assert bench_inputs.parse_random_spec("random:Unet/resnet18@64x96").input_hw == (
        64,
        96,
    )
    for bad in ("random:Unet@64", "random:Unet/resnet18@65", "unet.safetensors"):
        with pytest.raises(bench_inputs.BenchError):
            bench_inputs.parse_random_spec(bad)
    info = bench_inputs.prepare_model("random:Unet/resnet18@64", tmp_path)
    assert info.random_weights and load_model(info.path)[1].input_hw == (64, 64)


def test_parse_names():
    assert bench_inputs.parse_names("fp32, bf16-cl,") == ("fp32", "bf16-cl")
    assert (
        bench_inputs.parse_names("") is None and bench_inputs.parse_names(None) is None
    )


# --- variants -----------------------------------------------------------------


def test_variants_set_every_fast_path_option():
    base = ModelSettings()
    cuda = torch.device("cuda")  # only its type is read: no GPU needed
    keys = {
        bench_inputs.settings_key(v.apply(base), cuda)
        for v in bench_inputs.VARIANTS.values()
    }
    assert len(keys) == len(bench_inputs.VARIANTS)  # no two variants run the same way
    assert bench_inputs.resolve_variant("config", base) is base
    # "config" on a CPU (precision auto, channels_last) is bf16-cl where the CPU
    # has native bf16, else fp32 (channels_last).
    # With OpenVINO and the bundled model's INT8 artefact, backend auto is ov-int8.
    same_as = "bf16-cl" if cpu_has_native_bf16() else "fp32-cl"
    if bench_inputs.resolve_backend(base, CPU).backend == "openvino":
        same_as = "ov-int8"
    assert bench_inputs.settings_key(base, CPU) == bench_inputs.settings_key(
        bench_inputs.resolve_variant(same_as, base), CPU
    )
    with pytest.raises(bench_inputs.BenchError, match="bf16-cl"):
        bench_inputs.resolve_variant("bf17", base)


def test_cuda_variants_are_refused_on_the_cpu(config, tmp_path):
    settings = bench.BenchSettings(
        model=str(config.model.path), variants=("fp16-cl-graphs",), work_dir=tmp_path
    )
    with pytest.raises(bench_inputs.BenchError, match="needs CUDA"):
        bench.run_benchmark(settings, config)


def test_an_unknown_live_display_is_refused_with_the_valid_ones(config, tmp_path):
    with pytest.raises(ValueError, match="segmented, every_frame"):
        bench.BenchSettings(
            model=str(config.model.path),
            live_displays=("segmented", "everyframe"),
            work_dir=tmp_path,
        )


# --- clips --------------------------------------------------------------------


@pytest.mark.parametrize("source", [bench_inputs.DEMO_CLIP, None])
def test_make_clip_writes_the_asked_size_and_length_once(tmp_path, source):
    path = bench_inputs.make_clip((160, 90), 6, tmp_path, source=source)
    assert probe_video(str(path))[1] == 6
    images, times = decode_video(path)
    assert len(images) == 6 and images[0].shape == (90, 160, 3)
    assert times == pytest.approx(
        [i / bench_inputs.CLIP_FPS for i in range(6)], abs=1e-3
    )
    modified = path.stat().st_mtime_ns
    assert bench_inputs.make_clip((160, 90), 6, tmp_path, source=source) == path
    assert path.stat().st_mtime_ns == modified  # reused, not rewritten


def test_pillarbox_centres_the_picture_on_black():
    image = np.full((30, 40, 3), 200, np.uint8)
    boxed = bench_inputs.pillarbox(image, (80, 30))
    assert boxed.shape == (30, 80, 3)
    assert (boxed[:, :20] == 0).all() and (boxed[:, 60:] == 0).all()
    assert (boxed[:, 20:60] == 200).all()


# --- 1. model only ------------------------------------------------------------


def test_time_model_times_only_the_measured_calls(model_file):
    segmenter = Segmenter.from_file(model_file, CPU)
    calls = []
    original = segmenter.probabilities

    def counting(images, *, tta):
        # Laid out as uploaded frames are (NHWC memory), and an inference tensor.
        assert images.is_contiguous(memory_format=torch.channels_last)
        assert images.is_inference()
        assert tta == segmenter.tta  # model-only timing includes the TTA work
        calls.append(tuple(images.shape))
        return original(images, tta=tta)

    segmenter.probabilities = counting
    ticks = itertools.count(step=0.004)  # every reading of the clock: +4 ms

    cpu_ticks = itertools.count(step=0.006)  # 1.5x the wall clock: 1.5 cores busy

    result = bench_timing.time_model(
        segmenter,
        3,
        iterations=5,
        warmup=2,
        variant="fp32",
        clock=lambda: next(ticks),
        cpu_clock=lambda: next(cpu_ticks),
    )

    assert calls == [(3, 3, 64, 64)] * 7  # 2 warm-up + 5 timed, at the input size
    assert result.iterations == 5 and result.latency.count == 5
    assert result.latency.p50_ms == pytest.approx(4.0)
    assert result.throughput_fps == pytest.approx(3 / 0.004)
    assert (result.variant, result.runs, result.batch_size) == ("fp32", "fp32", 3)
    # Read before and after the timed calls: one CPU tick over 2 x 5 + 1 wall ticks.
    assert result.cpu.ms_per_frame == pytest.approx(6.0 / 15)
    assert result.cpu.cores_busy == pytest.approx(0.006 / (0.004 * 11))


def test_time_model_keeps_as_many_calls_in_flight_as_there_are_streams(model_file):
    segmenter = Segmenter.from_file(model_file, CPU)
    segmenter.streams = 2  # as an OpenVINO segmenter with two streams has
    running, most = [0], [0]
    lock = threading.Lock()
    original = segmenter.probabilities

    def overlapping(images, *, tta):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        return original(images, tta=tta)

    segmenter.probabilities = overlapping
    result = bench_timing.time_model(segmenter, 2, iterations=6, warmup=1)
    assert most[0] == 2 and result.latency.count == 6
    # Throughput over the wall time of all the calls: more than one call's worth.
    one_at_a_time_fps = 2 / (result.latency.p50_ms / 1000)
    assert result.throughput_fps > 1.2 * one_at_a_time_fps


def test_cpu_use_over_the_steady_span():
    probe = bench_timing.LatencyProbe(live=False)
    probe.done_s = [10.0] * 4 + [11.0] * 4 + [12.0] * 4
    probe.cpu_s = [5.0] * 4 + [7.0] * 4 + [8.6] * 4  # 3.6 s from frame 3 to 11
    cpu = bench_timing.steady_cpu(probe, 4, 4)
    assert cpu.ms_per_frame == pytest.approx(3600 / 8)
    assert cpu.cores_busy == pytest.approx(1.8)
    assert math.isnan(bench_timing.CpuUse.of(1.0, 0.0, 4).cores_busy)
    probe.done_s, probe.cpu_s = [1.0], [1.0]
    assert math.isnan(bench_timing.steady_cpu(probe, 0, 1).ms_per_frame)


# --- 2. pipeline and 3. naive loop --------------------------------------------


@pytest.mark.parametrize("live", [False, True])
def test_pipeline_run_counts_frames_stages_and_latency(clip, config, tmp_path, live):
    result = bench_timing.run_pipeline(
        clip,
        config,
        variant="config",
        live=live,
        max_frames=None,
        warmup_frames=2,
        folder=tmp_path,
    )
    assert result.mode == ("live" if live else "file")
    assert result.frames_in == result.frames_out and result.size_wh == (96, 64)
    assert result.frames_in + result.frames_dropped == FRAMES
    assert result.batch_size == (1 if live else config.model.batch_size)
    names = [stage.name for stage in result.stages]
    assert names[:2] == ["decode wait", "inference"] and "encode enqueue" in names
    assert "latency probe" not in names
    if live:  # every processed frame has its grab -> overlay latency
        assert result.latency.count == result.frames_out
        assert result.latency.max_ms >= result.latency.p99_ms > 0
        # Each frame with its own outline: the outline is as old as the frame.
        assert result.frames_held == 0
        assert result.outline.p99_ms == pytest.approx(result.latency.p99_ms, abs=0.5)
    else:
        assert result.frames_out == FRAMES and math.isnan(result.latency.max_ms)
    assert not list(tmp_path.glob("pipeline-*.mp4"))  # scratch output removed


def test_a_live_run_with_the_live_choice_names_the_model_that_ran(
    clip, config, tmp_path, monkeypatch
):
    from streamseg import live_model

    times = iter([56.0, 23.0])  # the default too slow, the fast model in time
    monkeypatch.setattr(live_model, "network_ms", lambda segmenter: next(times))
    runs = {}
    for live, choice in ((True, True), (True, False), (False, True)):
        runs[live, choice] = bench_timing.run_pipeline(
            clip,
            config,
            variant="config",
            live=live,
            max_frames=6,
            warmup_frames=2,
            folder=tmp_path,
            live_choice=choice,
        ).runs
    assert runs[True, True].endswith("; live choice: bundled:fast, 320x320")
    assert "live choice" not in runs[True, False] + runs[False, True]


def test_cli_bench_without_a_model_lets_live_rows_choose(model_file, monkeypatch):
    seen = []

    def stop(settings, config):
        seen.append(settings.live_choice)
        raise KeyboardInterrupt  # measure nothing: the settings are what counts

    monkeypatch.setattr(bench, "run_benchmark", stop)
    for model in ([], ["--model", str(model_file)], ["--model", "bundled:default"]):
        assert main(["bench", "--device", "cpu", *model]) == 130  # interrupted
    assert seen == [True, False, False]


def test_every_frame_live_run_reports_the_held_frames_and_the_outline_age(
    clip, config, tmp_path, monkeypatch
):
    segment = Segmenter.segment

    def slow(self, frames, **kwargs):
        time.sleep(0.1)  # slower than the clip's 25 fps
        return segment(self, frames, **kwargs)

    monkeypatch.setattr(Segmenter, "segment", slow)
    result = bench_timing.run_pipeline(
        clip,
        config,
        variant="config",
        live=True,
        max_frames=None,
        warmup_frames=2,
        folder=tmp_path,
        live_display="every_frame",
    )
    assert result.mode == "live, every frame"
    assert 0 < result.frames_held < result.frames_out
    assert result.outline.count == result.latency.count == result.frames_out
    # An outline is at least as old as the frame it is drawn on.
    assert result.outline.p50_ms >= result.latency.p50_ms
    assert result.outline.max_ms >= 100.0  # the network's 0.1 s at least


def test_naive_loop_times_every_stage_of_every_frame(clip, model_file, tmp_path):
    result = bench_timing.run_naive(
        clip,
        model_file,
        CPU,
        style=StreamConfig().overlay,
        crf=23,
        preset="ultrafast",
        max_frames=7,
        warmup_frames=2,
        folder=tmp_path,
    )
    assert result.frames == 7 and result.latency.count == 7
    assert [stage.name for stage in result.stages] == list(bench_timing.NAIVE_STAGES)
    assert all(stage.mean_ms > 0 for stage in result.stages)
    assert result.wall_s * 1000 >= sum(stage.mean_ms for stage in result.stages) * 7
    assert not list(tmp_path.glob("naive-*.mp4"))


# --- the whole run ------------------------------------------------------------


def test_a_results_only_run_writes_the_event_log_and_draws_nothing(
    clip, config, tmp_path, monkeypatch
):
    import streamseg.app as app

    def no_drawing(*args, **kwargs):
        raise AssertionError("a results-only run draws no overlay")

    monkeypatch.setattr(app, "render", no_drawing)

    def results_only(live):
        return bench_timing.run_pipeline(
            clip, config, variant="config", live=live, max_frames=None,
            warmup_frames=2, folder=tmp_path, results_only=True,
        )  # fmt: skip

    result = results_only(live=False)
    assert result.mode == "file, results only" and result.frames_out == FRAMES
    names = [stage.name for stage in result.stages]
    assert "events" in names
    assert "overlay" not in names and "encode enqueue" not in names
    assert not list(tmp_path.glob("pipeline-*"))  # scratch outputs removed
    with pytest.raises(ValueError, match="file run only"):
        results_only(live=True)


def test_the_model_only_drift_needs_both_timings():
    ratio = bench.Ratio("c", "config", 30.0, 40.0, None, 0.75, None)
    assert ratio.model_only_drift is None
    ratio = dataclasses.replace(
        ratio, model_only_fps_before=50.0, model_only_fps_after=30.0
    )
    assert ratio.model_only_drift == pytest.approx(-0.4)
    assert bench._model_only_cell(ratio) == "40.0 (50.0 / 30.0, -40 %)"


def test_run_benchmark_measures_side_by_side_and_reports_ratios(clip, config, tmp_path):
    settings = bench.BenchSettings(
        model=str(config.model.path),
        clips=(clip,),
        frames=8,
        variants=("config", "fp32", "bf16-cl"),
        iterations=2,
        warmup=1,
        warmup_frames=2,
        work_dir=tmp_path,
        results_only=True,
    )
    report = bench.run_benchmark(settings, config)

    # "config" is fp32 eager on a CPU: measured once, under its first name.
    assert [(r.variant, r.batch_size) for r in report.model_only] == [
        ("config", 1),
        ("config", 4),
        ("bf16-cl", 1),
        ("bf16-cl", 4),
    ]
    assert [(r.mode, r.frames_out) for r in report.pipeline] == [
        ("file", 8),
        ("file, results only", 8),
        ("live", report.pipeline[2].frames_out),
    ]
    assert [r.frames for r in report.naive] == [8]
    ratio, results_only = report.ratios
    assert (ratio.mode, results_only.mode) == ("file", "file, results only")
    assert results_only.model_only_fps == ratio.model_only_fps
    assert results_only.pipeline_vs_model_only == pytest.approx(
        report.pipeline[1].throughput_fps / ratio.model_only_fps
    )
    # The pipeline's variant is timed again after the pipelines, at the file
    # batch size only; the ratio uses the mean of both timings.
    (after,) = report.model_only_after
    assert (after.variant, after.batch_size) == ("config", 4)
    before = report.model_only[1]  # batch 4
    assert ratio.model_only_fps_before == before.throughput_fps
    assert ratio.model_only_fps_after == after.throughput_fps
    assert ratio.model_only_fps == pytest.approx(
        (before.throughput_fps + after.throughput_fps) / 2
    )
    assert ratio.model_only_drift == pytest.approx(
        after.throughput_fps / before.throughput_fps - 1
    )
    assert ratio.pipeline_vs_naive == pytest.approx(
        report.pipeline[0].throughput_fps / report.naive[0].throughput_fps
    )
    assert ratio.pipeline_vs_model_only == pytest.approx(
        ratio.pipeline_fps / ratio.model_only_fps
    )
    # Processor time is measured for every timed part, and compared.
    pipeline_cpu = report.pipeline[0].cpu
    assert pipeline_cpu.ms_per_frame > 0 and pipeline_cpu.cores_busy > 0
    assert ratio.network_cpu_share == pytest.approx(
        (before.cpu.ms_per_frame + after.cpu.ms_per_frame)
        / 2
        / pipeline_cpu.ms_per_frame
    )
    data = report.to_dict()
    text = json.dumps(data, allow_nan=False)  # NaN is written as null
    assert json.loads(text)["schema"] == bench.SCHEMA
    assert data["machine"]["load_average_start"] is not None
    assert set(data["method"]) >= {"clock", "model_only", "pipeline_live", "naive"}
    assert len(bench.report_tables(report)) == 4


# --- validation ---------------------------------------------------------------


def test_validation_compares_variants_with_fp32_on_labelled_images(model_file):
    root = FIXTURES / "kvasir"
    pairs = bench_validate.read_labelled_split(root, "train")
    base = fp32_settings()
    results = bench_validate.validate(model_file, base, ["config", "bf16-cl"], pairs)

    same, bf16 = results
    assert same.images == len(pairs) == 6
    assert same.mask_agreement_pct == 100.0 and same.dice_difference == 0.0
    assert same.max_probability_difference == 0.0
    assert 0.0 <= bf16.worst_image_agreement_pct <= bf16.mask_agreement_pct <= 100.0
    assert bf16.runs == "bf16, channels_last"

    # The fp32 Dice, recomputed here from first principles.
    segmenter = Segmenter.from_file(model_file, CPU, Precision(None))
    counts = np.zeros(3)
    for index, (_stem, image_path, mask_path) in enumerate(pairs):
        pixels, truth = bench_validate.read_pair(image_path, mask_path)
        prediction = segmenter(Frame(index, 0.0, pixels))
        probabilities = prediction.probabilities[None, None]
        mask = (resize(probabilities, pixels.shape[:2])[0, 0] >= 0.5).numpy()
        counts += [(mask & truth).sum(), (mask & ~truth).sum(), (~mask & truth).sum()]
    assert same.reference_dice == pytest.approx(dice_score(*counts))


def test_validation_names_a_missing_split(tmp_path):
    with pytest.raises(bench_inputs.BenchError, match="no split file"):
        bench_validate.read_labelled_split(tmp_path, "test")


# --- command line -------------------------------------------------------------


def test_cli_bench_writes_tables_and_json(clip, model_file, tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = main(
        [
            "bench",
            "--model",
            str(model_file),
            "--clip",
            str(clip),
            "--frames",
            "6",
            "--variants",
            "fp32",
            "--iterations",
            "2",
            "--warmup",
            "0",
            "--no-live",
            "--results-only",
            "--device",
            "cpu",
            "--json",
            str(out),
            "--work-dir",
            str(tmp_path / "work"),
            "--set",
            "model.batch_size=2",
            "--set",
            "model.precision=fp32",
            "--set",
            "model.channels_last=false",
        ]
    )
    assert code == 0
    data = json.loads(out.read_text())
    assert [r["batch_size"] for r in data["model_only"]] == [1, 2]
    assert [r["mode"] for r in data["pipeline"]] == ["file", "file, results only"]
    assert [r["mode"] for r in data["ratios"]] == ["file", "file, results only"]
    assert data["settings"]["results_only"] is True
    assert data["settings"]["model_section"]["batch_size"] == 2
    printed = capsys.readouterr().out
    assert "Model only" in printed and "Naive loop" in printed


def test_cli_bench_validate_writes_agreement(model_file, tmp_path):
    out = tmp_path / "validate.json"
    code = main(
        [
            "bench",
            "--validate",
            "--model",
            str(model_file),
            "--data",
            str(FIXTURES / "kvasir"),
            "--variants",
            "bf16-cl",
            "--limit",
            "2",
            "--json",
            str(out),
        ]
    )
    assert code == 0
    (agreement,) = json.loads(out.read_text())["validation"]
    assert agreement["variant"] == "bf16-cl" and agreement["images"] == 2


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--variants", "turbo"], "variant 'turbo'"),
        (["--validate"], "--validate needs --data"),
        (["--synthetic", "4k"], "720p, 1080p or WIDTHxHEIGHT"),
        (["--set", "model.backend=tensorrt"], "backend"),
    ],
)
def test_cli_bench_usage_errors(model_file, tmp_path, capsys, arguments, message):
    code = main(
        ["bench", "--model", str(model_file), "--work-dir", str(tmp_path), *arguments]
    )
    assert code == 2
    assert message in capsys.readouterr().err


@pytest.mark.gpu
def test_bench_smoke_on_the_gpu(clip, model_file, tmp_path):
    config = StreamConfig(model=ModelSettings(path=model_file, device="cuda"))
    settings = bench.BenchSettings(
        model=str(model_file),
        clips=(clip,),
        frames=8,
        iterations=3,
        warmup=1,
        work_dir=tmp_path,
    )
    report = bench.run_benchmark(settings, config)
    # "config" (precision auto = fp16 on CUDA, eager) is measured as "fp16".
    variants = {r.variant for r in report.model_only}
    assert variants == set(bench_inputs.DEFAULT_VARIANTS["cuda"])
    assert report.machine["gpu"]
    assert dataclasses.asdict(report)["ratios"]
