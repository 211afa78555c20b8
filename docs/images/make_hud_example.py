"""Render docs/images/hud-example.png: the HUD on one frame of the demo clip.

Left: the clip processed as a file (progress, frames per second, x real time).
Right: the same clip played as a live source (frames per second, grab ->
overlay latency). Both with the alert border on (``alerts.flash``, kept on
for 2 s here so that it shows), drawn by the real pipeline with the bundled
model. The figures are those of the machine that runs this script.

    .venv/bin/python docs/images/make_hud_example.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from streamseg.app import StreamConfig, run
from streamseg.config import load_config

REPO = Path(__file__).resolve().parents[2]
OUT = Path(__file__).resolve().parent / "hud-example.png"
SETTINGS = ["alerts.flash=true", "alerts.flash_s=2.0", "model.device=cpu"]


class KeepFrame:
    """A sink that keeps the annotated image of the ``number``-th frame written."""

    name = "keep frame"

    def __init__(self, number: int) -> None:
        self.number = number
        self.written = 0
        self.image: np.ndarray | None = None

    def write(self, findings, image) -> None:
        self.written += 1
        if self.written == self.number:
            self.image = image

    def close(self) -> None:
        pass


def annotated(number: int, *overrides: str) -> np.ndarray:
    """The ``number``-th annotated frame of the demo clip, run with ``overrides``."""
    config = load_config(
        StreamConfig,
        REPO / "configs" / "stream.yaml",
        [f"source.uri={REPO / 'samples' / 'demo.mp4'}", *SETTINGS, *overrides],
    )
    keep = KeepFrame(number)
    run(config, sinks=[keep])
    assert keep.image is not None
    return keep.image


def main() -> None:
    as_file = annotated(13, "source.max_frames=13")  # fps known after 2 batches
    as_live = annotated(3, "source.max_frames=3", "source.realtime=true")
    gap = np.full((as_file.shape[0], 8, 3), 255, np.uint8)
    picture = Image.fromarray(np.concatenate([as_file, gap, as_live], axis=1))
    # An adaptive palette keeps the PNG small; the HUD's flat colours survive it.
    picture.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(
        OUT, optimize=True
    )
    print(f"wrote {OUT} ({OUT.stat().st_size / 1000:.0f} kB)")


if __name__ == "__main__":
    main()
