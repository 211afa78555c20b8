"""streamseg: real-time polyp segmentation for endoscopy video.

The runtime package. It never imports poutyne or albumentations (those belong
to the ``training`` package).
"""

from __future__ import annotations

from streamseg.frames import Frame, Prediction
from streamseg.model import ModelFileError, ModelSpec, build_network, load_model, save_model

__all__ = [
    "Frame",
    "ModelFileError",
    "ModelSpec",
    "Prediction",
    "build_network",
    "load_model",
    "save_model",
]
__version__ = "0.1.0"
