"""Synthetic media for the runtime tests: discs, small videos, a tiny model file."""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from streamseg.frames import Frame
from streamseg.model import ModelSpec, build_network, save_model

CVC_FRAMES = Path(__file__).parent / "fixtures" / "cvc"
_MODEL_FILES: dict[str, Path] = {}


def disc_image(
    hw: tuple[int, int],
    center_yx: tuple[float, float],
    radius: float,
    color: tuple[int, int, int] = (230, 60, 40),
    background: tuple[int, int, int] = (40, 20, 10),
) -> np.ndarray:
    """(H, W, 3) uint8 RGB image: a filled disc on a flat background."""
    height, width = hw
    yy, xx = np.mgrid[0:height, 0:width]
    inside = (yy - center_yx[0]) ** 2 + (xx - center_yx[1]) ** 2 <= radius**2
    image = np.empty((height, width, 3), np.uint8)
    image[:] = background
    image[inside] = color
    return image


def moving_disc(
    count: int, hw: tuple[int, int] = (48, 64), fps: float = 25.0, radius: float = 10.0
) -> list[Frame]:
    """``count`` frames of a disc moving left to right, ``1 / fps`` apart."""
    height, width = hw
    frames = []
    for index in range(count):
        x = radius + (width - 2 * radius) * index / max(count - 1, 1)
        frames.append(
            Frame(index, index / fps, disc_image(hw, (height / 2, x), radius))
        )
    return frames


def write_video(
    path: Path,
    images: Sequence[np.ndarray],
    timestamps_s: Sequence[float] | None = None,
    fps: float = 25.0,
    codec: str = "libx264",
    options: dict[str, str] | None = None,
) -> Path:
    """Encode RGB images with PyAV; ``timestamps_s`` (default ``i / fps``) become pts.

    Uses a 1/1000 s time base, so any millisecond timing (variable frame rate) is exact.
    ``options`` are FFmpeg muxer options (``movflags`` and the like).
    """
    import av

    time_base = Fraction(1, 1000)
    if timestamps_s is None:
        timestamps_s = [i / fps for i in range(len(images))]
    height, width = images[0].shape[:2]
    with av.open(str(path), mode="w", options=options or {}) as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = time_base
        stream.time_base = time_base
        if codec == "libx264":
            stream.options = {"crf": "12", "preset": "ultrafast"}
        for image, timestamp_s in zip(images, timestamps_s, strict=True):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = round(timestamp_s * 1000)
            frame.time_base = time_base
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def decode_video(path: Path) -> tuple[list[np.ndarray], list[float]]:
    """All frames of a video as RGB arrays, and their presentation times in seconds."""
    import av

    images, times = [], []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            images.append(frame.to_ndarray(format="rgb24"))
            times.append(float(frame.time))
    return images, times


def tiny_model_file(spec: ModelSpec, folder: Path) -> Path:
    """A random-weights model file for ``spec``, written once per test session."""
    key = spec.to_json()
    if key not in _MODEL_FILES:
        torch.manual_seed(0)
        network = build_network(spec)
        _MODEL_FILES[key] = save_model(
            folder / f"tiny{len(_MODEL_FILES)}.safetensors", network, spec
        )
    return _MODEL_FILES[key]


def signal_run_midway(
    clip: Path, model: Path, folder: Path, signum: int
) -> tuple[int, str, str, Path, Path]:
    """Run ``streamseg run`` on ``clip`` in real time in a subprocess; send ``signum``
    once 3 frames are out.

    Returns:
        (exit code, stdout, stderr, annotated MP4 path, JSONL path).
    """
    import os
    import subprocess
    import sys
    import time

    out, events = folder / "out.mp4", folder / "events.jsonl"
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "HF_HUB_OFFLINE": "1"}
    command = [
        sys.executable,
        "-m",
        "streamseg",
        "run",
        str(clip),
        "--model",
        str(model),
    ]
    command += ["--device", "cpu", "--output", str(out), "--events", str(events)]
    command += ["--set", "source.realtime=true"]
    process = subprocess.Popen(
        command,
        cwd=Path(__file__).resolve().parents[1],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            if events.exists() and len(events.read_text().splitlines()) >= 3:
                break
            time.sleep(0.05)
        if process.poll() is not None:
            raise AssertionError(f"finished before the signal: {process.communicate()}")
        process.send_signal(signum)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    return process.returncode, stdout, stderr, out, events
