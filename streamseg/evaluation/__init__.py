"""Tools that measure the runtime, not part of it: imported only by their commands.

* :mod:`~streamseg.evaluation.video_metrics`: flicker, toggles, detection
  delay and Dice over a video (pure NumPy).
* :mod:`~streamseg.evaluation.video_eval`: ``streamseg evaluate-video``,
  per-frame against smoothed masks on videos with per-frame truth, and the
  smoothing sweep.
* :mod:`~streamseg.evaluation.bench`: ``streamseg bench``, model-only,
  pipeline and naive-loop speed, and fast paths checked against fp32.
* :mod:`~streamseg.evaluation.datasets` and :mod:`~streamseg.evaluation.metrics`:
  image, mask and split readers and Dice/IoU from pixel counts, shared by
  these tools, the training package and the tests.

This package module itself stays light (no torch, no OpenCV): the CLI reads
the defaults below to build its parser without importing a tool.
"""

from __future__ import annotations

# Defaults of ``streamseg evaluate-video`` (its parser shows them).
DEFAULT_FPS = 25.0
DEFAULT_LONG_SIDE_PX = 256
