"""Shared tensor transforms and device selection."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from streamseg.device import resolve_precision, select_device
from streamseg.transforms import Normalize, resize, to_tensor


def test_to_tensor_keeps_rgb_order_and_scales():
    pixels = np.zeros((2, 3, 3), np.uint8)
    pixels[..., 0] = 255  # red
    tensor = to_tensor(pixels)
    assert tensor.shape == (1, 3, 2, 3) and tensor.dtype == torch.float32
    assert torch.all(tensor[0, 0] == 1.0) and torch.all(tensor[0, 1:] == 0.0)


def test_to_tensor_batch_and_bad_input():
    assert to_tensor(np.zeros((4, 5, 6, 3), np.uint8)).shape == (4, 3, 5, 6)
    with pytest.raises(ValueError, match="uint8 RGB"):
        to_tensor(np.zeros((5, 6, 3), np.float32))
    with pytest.raises(ValueError, match="uint8 RGB"):
        to_tensor(np.zeros((5, 6), np.uint8))


def test_resize_is_identity_at_same_size_and_preserves_constants():
    images = torch.rand(1, 3, 32, 48)
    assert resize(images, (32, 48)) is images
    constant = torch.full((1, 1, 100, 70), 0.25)
    for size in [(32, 32), (200, 90)]:
        assert torch.allclose(resize(constant, size), torch.full((1, 1, *size), 0.25))


def test_resize_antialiases_downscale():
    # A one-pixel checkerboard averages to grey when shrunk; without antialiasing
    # bilinear sampling would alias it into stripes.
    # (Shrinking by 3 makes plain bilinear land on single pixels: 0 or 1.)
    board = ((torch.arange(48)[:, None] + torch.arange(48)[None, :]) % 2).float()
    out = resize(board[None, None], (16, 16))
    assert torch.allclose(out, torch.full_like(out, 0.5), atol=0.02)


def test_normalize_matches_formula():
    module = Normalize((0.5, 0.4, 0.3), (0.2, 0.2, 0.1))
    images = torch.rand(2, 3, 4, 4)
    expected = (images - torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)) / torch.tensor(
        [0.2, 0.2, 0.1]
    ).view(1, 3, 1, 1)
    assert torch.allclose(module(images), expected)
    with pytest.raises(ValueError, match="std values must be > 0"):
        Normalize((0, 0, 0), (1, 0, 1))


def test_device_and_precision_selection():
    assert select_device("cpu").type == "cpu"
    assert select_device("auto").type in {"cpu", "cuda"}
    with pytest.raises(ValueError, match="expected auto, cpu, cuda"):
        select_device("tpu")
    cpu = torch.device("cpu")
    assert resolve_precision(cpu, "auto").dtype is None
    assert resolve_precision(cpu, "bf16").dtype is torch.bfloat16
    with pytest.raises(ValueError, match="fp16 needs CUDA"):
        resolve_precision(cpu, "fp16")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            select_device("cuda")


@pytest.mark.parametrize("native", [True, False])
def test_runtime_auto_precision_is_bf16_only_on_cpus_with_native_bf16(
    monkeypatch, native
):
    import streamseg.device as device_module
    from streamseg.segmenter import ModelSettings

    monkeypatch.setattr(device_module, "cpu_has_native_bf16", lambda: native)
    cpu = torch.device("cpu")
    expected = torch.bfloat16 if native else None
    assert resolve_precision(cpu, "auto", cpu_auto_bf16=True).dtype is expected
    # Training and evaluation keep fp32 for auto on a CPU.
    assert resolve_precision(cpu, "auto").dtype is None
    assert ModelSettings().resolved_precision(cpu).dtype is expected
    # ONNX Runtime runs the fp32 graph: auto stays fp32 there.
    assert ModelSettings(backend="onnx").resolved_precision(cpu).dtype is None
    assert ModelSettings(precision="fp32").resolved_precision(cpu).dtype is None


def test_native_bf16_probe_agrees_with_the_cpu_flags():
    from streamseg.device import cpu_has_native_bf16

    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("no /proc/cpuinfo to read the CPU flags from (not Linux)")
    flags = set()
    for line in cpuinfo.read_text().splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    expected = bool(flags & {"amx_tile", "avx512_bf16"})
    assert cpu_has_native_bf16() is expected


def test_network_input_from_uint8_is_within_one_grey_level_of_the_float_path():
    """The CPU's uint8 antialiased resize against resizing the float image."""
    from streamseg.transforms import network_input, upload

    pixels = np.random.default_rng(0).integers(0, 256, (270, 480, 3), np.uint8)
    fast = network_input(upload(pixels), (64, 96))
    reference = resize(to_tensor(pixels), (64, 96))
    assert fast.dtype == torch.float32 and fast.shape == reference.shape
    assert float((fast - reference).abs().max()) <= 1.0 / 255 + 1e-6
    # At the input size already: only the conversion, exact.
    same = network_input(upload(pixels), (270, 480))
    assert torch.equal(same, to_tensor(pixels))
    # Float input is resized as before.
    assert torch.equal(network_input(to_tensor(pixels), (64, 96)), reference)
