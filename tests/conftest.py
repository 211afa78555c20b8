"""Shared test fixtures.

Offline environment, a tiny model spec and its random-weights model file, a
short moving-disc clip, real downscaled images.
"""

from __future__ import annotations

import os

# Fail fast instead of reaching for the network (smp weights, albumentations update
# check).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from pathlib import Path

import pytest
import torch

from streamseg.model import ModelSpec

FIXTURES = Path(__file__).parent / "fixtures"
CLIP_FRAMES = 6  # frames of the ``clip`` fixture, at 25 fps
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def pytest_collection_modifyitems(config, items):
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs CUDA (no GPU on this machine)")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(autouse=True)
def _few_threads():
    # Tests run on 2 cores; keep torch from oversubscribing them.
    torch.set_num_threads(2)
    yield


@pytest.fixture
def tiny_spec() -> ModelSpec:
    """A small, fast network: Unet/resnet18 at 64x64 (:func:`make_tiny_spec`)."""
    return make_tiny_spec()


def make_tiny_spec() -> ModelSpec:
    """A small, fast network: Unet/resnet18 at 64x64.

    Random weights (nothing downloaded).
    """
    return ModelSpec(
        architecture="Unet",
        encoder_name="resnet18",
        input_hw=(64, 64),
        threshold=0.5,
        model_kwargs={"encoder_depth": 3, "decoder_channels": [32, 16, 8]},
        provenance={"dataset": "none (test fixture)"},
    )


@pytest.fixture
def model_file(tiny_spec, tmp_path_factory) -> Path:
    """A random-weights model file of ``tiny_spec`` (written once per session)."""
    from stream_media import tiny_model_file

    return tiny_model_file(tiny_spec, tmp_path_factory.getbasetemp())


@pytest.fixture
def clip(tmp_path) -> Path:
    """An H.264 MP4 of ``CLIP_FRAMES`` moving-disc frames at 25 fps."""
    from stream_media import moving_disc, write_video

    return write_video(
        tmp_path / "clip.mp4", [f.pixels for f in moving_disc(CLIP_FRAMES)]
    )
