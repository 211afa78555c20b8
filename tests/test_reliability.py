"""Bad inputs and faults through the real ``streamseg run`` command.

The table of cases and results: docs/reliability.md.

Every case runs ``streamseg.cli.main([...])`` in-process (a subprocess where a
signal is involved) and checks the contract of issue 8: the right non-zero exit
code, exactly one ``streamseg: error:`` line naming the problem and the fix, no
traceback unless ``--debug``, and every output written so far still decodes.
Cases already covered elsewhere are referenced in docs/reliability.md, not repeated.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import pickle
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import av
import numpy as np
import pytest
from stream_media import (
    decode_video,
    disc_image,
    moving_disc,
    signal_run_midway,
)
from stream_media import write_video as write_clip

from streamseg.cli import main
from streamseg.model import FORMAT, build_network, save_model

REPO = Path(__file__).resolve().parents[1]


def _cli(argv, capsys, model_file=None, debug=False):
    """Run ``streamseg run``; return (exit code, stderr lines)."""
    argv = ["run", *map(str, argv), "--device", "cpu", "--view", "none"]
    if model_file is not None and "--model" not in argv:
        argv += ["--model", str(model_file)]
    if debug:
        argv.append("--debug")
    code = main(argv)
    return code, capsys.readouterr().err.strip().splitlines()


def _assert_one_clear_line(lines, *fragments, debug=False):
    errors = [line for line in lines if line.startswith("streamseg: error: ")]
    assert len(errors) == 1, lines
    text = "\n".join(lines)
    assert ("Traceback" in text) == debug, text
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


# --- media makers -------------------------------------------------------------


def _encode(path, images, *, codec="libx264", pix_fmt="yuv420p", fps=25, rotation=0):
    height, width = images[0].shape[:2]
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if rotation:
            stream.set_display_rotation(rotation)
        for index, image in enumerate(images):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame = frame.reformat(format=pix_fmt)
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def _discs(count, hw):
    height, width = hw
    radius = max(min(hw) / 4, 0.5)
    return [
        disc_image(hw, (height / 2, (i + 1) * width / (count + 1)), radius)
        for i in range(count)
    ]


def _empty(path):
    path.write_bytes(b"")
    return path


def _text_as_mp4(path):
    path.write_text("this is not a video\n")
    return path


def _truncated(path):
    full = write_clip(path, [f.pixels for f in moving_disc(10)])
    data = full.read_bytes()
    full.write_bytes(data[: len(data) // 3])
    return path


def _truncated_after_index(path):
    # The index (moov) first, as phones and "faststart" write it: the cut file
    # opens and announces 30 frames, then FFmpeg just stops early, no error.
    with av.open(str(path), mode="w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for index, frame in enumerate(moving_disc(30)):
            image = av.VideoFrame.from_ndarray(frame.pixels, format="rgb24")
            image.pts = index
            container.mux(stream.encode(image))
        container.mux(stream.encode(None))
    data = path.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat")
    path.write_bytes(data[: len(data) * 2 // 3])
    return path


def _audio_only(path):
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("aac", rate=8000)
        for index in range(4):
            frame = av.AudioFrame.from_ndarray(
                np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
            )
            frame.sample_rate, frame.pts = 8000, index * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def _zero_frames(path):
    # AVI keeps a video track that has no frames (MP4 and Matroska do not);
    # the name stays .mp4: FFmpeg probes the content, as with a mislabelled file.
    with av.open(str(path), mode="w", format="avi") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        container.start_encoding()  # header and index, but not one frame
    return path


def _garbage_packets(path):
    # A valid MP4 box structure whose H.264 payload is random bytes.
    write_clip(path, [f.pixels for f in moving_disc(10)])
    data = bytearray(path.read_bytes())
    start = data.index(b"mdat") + 4
    size = int.from_bytes(data[start - 8 : start - 4], "big") - 8
    data[start : start + size] = np.random.default_rng(0).bytes(size)
    path.write_bytes(bytes(data))
    return path


def _missing(path):
    return path


def _no_decoder(path):
    # A stream whose codec FFmpeg knows but has no decoder for in this build
    # (the header names it, the packets cannot be turned into pictures).
    write_clip(path, [f.pixels for f in moving_disc(4)])
    data = bytearray(path.read_bytes())
    position = data.index(b"avc1")
    data[position : position + 4] = b"xxxx"  # unknown sample entry: no decoder
    position = data.index(b"avcC")
    data[position : position + 4] = b"xxxx"
    path.write_bytes(bytes(data))
    return path


BAD_SOURCES = [
    ("missing", _missing, "no such file; check the path"),
    ("empty", _empty, "not a video FFmpeg can read"),
    ("truncated", _truncated, "re-encode or copy it again"),
    ("truncated-after-index", _truncated_after_index, "truncated or damaged"),
    ("text-renamed-mp4", _text_as_mp4, "not a video FFmpeg can read"),
    ("audio-only", _audio_only, "has no video stream"),
    ("zero-frames", _zero_frames, "no video frames could be decoded"),
    ("garbage-packets", _garbage_packets, "re-encode"),
    ("no-decoder", _no_decoder, "re-encode"),
]


@pytest.mark.parametrize(
    ("make", "fragment"),
    [case[1:] for case in BAD_SOURCES],
    ids=[case[0] for case in BAD_SOURCES],
)
@pytest.mark.parametrize("debug", [False, True], ids=["plain", "debug"])
def test_bad_source_files_fail_with_one_line_and_exit_1(
    make, fragment, debug, model_file, tmp_path, capsys
):
    source = make(tmp_path / "in.mp4")
    out = tmp_path / "out.mp4"
    code, lines = _cli(
        [source, "--output", out, "--events", tmp_path / "e.jsonl"],
        capsys,
        model_file,
        debug=debug,
    )
    assert code == 1
    _assert_one_clear_line(lines, str(source), fragment, debug=debug)
    if out.exists():  # whatever was written before the failure still decodes
        images, _ = decode_video(out)
        events = (tmp_path / "e.jsonl").read_text().splitlines()
        assert len(images) == len(events)


# --- frame sizes and pixel formats that must work ------------------------------


FORMATS = [
    ("odd-33x17", (17, 33), "libx264", "yuv444p", "mp4"),
    ("1x1", (1, 1), "ffv1", "yuv444p", "mkv"),
    ("4k", (2160, 3840), "libx264", "yuv420p", "mp4"),
    ("gray", (48, 64), "ffv1", "gray", "mkv"),
    ("10-bit", (48, 64), "libx264", "yuv420p10le", "mp4"),
    ("yuv444p", (48, 64), "libx264", "yuv444p", "mp4"),
]


@pytest.mark.parametrize(
    ("hw", "codec", "pix_fmt", "suffix"),
    [case[1:] for case in FORMATS],
    ids=[case[0] for case in FORMATS],
)
def test_unusual_sizes_and_pixel_formats_work_and_the_output_decodes(
    hw, codec, pix_fmt, suffix, model_file, tmp_path, capsys
):
    count = 2 if hw[0] > 1000 else 3
    images = _discs(count, hw)
    source = _encode(tmp_path / f"in.{suffix}", images, codec=codec, pix_fmt=pix_fmt)
    out, events = tmp_path / "out.mp4", tmp_path / "e.jsonl"
    code, lines = _cli(
        [source, "--output", out, "--events", events], capsys, model_file
    )
    assert code == 0, lines
    decoded, _ = decode_video(out)
    assert len(decoded) == count
    height, width = hw
    assert decoded[0].shape == (height + height % 2, width + width % 2, 3)
    assert len(events.read_text().splitlines()) == count
    if pix_fmt in ("gray", "yuv420p10le"):  # converted to 8-bit RGB, like the input
        from streamseg.sources import read_video

        first = next(iter(read_video(str(source)))).pixels.astype(int)
        assert first.shape == (height, width, 3)
        expected = images[0].astype(int)
        if pix_fmt == "gray":
            assert np.abs(first[..., 0] - first[..., 1]).max() <= 2
            expected = (expected @ [0.299, 0.587, 0.114])[..., None]
        assert np.abs(first - expected).mean() < 6


def test_variable_frame_rate_timestamps_reach_the_recording(
    model_file, tmp_path, capsys
):
    # Also: tests/test_sources.py::test_variable_frame_rate_timestamps_are_kept.
    times_s = [0.0, 0.04, 0.05, 0.2, 0.21, 0.5]
    source = write_clip(
        tmp_path / "vfr.mp4", [f.pixels for f in moving_disc(6)], timestamps_s=times_s
    )
    out, events = tmp_path / "out.mp4", tmp_path / "e.jsonl"
    code, lines = _cli(
        [source, "--output", out, "--events", events], capsys, model_file
    )
    assert code == 0, lines
    _, decoded_s = decode_video(out)
    assert decoded_s == pytest.approx(times_s, abs=1e-3)
    logged_s = [
        json.loads(line)["timestamp_s"] for line in events.read_text().splitlines()
    ]
    assert logged_s == pytest.approx(times_s, abs=1e-3)


def test_rotated_phone_video_is_turned_upright(model_file, tmp_path, capsys):
    # Stored 64 wide x 32 high with a white band on the left; the display
    # matrix says: show it turned 90 degrees counter-clockwise.
    image = np.zeros((32, 64, 3), np.uint8)
    image[:, :8] = 255
    source = _encode(tmp_path / "phone.mp4", [image] * 3, rotation=90)
    out = tmp_path / "out.mp4"
    code, lines = _cli([source, "--output", out], capsys, model_file)
    assert code == 0, lines
    decoded, _ = decode_video(out)
    assert decoded[0].shape[:2] == (64, 32)  # upright: portrait
    # Counter-clockwise: the left band becomes the bottom rows.
    assert decoded[0][-6:].mean() > 200 and decoded[0][:20].mean() < 40


# --- model files ----------------------------------------------------------------


class _Marker:
    """Unpickling this would create the marker file: proof that nothing unpickles."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def _corrupt_model(path, spec, tmp_path):
    data = save_model(path, build_network(spec), spec).read_bytes()
    path.write_bytes(data[:100] + np.random.default_rng(1).bytes(len(data) - 100))


