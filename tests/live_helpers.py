"""Helpers for the live-use tests: ports, polling, a sender, HTTP, a known mask."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from streamseg.device import Precision
from streamseg.frames import Frame, Prediction
from streamseg.model import ModelSpec

SENDER = Path(__file__).resolve().parent / "stream_sender.py"
# The overlay's default fill (green, 35 %) over the sender's disc colour.
DISC_RGB = np.array([230, 60, 40])
FILL_OVER_DISC_RGB = np.round(DISC_RGB + 0.35 * (np.array([0, 255, 0]) - DISC_RGB))


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port that was free a moment ago on 127.0.0.1 (TCP or UDP)."""
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until(predicate: Callable[[], object], timeout_s: float) -> bool:
    """Poll ``predicate`` every 20 ms until it is truthy or ``timeout_s`` passes."""
    deadline_s = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline_s:
            return False
        time.sleep(0.02)
    return True


@contextlib.contextmanager
def sender(
    url: str, seconds: float, *, fps: float = 25.0, static: bool = False
) -> Iterator[subprocess.Popen]:
    """Run tests/stream_sender.py in a second process; stop it on exit."""
    process = subprocess.Popen(
        [
            sys.executable,
            str(SENDER),
            url,
            "--seconds",
            str(seconds),
            "--fps",
            str(fps),
            *(["--static"] if static else []),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
        _, errors = process.communicate(timeout=10)
        if process.returncode not in (0, -15):
            raise RuntimeError(f"the stream sender failed: {errors.decode()[-2000:]}")


def get(url: str, timeout_s: float = 5.0) -> tuple[int, bytes]:
    """(HTTP status, body) of a GET."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def get_json(url: str) -> dict:
    status, body = get(url)
    assert status == 200, (status, body)
    return json.loads(body)


def post(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    """(HTTP status, JSON body) of an empty POST."""
    request = urllib.request.Request(
        url,
        data=b"",
        method="POST",
        headers={"X-Streamseg": "1"} if headers is None else headers,
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def red_mask(pixels: np.ndarray) -> np.ndarray:
    """(H, W) bool: the sender's red disc (robust to compression)."""
    rgb = pixels.astype(np.int16)
    return (rgb[..., 0] > 150) & (rgb[..., 1] < 130) & (rgb[..., 2] < 130)


class RedDiscSegmenter:
    """Stands in for the network: probability 1 on the red disc, else 0.

    The mask is then known exactly, so a test can tell where the overlay
    must be (a random-weights model draws it anywhere). It has what
    :func:`streamseg.app.run` uses of a :class:`~streamseg.segmenter.Segmenter`.
    """

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.device = torch.device("cpu")
        self.precision = Precision(None)
        self.streams = 1  # batches in flight at once

    def __call__(self, frame: Frame) -> Prediction:
        probabilities = torch.from_numpy(red_mask(frame.pixels).astype(np.float32))
        return Prediction(frame, probabilities, self.spec.threshold)

    def segment(
        self, frames: list[Frame], *, tta: str | None = None
    ) -> list[Prediction]:
        return [self(frame) for frame in frames]

    def describe(self) -> str:
        return "red disc (test double)"


def use_red_disc_segmenter(monkeypatch, spec: ModelSpec) -> None:
    """Make the ``streamseg run`` command segment with :class:`RedDiscSegmenter`.

    Only for tests that go through the CLI; a test that calls
    :func:`streamseg.app.run` passes ``segmenter=RedDiscSegmenter(spec)``.
    """
    monkeypatch.setattr(
        "streamseg.segmenter.Segmenter.from_settings",
        classmethod(lambda cls, settings, device=None, **_: RedDiscSegmenter(spec)),
    )
