"""streamseg batch: planning, summaries, the run table, and whole runs (local and Ray).

Six short clips (four good, one truncated, one audio-only) and the tiny random
model (conftest ``model_file``) are made once per session; the Ray tests share
one local Ray cluster (2 CPUs, no dashboard). The kill tests start the real
CLI in a subprocess, kill it once the run table shows a finished video, rerun,
and check that every good video was done exactly once and the bad ones are
reported (one clean stop on each engine, one SIGKILL on Ray).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from stream_media import moving_disc, write_video

from streamseg import batch
from streamseg.app import StreamConfig
from streamseg.batch.local import _worker_devices
from streamseg.batch.summary import UNHASHED
from streamseg.batch.table import RUN_TABLE, exclusive
from streamseg.batch.video import TEMP_TAG
from streamseg.cli import main
from streamseg.model import file_sha256
from streamseg.segmenter import ModelSettings
from streamseg.smoothing import SmoothingSettings

GOOD = ("a", "b", "sub/c", "sub/d")
BAD = ("audio", "sub/corrupt")
# Fast and exact on any CPU: the tiny model in fp32 with one thread.
FAST = ["model.precision=fp32", "model.channels_last=false", "model.threads=1"]


@pytest.fixture(scope="session")
def archive(tmp_path_factory) -> Path:
    """Six clips: a.mp4, b.mp4, sub/c.mp4 (the long ones), sub/d.mkv, a truncated
    sub/corrupt.mp4 and an audio-only audio.mp4."""
    root = tmp_path_factory.mktemp("archive")
    (root / "sub").mkdir()
    # b and c are long enough that a kill after the first finished video lands
    # while they are still to do.
    frames = {"a.mp4": 12, "b.mp4": 150, "sub/c.mp4": 150, "sub/d.mkv": 14}
    for name, count in frames.items():
        write_video(root / name, [f.pixels for f in moving_disc(count)])
    data = (root / "a.mp4").read_bytes()
    (root / "sub" / "corrupt.mp4").write_bytes(data[: len(data) // 2])
    _write_audio_only(root / "audio.mp4")
    return root


def _write_audio_only(path: Path) -> None:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for index in range(4):
            frame = av.AudioFrame.from_ndarray(
                np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
            )
            frame.sample_rate = 16000
            frame.pts = index * 1024
            frame.time_base = Fraction(1, 16000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


@pytest.fixture(scope="session")
def ray_address():
    """One local Ray cluster for the whole session (2 CPUs, no dashboard)."""
    ray = pytest.importorskip(
        "ray", reason="Ray is the cluster extra: pip install 'streamseg[cluster]'"
    )
    context = ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )
    try:
        yield context.address_info["gcs_address"]
    finally:
        ray.shutdown()


def _config(model_file: Path, **smoothing) -> StreamConfig:
    return StreamConfig(
        model=ModelSettings(
            path=model_file,
            device="cpu",
            precision="fp32",
            channels_last=False,
            threads=1,
        ),
        smoothing=SmoothingSettings(**smoothing),
    )


def _rows(out: Path) -> list[dict]:
    return list(batch.RunTable(out / RUN_TABLE).rows())


# --- planning ----------------------------------------------------------------------


def test_folder_input_mirrors_the_tree_and_leaves_the_output_out(archive, monkeypatch):
    jobs = batch.plan_jobs(archive, exclude=archive / "out")
    assert [j.video_id for j in jobs] == sorted([*GOOD, *BAD])
    assert {j.video_id: Path(j.source).name for j in jobs}["sub/d"] == "d.mkv"
    only_mp4 = batch.plan_jobs(archive, pattern="sub/*.mp4")
    assert [j.video_id for j in only_mp4] == ["sub/c", "sub/corrupt"]
    monkeypatch.chdir(archive.parent)
    relative = batch.plan_jobs(Path(archive.name))
    assert [(j.video_id, j.source) for j in relative] == [
        (j.video_id, j.source) for j in jobs
    ]


def test_list_and_manifest_inputs(archive, tmp_path, caplog):
    listing = tmp_path / "videos.txt"
    listing.write_text(f"# archive\n{archive / 'a.mp4'}\n\n{archive / 'sub/c.mp4'}\n")
    assert [j.video_id for j in batch.plan_jobs(listing)] == ["a", "sub/c"]

    manifest = tmp_path / "m.csv"
    (tmp_path / "frames").mkdir()
    manifest.write_text(
        f"path,id,fps,patient\n{archive / 'a.mp4'},case-1,,x\nframes,case-2,30,y\n"
    )
    with caplog.at_level("WARNING", logger="streamseg.batch"):
        jobs = batch.plan_jobs(manifest)
    assert [(j.video_id, j.fps) for j in jobs] == [("case-1", None), ("case-2", 30.0)]
    assert "ignoring columns 'patient'" in caplog.text
    config = jobs[1].config(StreamConfig())
    assert config.source.uri == str(tmp_path / "frames")
    assert config.source.folder_fps == 30.0

    jsonl = tmp_path / "m.jsonl"
    jsonl.write_text(json.dumps({"path": "clip.mp4", "fsp": 25}) + "\n")
    with caplog.at_level("WARNING", logger="streamseg.batch"):
        (job,) = batch.plan_jobs(jsonl)
    assert job.video_id == "clip" and job.source == str(tmp_path / "clip.mp4")
    assert "did you mean 'fps'?" in caplog.text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("id,fps\nx,1\n", "needs a 'path' column"),
        ("path,fps\na.mp4,fast\n", "m.csv:2: fps: expected a number"),
        ("path,fps\na.mp4,-1\n", "fps: expected > 0"),
        ("path,id\na.mp4,../up\n", "expected a relative path"),
        ("path,id\na.mp4,same\nb.mp4,same\n", "would share the output folder"),
        ("path,kind\na.mp4,camera\n", "kind: expected file or folder"),
        ("path,fps\na.mp4,30\n", "fps applies to image folders"),
    ],
)
def test_manifest_errors_name_the_row_and_the_fix(tmp_path, text, message):
    manifest = tmp_path / "m.csv"
    manifest.write_text(text)
    (tmp_path / "a.mp4").write_bytes(b"")
    with pytest.raises(batch.BatchError, match=message.replace("?", r"\?")):
        batch.plan_jobs(manifest)


# --- summaries, hashes, the run table --------------------------------------------


def test_summary_counts_time_and_merges_close_episodes():
    # 10 fps: polyp on frames 2-3 and 5 (merged across a 0.1 s gap), then 8.
    present = {2: 0.1, 3: 0.3, 5: 0.2, 8: 0.05}
    events = [
        {
            "timestamp_s": i / 10,
            "polyp_present": i in present,
            "area_fraction": present.get(i, 0.0),
            "track_ids": [1] if i < 6 else [2, 3] if i == 8 else [],
        }
        for i in range(10)
    ]
    summary = batch.summarize_events(events, episode_gap_s=0.15)
    assert summary["frames"] == 10 and summary["duration_s"] == pytest.approx(1.0)
    assert summary["polyp_time_s"] == pytest.approx(0.4)
    assert summary["max_area_fraction"] == 0.3
    assert summary["track_count"] == 3
    assert summary["max_area_timestamp_s"] == pytest.approx(0.3)
    assert [(e["start_s"], e["end_s"], e["frames"]) for e in summary["episodes"]] == [
        (0.2, 0.6, 3),
        (0.8, 0.9, 1),
    ]
    assert batch.summarize_events(events, episode_gap_s=0.0)["episode_count"] == 3
    assert batch.summarize_events([])["frames"] == 0


def test_config_hash_ignores_where_and_how_fast_but_not_what(model_file):
    base = _config(model_file)
    outputs = batch.BatchOutputs()
    same = dataclasses.replace(
        base,
        model=dataclasses.replace(base.model, device="cuda", batch_size=16, path=None),
    )
    assert batch.config_sha256(base, outputs) == batch.config_sha256(same, outputs)
    smoother = _config(model_file, time_constant_s=0.2)
    assert batch.config_sha256(base, outputs) != batch.config_sha256(smoother, outputs)
    with_video = batch.BatchOutputs(video=True)
    assert batch.config_sha256(base, outputs) != batch.config_sha256(base, with_video)
    untracked = dataclasses.replace(
        base, tracking=dataclasses.replace(base.tracking, enabled=False)
    )
    assert batch.config_sha256(base, outputs) != batch.config_sha256(untracked, outputs)


def test_every_key_the_config_hash_leaves_out_is_a_real_setting():
    # A renamed setting would otherwise silently start entering the hash (and
    # e.g. a move to a GPU would redo every finished video).
    config = StreamConfig()
    for section, keys in UNHASHED.items():
        fields = {f.name for f in dataclasses.fields(getattr(config, section))}
        assert keys <= fields, (section, sorted(keys - fields))


def test_a_section_a_later_version_adds_enters_the_config_hash(model_file):
    @dataclasses.dataclass(frozen=True)
    class Later(StreamConfig):
        future: SmoothingSettings = dataclasses.field(default_factory=SmoothingSettings)

    outputs = batch.BatchOutputs()
    base = _config(model_file)
    later = Later(**{f.name: getattr(base, f.name) for f in dataclasses.fields(base)})
    changed = dataclasses.replace(later, future=SmoothingSettings(time_constant_s=0.2))
    hashes = {batch.config_sha256(c, outputs) for c in (base, later, changed)}
    assert len(hashes) == 3


def test_run_table_keeps_whole_lines_and_the_latest_row_wins(tmp_path):
    table = batch.RunTable(tmp_path / "runs.jsonl")
    table.append({"video": "a", "status": "failed"})
    table.append({"video": "b", "status": "done"})
    table.append({"video": "a", "status": "done"})
    with open(table.path, "a") as file:
        file.write('{"video": "c", "stat')  # a torn last line
    assert {k: v["status"] for k, v in table.latest().items()} == {
        "a": "done",
        "b": "done",
    }


# --- whole runs, local engine --------------------------------------------------------


@pytest.mark.slow
def test_local_batch_writes_everything_and_a_rerun_does_nothing(
    archive, model_file, tmp_path
):
    out = tmp_path / "out"
    jobs = batch.plan_jobs(archive)
    settings = batch.BatchSettings(
        out=out,
        outputs=batch.BatchOutputs(video=True, masks=True, tracks=True),
        retries=1,
    )
    report = batch.run_batch(jobs, _config(model_file), settings)

    assert (report.done, report.already_done, report.failed) == (4, 0, BAD)
    assert not report.interrupted
    latest = batch.RunTable(out / "runs.jsonl").latest()
    for video_id in GOOD:
        row = latest[video_id]
        assert row["status"] == "done" and row["attempts"] == 1
        folder = out / video_id
        summary = json.loads((folder / "summary.json").read_text())
        lines = (folder / "events.jsonl").read_text().splitlines()
        assert summary["frames"] == len(lines) == row["frames"] > 0
        assert summary["model_sha256"] == file_sha256(model_file)
        assert row["outputs"]["video"] == f"{video_id}/annotated.mp4"
        assert (out / row["outputs"]["video"]).stat().st_size > 0
        assert len(list((folder / "masks").glob("*.png"))) == len(lines)
        tracks = json.loads((out / row["outputs"]["tracks"]).read_text())
        assert isinstance(tracks, dict) and tracks
    assert "no video stream" in latest["audio"]["error"]
    assert "not a video FFmpeg can read" in latest["sub/corrupt"]["error"]
    assert all("\n" not in latest[v]["error"] for v in BAD)
    assert not list(out.rglob(f"*{TEMP_TAG}*"))

    mtimes = {v: (out / v / "summary.json").stat().st_mtime_ns for v in GOOD}
    again = batch.run_batch(jobs, _config(model_file), settings)
    assert (again.done, again.already_done, again.given_up) == (0, 4, ())
    latest = batch.RunTable(out / "runs.jsonl").latest()
    assert [latest[v]["attempts"] for v in BAD] == [2, 2]
    # The failed ones got their last attempt; a third run gives up on them.
    third = batch.run_batch(jobs, _config(model_file), settings)
    assert (third.done, third.already_done, third.given_up) == (0, 4, BAD)
    rows = _rows(out)
    assert [r["video"] for r in rows if r["status"] == "done"] == list(GOOD)
    assert {v: (out / v / "summary.json").stat().st_mtime_ns for v in GOOD} == mtimes

    # Another smoothing changes what the outputs hold: every video is redone.
    changed = batch.run_batch(
        jobs[:1], _config(model_file, time_constant_s=0.2), settings
    )
    assert (changed.done, changed.already_done) == (1, 0)


@pytest.mark.slow
def test_worker_processes_do_the_videos(archive, model_file, tmp_path):
    # The two short clips: what is tested is the processes, not the frames.
    jobs = [j for j in batch.plan_jobs(archive) if j.video_id in ("a", "sub/d")]
    settings = batch.BatchSettings(out=tmp_path / "out", workers=2)
    report = batch.run_batch(jobs, _config(model_file), settings)
    assert report.done == 2 and report.complete
    # Which worker takes which video depends on which finished loading first.
    pids = {int(r["worker"].rsplit(":", 1)[1]) for r in _rows(tmp_path / "out")}
    assert 1 <= len(pids) <= 2 and os.getpid() not in pids


def test_local_workers_take_the_gpus_in_turn(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert _worker_devices("auto", 3) == ["cuda:0", "cuda:1", "cuda:0"]
    assert _worker_devices("cuda:1", 2) == ["cuda:1", "cuda:1"]
    assert _worker_devices("cpu", 2) == ["cpu", "cpu"]


def test_a_second_driver_on_the_same_output_is_refused(archive, model_file, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with exclusive(out), pytest.raises(batch.BatchError, match="another"):
        batch.run_batch(
            batch.plan_jobs(archive)[:1],
            _config(model_file),
            batch.BatchSettings(out=out),
        )


@pytest.mark.parametrize(
    ("make_input", "message"),
    [
        (lambda tmp: tmp / "missing", "no such file or folder"),
        (lambda tmp: _write(tmp / "m.csv", "path,fps\na.mp4,0\n"), "m.csv:2: fps"),
        (lambda tmp: (tmp / "empty").mkdir() or tmp / "empty", "no files with a"),
    ],
)
def test_cli_usage_errors_are_one_line_and_exit_2(
    tmp_path, capsys, make_input, message
):
    code = main(["batch", str(make_input(tmp_path)), "--out", str(tmp_path / "o")])
    error = capsys.readouterr().err
    assert code == 2
    assert error.startswith("streamseg: error: ") and message in error
    assert error.count("\n") == 1


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --- kill the driver part-way, rerun --------------------------------------------------


def _start_cli(archive: Path, out: Path, model: Path, *extra: str) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "streamseg",
        "batch",
        str(archive),
        "--out",
        str(out),
        "--model",
        str(model),
        "--device",
        "cpu",
        *(arg for key in FAST for arg in ("--set", key)),
        *extra,
    ]
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _wait_for_done_rows(process: subprocess.Popen, out: Path, count: int) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        done = [r for r in _rows(out) if r["status"] == "done"]
        if len(done) >= count:
            return
        if process.poll() is not None:
            pytest.fail(f"the batch run ended early:\n{process.communicate()[1]}")
        time.sleep(0.02)
    process.kill()
    pytest.fail("no video finished within 180 s")


def _wait_for_ray_actors_gone(timeout_s: float = 60.0) -> None:
    """A killed driver's actors are reaped by Ray; wait until their CPUs are back."""
    import ray

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ray.available_resources().get("CPU", 0) >= ray.cluster_resources()["CPU"]:
            return
        time.sleep(0.1)
    pytest.fail("the killed driver's Ray actors did not go away")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("engine", "signum"),
    [
        ("local", signal.SIGTERM),
        ("ray", signal.SIGKILL),
        ("ray", signal.SIGINT),
    ],
    ids=["local-term", "ray-kill", "ray-int"],
)
def test_killed_run_resumes_and_does_every_good_video_once(
    engine, signum, archive, model_file, tmp_path, request
):
    out = tmp_path / "out"
    extra: list[str] = []
    if engine == "ray":
        extra = ["--ray", request.getfixturevalue("ray_address"), "--workers", "1"]
    process = _start_cli(archive, out, model_file, *extra)
    _wait_for_done_rows(process, out, 1)
    process.send_signal(signum)
    code = process.wait(timeout=120)
    if signum == signal.SIGKILL:
        assert code == -signal.SIGKILL
    else:
        assert code == 130, process.stderr.read()
    if engine == "ray":
        _wait_for_ray_actors_gone()
    before = {
        row["video"] for row in _rows(out) if row["status"] in ("done", "skipped")
    }
    assert 1 <= len(before) < len(GOOD), "the signal did not land part-way"
    if signum != signal.SIGKILL:  # a clean stop leaves no partial output behind
        assert not list(out.rglob(f"*{TEMP_TAG}*"))
    complete = {
        v: (out / v / "summary.json").stat().st_mtime_ns
        for v in GOOD
        if (out / v / "summary.json").exists()
    }

    command = ["batch", str(archive), "--out", str(out), "--model", str(model_file)]
    command += ["--device", "cpu", *(a for k in FAST for a in ("--set", k)), *extra]
    assert main(command) == 1  # the two bad videos fail again
    rows = _rows(out)
    for video_id in GOOD:
        finished = [r for r in rows if r["video"] == video_id]
        finished = [r for r in finished if r["status"] in ("done", "skipped")]
        assert len(finished) == 1, (video_id, finished)
        assert (out / video_id / "summary.json").exists()
    for video_id, mtime_ns in complete.items():  # not redone
        assert (out / video_id / "summary.json").stat().st_mtime_ns == mtime_ns
    latest = batch.RunTable(out / "runs.jsonl").latest()
    assert all(latest[v]["status"] == "failed" and latest[v]["error"] for v in BAD)
    assert not list(out.rglob(f"*{TEMP_TAG}*"))

    # Nothing left to do but report: the good are done, the bad given up on.
    assert main([*command, "--retries", "0"]) == 1
    assert len(_rows(out)) == len(rows)