def _other_architecture(path, spec, tmp_path):
    from safetensors.torch import load_file, save_file

    save_model(path, build_network(spec), spec)
    other = dataclasses.replace(spec, architecture="FPN", model_kwargs={})
    save_file(
        load_file(str(path)),
        str(path),
        metadata={"format": FORMAT, "spec": other.to_json()},
    )


def _pickle_checkpoint(path, spec, tmp_path):
    path.write_bytes(pickle.dumps({"state_dict": _Marker(tmp_path / "pwned")}))


def _torch_save_checkpoint(path, spec, tmp_path):
    import torch

    torch.save({"state_dict": _Marker(tmp_path / "pwned")}, path)


BAD_MODELS = [
    ("corrupt", _corrupt_model, "model"),
    ("other-architecture", _other_architecture, "do not fit"),
    ("pickle", _pickle_checkpoint, "never unpickles"),
    ("torch-save", _torch_save_checkpoint, "never unpickles"),
]


@pytest.mark.parametrize(
    ("make", "fragment"),
    [case[1:] for case in BAD_MODELS],
    ids=[case[0] for case in BAD_MODELS],
)
def test_bad_model_files_fail_with_one_line_and_never_unpickle(
    make, fragment, clip, tiny_spec, tmp_path, capsys
):
    model = tmp_path / "bad.safetensors"
    make(model, tiny_spec, tmp_path)
    out = tmp_path / "out.mp4"
    code, lines = _cli([clip, "--model", model, "--output", out], capsys)
    assert code == 1
    _assert_one_clear_line(lines, str(model), fragment)
    assert not (tmp_path / "pwned").exists()
    assert not out.exists()  # nothing is created before the model loaded


