"""The encoder's RGB -> yuv420p conversion matches swscale's (FFmpeg's own)."""

from __future__ import annotations

import av
import cv2
import numpy as np
from conftest import FIXTURES

from streamseg.sinks import yuv420_frame


def test_yuv420_frame_matches_swscale():
    image = next((FIXTURES / "kvasir" / "images").glob("*.jpg"))
    rgb = cv2.cvtColor(cv2.imread(str(image)), cv2.COLOR_BGR2RGB)
    height, width = (rgb.shape[0] // 2) * 2, (rgb.shape[1] // 2) * 2
    rgb = np.ascontiguousarray(rgb[:height, :width])
    rgb[:8, :8] = (0, 0, 0)  # the ends of the range
    rgb[-8:, -8:] = (255, 255, 255)
    ours = yuv420_frame(rgb)
    theirs = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
    assert (ours.format.name, ours.width, ours.height) == ("yuv420p", width, height)
    a = ours.to_ndarray().astype(int)
    b = theirs.to_ndarray().astype(int)
    assert a.shape == b.shape == (height * 3 // 2, width)
    # Luma: the same BT.601 limited-range matrix, rounding apart.
    assert np.abs(a[:height] - b[:height]).max() <= 1
    assert a[:8, :8].max() == 16 and a[height - 8 : height, -8:].min() == 235
    # Chroma: OpenCV averages each 2x2 block, swscale filters across blocks;
    # they differ only at sharp colour edges.
    assert np.abs(a[height:] - b[height:]).mean() < 1.5
