"""streamseg: real-time polyp segmentation for endoscopy video.

The runtime package. It never imports poutyne or albumentations (those belong
to the ``training`` package).
"""

from __future__ import annotations

import importlib
from typing import Any

from streamseg.frames import Frame, Prediction
from streamseg.model import (
    ModelFileError,
    ModelSpec,
    build_network,
    load_model,
    save_model,
)

# Imported on first use: they pull in PyAV, OpenCV and smp, which a caller
# that only reads a model file does not need.
_LAZY = {
    "Findings": "streamseg.findings",
    "ModelSettings": "streamseg.segmenter",
    "Segmenter": "streamseg.segmenter",
    "StreamConfig": "streamseg.app",
    "run": "streamseg.app",
    "RunStats": "streamseg.stats",
    "SourceError": "streamseg.sources",
    "OutputError": "streamseg.sinks",
}

__all__ = [
    "Findings",
    "Frame",
    "ModelFileError",
    "ModelSettings",
    "ModelSpec",
    "OutputError",
    "Prediction",
    "RunStats",
    "Segmenter",
    "SourceError",
    "StreamConfig",
    "build_network",
    "load_model",
    "run",
    "save_model",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'streamseg' has no attribute {name!r}")