# --- configuration and outputs ----------------------------------------------------


@pytest.mark.parametrize(
    ("yaml_text", "fragment"),
    [
        ("smoothing:\n  time_constent_s: 0.2\n", "time_constant_s"),
        ("sauce:\n  uri: x\n", "source"),
        ("model:\n  batch_size: four\n", "batch_size"),
        ("output:\n  video_crf: [1, 2]\n", "video_crf"),
        ("source: 3\n", "source"),
        ("overlay:\n  fill_opacity: yes please\n", "fill_opacity"),
    ],
    ids=[
        "typo",
        "unknown-section",
        "str-for-int",
        "list-for-int",
        "scalar-section",
        "str-for-float",
    ],
)
def test_bad_config_files_exit_2_naming_the_key(
    yaml_text, fragment, clip, model_file, tmp_path, capsys
):
    config = tmp_path / "stream.yaml"
    config.write_text(yaml_text)
    code, lines = _cli([clip, "--config", config], capsys, model_file)
    assert code == 2
    _assert_one_clear_line(lines, fragment)


@pytest.mark.parametrize(
    ("option", "make", "fragment"),
    [
        ("--output", lambda d: d / "file.txt" / "out.mp4", "is a file, not a folder"),
        ("--events", lambda d: d / "file.txt" / "e.jsonl", "is a file, not a folder"),
        ("--masks", lambda d: d / "file.txt" / "masks", "pick"),
        ("--output", lambda d: d / "out.unknownext", "unknownext"),
        ("--output", lambda d: d, "is a folder"),
    ],
    ids=[
        "video-under-a-file",
        "events-under-a-file",
        "masks-under-a-file",
        "unknown-extension",
        "video-is-a-folder",
    ],
)
def test_unwritable_outputs_fail_before_the_model_loads(
    option, make, fragment, clip, model_file, tmp_path, capsys, monkeypatch
):
    (tmp_path / "file.txt").write_text("a file, not a folder")

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the outputs were checked")

    monkeypatch.setattr(
        "streamseg.segmenter.Segmenter.from_settings", classmethod(no_model)
    )
    code, lines = _cli([clip, option, make(tmp_path)], capsys, model_file)
    assert code == 1
    _assert_one_clear_line(lines, fragment)