def test_a_worker_refuses_a_model_file_other_than_the_drivers(model_file, tmp_path):
    from streamseg.model import ModelFileError

    with pytest.raises(ModelFileError, match="differs from the driver's"):
        batch.VideoProcessor(
            _config(model_file), tmp_path, batch.BatchOutputs(), "0" * 64
        )


def test_ray_engine_without_ray_says_what_to_install(monkeypatch):
    from streamseg.batch import ray as batch_ray

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(batch.BatchError, match=r"pip install 'streamseg\[cluster\]'"):
        batch_ray._import_ray()


@pytest.mark.slow
def test_a_truncated_video_fails_or_keeps_what_was_read(model_file, tmp_path):
    import av

    # moov atom first (faststart): the header announces 60 frames, the data
    # ends early; the decoder reads what is there and stops without an error.
    whole = tmp_path / "whole.mp4"
    with av.open(str(whole), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.options = {"preset": "ultrafast", "g": "5"}
        for frame in moving_disc(60):
            image = av.VideoFrame.from_ndarray(frame.pixels, format="rgb24")
            container.mux(stream.encode(image))
        container.mux(stream.encode(None))
    clips = tmp_path / "clips"
    clips.mkdir()
    data = whole.read_bytes()
    (clips / "cut.mp4").write_bytes(data[: int(len(data) * 0.7)])
    jobs = batch.plan_jobs(clips)

    out = tmp_path / "out"
    strict = batch.run_batch(jobs, _config(model_file), batch.BatchSettings(out=out))
    assert strict.failed == ("cut",) and not (out / "cut").exists()
    error = batch.RunTable(out / "runs.jsonl").latest()["cut"]["error"]
    assert "of the 60 frames its header announces" in error

    outputs = batch.BatchOutputs(keep_partial=True)
    settings = batch.BatchSettings(out=out, outputs=outputs)
    kept = batch.run_batch(jobs, _config(model_file), settings)
    assert (kept.done, kept.partial, kept.failed) == (1, ("cut",), ())
    summary = json.loads((out / "cut" / "summary.json").read_text())
    assert summary["complete"] is False and summary["errors"] == [error]
    assert 0 < summary["frames"] < 60
    lines = (out / "cut" / "events.jsonl").read_text().splitlines()
    assert len(lines) == summary["frames"]
