"""The streamseg command: exit codes, one-line errors, info, a clean stop on SIGTERM."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch
from conftest import CLIP_FRAMES
from stream_media import (
    decode_video,
    moving_disc,
    signal_run_midway,
    write_video,
)

from streamseg.cli import main
from streamseg.window import gui_backend

REPO = Path(__file__).resolve().parents[1]


def _error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "expected an error message"
    return err[-1]


def test_run_writes_outputs_and_prints_a_timing_summary(
    clip, model_file, tmp_path, capsys
):
    code = main(
        [
            "run",
            str(clip),
            "--model",
            str(model_file),
            "--device",
            "cpu",
            "--output",
            str(tmp_path / "out.mp4"),
            "--events",
            str(tmp_path / "out.jsonl"),
            "--view",
            "none",
            "--config",
            str(REPO / "configs" / "stream.yaml"),
            "--set",
            "smoothing.time_constant_s=0.3",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert (
        f"{CLIP_FRAMES} frames" in out and "inference" in out and "p50/p95/p99" in out
    )
    assert len(decode_video(tmp_path / "out.mp4")[0]) == CLIP_FRAMES
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == CLIP_FRAMES


@pytest.mark.parametrize(
    ("arguments", "code", "message"),
    [
        (["run", "{tmp}/missing.mp4"], 1, "missing.mp4: no such file"),
        (
            ["run", "{clip}", "--set", "smoothing.time_constent_s=0.2"],
            2,
            "did you mean 'time_constant_s'",
        ),
        (["run", "{clip}", "--set", "overlay.fill_opacity=2"], 2, "fill_opacity"),
        (["run", "{clip}", "--config", "{tmp}/nope.yaml"], 2, "cannot read config"),
        (["run", "{clip}", "--max-frames", "0"], 2, "max_frames"),
        (["run", "{clip}", "--device", "tpu"], 2, "expected auto, cpu, cuda"),
    ],
)
def test_errors_are_one_line_with_the_right_exit_code(
    arguments, code, message, clip, model_file, tmp_path, capsys
):
    argv = [a.format(tmp=tmp_path, clip=clip) for a in arguments] + [
        "--model",
        str(model_file),
    ]
    assert main(argv) == code
    line = _error_line(capsys)
    assert line.startswith("streamseg: error: ") and message in line


def test_missing_model_file_is_a_runtime_failure(clip, tmp_path, capsys):
    assert main(["run", str(clip), "--model", str(tmp_path / "none.safetensors")]) == 1
    assert "no such model file" in _error_line(capsys)


def test_an_unknown_bundled_model_names_the_ones_there_are(clip, capsys):
    assert main(["run", str(clip), "--model", "bundled:fastest"]) == 1
    assert _error_line(capsys) == (
        "streamseg: error: bundled:fastest: no such bundled model; this build bundles "
        "bundled:default, bundled:fast (or pass a .safetensors file)"
    )
    assert main(["info", "bundled:"]) == 1
    assert "no such bundled model" in _error_line(capsys)


def test_a_bundled_model_is_named_by_the_model_setting(tmp_path):
    from streamseg.model import resolve_model_path
    from streamseg.segmenter import ModelSettings

    fast = ModelSettings(path="bundled:fast").model_path()
    assert fast.name == "fast.safetensors" and fast.is_file()
    assert ModelSettings(path=None).model_path().name == "default.safetensors"
    # Anything else is a path, even one that looks like a name.
    assert resolve_model_path(tmp_path / "fast") == tmp_path / "fast"


def test_without_a_bundled_model_the_message_says_what_to_pass(
    clip, monkeypatch, capsys
):
    monkeypatch.setattr("streamseg.segmenter.default_model_path", lambda: None)
    assert main(["run", str(clip)]) == 1
    assert _error_line(capsys) == (
        "streamseg: error: no bundled default model in this build; pass --model FILE "
        "(train one with python -m training train ...)"
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present")
def test_cuda_without_a_gpu_is_a_usage_error(clip, model_file, capsys):
    assert main(["run", str(clip), "--model", str(model_file), "--device", "cuda"]) == 2
    assert "CUDA is not available" in _error_line(capsys)


@pytest.mark.skipif(gui_backend() is not None, reason="this OpenCV has a GUI")
def test_window_on_headless_opencv_fails_before_any_output(
    clip, model_file, tmp_path, capsys
):
    argv = [
        "run",
        str(clip),
        "--model",
        str(model_file),
        "--view",
        "window",
        "--output",
        str(tmp_path / "o.mp4"),
    ]
    assert main(argv) == 1
    assert "--view none" in _error_line(capsys)
    assert not (tmp_path / "o.mp4").exists()


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["run"])
    assert exit_info.value.code == 2


def test_info_prints_the_spec_tensor_count_and_size(model_file, capsys):
    assert main(["info", str(model_file)]) == 0
    out = capsys.readouterr().out
    for text in (
        "Unet",
        "resnet18",
        "threshold",
        "tensors",
        "MB",
        "provenance.dataset",
    ):
        assert text in out


def test_info_shows_the_lineage_of_a_fine_tuned_file(
    tiny_spec, tmp_path, capsys, monkeypatch
):
    import dataclasses

    monkeypatch.setenv("COLUMNS", "200")  # no wrapping inside the table

    from streamseg.model import build_network, save_model

    grandparent = {"epochs": "50", "loss": "focal", "val_dice": "0.8922"}
    parent = {
        "epochs": "8",
        "loss": "structure",
        "init_from": json.dumps(
            {
                "file": "first.safetensors",
                "sha256": "ab" * 32,
                "provenance": grandparent,
            }
        ),
    }
    record = {"file": "second.safetensors", "sha256": "cd" * 32, "provenance": parent}
    soup = [
        {"file": "a.safetensors", "sha256": "ef" * 32, "weight": 0.5, "provenance": {}},
        {**record, "weight": 0.5},
    ]
    spec = dataclasses.replace(
        tiny_spec,
        provenance={
            "dataset": "x",
            "init_from": json.dumps(record),
            "soup": json.dumps(soup),
        },
    )
    path = save_model(tmp_path / "m.safetensors", build_network(spec), spec)
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert (
        "second.safetensors (sha256 cdcdcdcdcdcdcdcd): epochs 8; loss structure" in out
    )
    assert (
        "first.safetensors (sha256 abababababababab): epochs 50; loss focal; "
        "val_dice 0.8922" in out
    )
    assert "weight 0.5: a.safetensors (sha256 efefefefefefefef)" in out
    assert "weight 0.5: second.safetensors (sha256 cdcdcdcdcdcdcdcd): epochs 8" in out
    assert "  from first.safetensors (sha256 abababababababab)" in out


def test_info_on_a_bad_file_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a model")
    assert main(["info", str(bad)]) == 1
    assert "not a readable .safetensors file" in _error_line(capsys)


def test_sigterm_mid_run_leaves_a_playable_video(tmp_path, model_file):
    # 4 s of video played in real time; terminate it once a few frames are out.
    clip = write_video(tmp_path / "long.mp4", [f.pixels for f in moving_disc(100)])
    returncode, stdout, stderr, out, events = signal_run_midway(
        clip, model_file, tmp_path, signal.SIGTERM
    )
    assert returncode == 130, stderr
    assert "interrupted" in stdout
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    images, times = decode_video(out)
    assert 3 <= len(images) < 100
    assert len(images) == len(lines)
    assert times == sorted(times)


def test_info_without_a_path_describes_the_bundled_model(capsys):
    from streamseg.model import default_model_path, read_spec

    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert default_model_path().name in out
    architecture = read_spec(default_model_path()).architecture
    for text in (architecture, "threshold", "tensors", "provenance."):
        assert text in out


def test_info_describes_the_bundled_fast_model(capsys):
    assert main(["info", "bundled:fast"]) == 0
    out = capsys.readouterr().out
    assert "fast.safetensors" in out and "decoder_pyramid_channels" in out


def test_info_without_a_path_and_without_a_bundled_model_says_what_to_pass(
    monkeypatch, capsys
):
    monkeypatch.setattr("streamseg.model.default_model_path", lambda: None)
    assert main(["info"]) == 2
    assert "pass MODEL" in _error_line(capsys)


def test_the_command_skips_shutdown_only_after_an_interrupted_run(monkeypatch):
    from streamseg import cli

    exits = []
    monkeypatch.setattr(cli.os, "_exit", exits.append)
    monkeypatch.setattr(cli.logging, "shutdown", lambda: None)  # pytest's handlers
    monkeypatch.setattr(cli, "main", lambda: 130)
    with pytest.raises(SystemExit):  # reached only because os._exit is recorded
        cli.entry()
    assert exits == [130]
    for code in (0, 1, 2):
        monkeypatch.setattr(cli, "main", lambda code=code: code)
        with pytest.raises(SystemExit) as stopped:
            cli.entry()
        assert stopped.value.code == code
    assert exits == [130]