class _FillingDisk:
    """Wraps a PyAV output container; ``mux`` fails with ENOSPC after ``room`` calls."""

    def __init__(self, container, room):
        self._container, self._room = container, room

    def mux(self, packets):
        if self._room <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._room -= 1
        return self._container.mux(packets)

    def __getattr__(self, name):
        return getattr(self._container, name)


def test_disk_full_while_recording_is_one_line_and_the_part_written_decodes(
    model_file, tmp_path, capsys, monkeypatch
):
    source = write_clip(tmp_path / "in.mp4", [f.pixels for f in moving_disc(40)])
    out, events = tmp_path / "out.mp4", tmp_path / "e.jsonl"
    real_open = av.open

    def open_on_a_small_disk(path, mode="r", **kwargs):
        container = real_open(path, mode, **kwargs)
        return _FillingDisk(container, 12) if mode == "w" else container

    monkeypatch.setattr(av, "open", open_on_a_small_disk)
    code, lines = _cli(
        [
            source,
            "--output",
            out,
            "--events",
            events,
            "--set",
            "output.video_preset=ultrafast",
            "--set",
            "model.batch_size=1",
        ],
        capsys,
        model_file,
    )
    assert code == 1
    line = _assert_one_clear_line(
        lines, str(out), "No space left on device", "frames are kept"
    )
    images, _ = decode_video(out)
    assert 1 <= len(images) < 40
    assert f"the first {len(images)} frames are kept" in line


def test_disk_full_on_a_real_tmpfs(model_file, tmp_path, capsys):
    disk = tmp_path / "small"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        images = [
            np.random.default_rng(i).integers(0, 255, (96, 128, 3), np.uint8)
            for i in range(30)
        ]
        source = write_clip(tmp_path / "noise.mp4", images)
        code, lines = _cli(
            [source, "--output", disk / "out.mp4", "--set", "output.video_crf=0"],
            capsys,
            model_file,
        )
        assert code == 1
        line = _assert_one_clear_line(lines, "No space left on device", "free")
        if "frames are kept" in line:
            kept = len(decode_video(disk / "out.mp4")[0])
            assert f"the first {kept} frames are kept" in line
        else:
            assert "nothing of it could be kept" in line
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_image_folder_with_a_non_image_fails_clearly_after_keeping_its_output(
    model_file, tmp_path, capsys
):
    import cv2

    folder = tmp_path / "frames"
    folder.mkdir()
    for index, frame in enumerate(moving_disc(4)):
        cv2.imwrite(str(folder / f"{index}.png"), frame.pixels[..., ::-1])
    (folder / "notes.txt").write_text("ignored: not an image suffix")
    (folder / "5.png").write_text("a text file named like a frame")
    out, events = tmp_path / "out.mp4", tmp_path / "e.jsonl"
    code, lines = _cli(
        [folder, "--output", out, "--events", events, "--set", "model.batch_size=1"],
        capsys,
        model_file,
    )
    assert code == 1
    _assert_one_clear_line(lines, "5.png", "cannot decode this image", "remove it")
    assert len(decode_video(out)[0]) == 4
    assert len(events.read_text().splitlines()) == 4


# --- security -------------------------------------------------------------------


def test_credentials_in_a_stream_url_never_reach_the_messages(model_file, capsys):
    url = "rtsp://admin:s3cret-pw@127.0.0.1:9/endoscope"
    code, lines = _cli(
        [url, "--set", "source.open_timeout_s=2", "--debug"], capsys, model_file
    )
    assert code == 1
    text = "\n".join(lines)
    assert "s3cret-pw" not in text and "admin" not in text
    assert "rtsp://***@127.0.0.1:9/endoscope" in text


def test_paths_from_the_command_line_and_config_are_never_executed(
    model_file, tmp_path, capsys
):
    marker = tmp_path / "executed"
    evil = f"$(touch {marker}); touch {marker}; `touch {marker}`"
    config = tmp_path / "stream.yaml"
    config.write_text(f"output:\n  events: '{evil}.jsonl'\n")
    code, lines = _cli([evil, "--config", config], capsys, model_file)
    assert code == 1
    _assert_one_clear_line(lines, "no such file")
    assert not marker.exists()


# --- faults ----------------------------------------------------------------------


def test_sigint_mid_run_finalizes_the_outputs(tmp_path, model_file):
    # SIGTERM: tests/test_cli.py::test_sigterm_mid_run_leaves_a_playable_video.
    clip = write_clip(tmp_path / "long.mp4", [f.pixels for f in moving_disc(100)])
    returncode, _, stderr, out, events = signal_run_midway(
        clip, model_file, tmp_path, signal.SIGINT
    )
    assert returncode == 130, stderr
    assert "Traceback" not in stderr
    images, _ = decode_video(out)
    assert 3 <= len(images) < 100
    assert len(images) == len(events.read_text().splitlines())


def test_a_slow_consumer_drops_frames_with_bounded_memory(
    model_file, tmp_path, monkeypatch
):
    from streamseg.app import StreamConfig, run
    from streamseg.config import load_config
    from streamseg.segmenter import Segmenter

    # 2 s of 640x480 at 60 fps played in real time; inference takes 50 ms.
    count, fps = 120, 60.0
    hw = (480, 640)
    images = [disc_image(hw, (240, 100 + 3 * i), 60) for i in range(count)]
    source = write_clip(tmp_path / "fast.mp4", images, fps=fps)
    original = Segmenter.segment

    def slow(self, frames, **options):
        time.sleep(0.05)
        return original(self, frames, **options)

    monkeypatch.setattr(Segmenter, "segment", slow)
    config = load_config(
        StreamConfig,
        None,
        [
            f"source.uri={source}",
            "source.realtime=true",
            f"model.path={model_file}",
            "model.device=cpu",
        ],
    )
    frame_bytes = hw[0] * hw[1] * 3
    tracemalloc.start()
    try:
        stats = run(config)
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert stats.frames_dropped > count // 3
    assert stats.frames_in + stats.frames_dropped == count
    # Everything decoded stays far below what a growing queue would hold.
    assert peak_bytes < 30 * frame_bytes, peak_bytes / frame_bytes


def test_soak_script_smoke(model_file, tmp_path):
    report = tmp_path / "soak.json"
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "soak.py"),
            "--minutes",
            "0.1",
            "--model",
            str(model_file),
            "--fps",
            "15",
            "--json",
            str(report),
            "--sample-s",
            "0.5",
            "--warmup-s",
            "1",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    numbers = json.loads(report.read_text())
    for key in (
        "rss_growth_percent",
        "frame_count_drift",
        "frames_out",
        "frames_expected",
        "rss_samples_mb",
    ):
        assert key in numbers
    assert numbers["frames_out"] > 0
    assert "rss growth" in result.stdout
