"""Hardware choices, made once at the edge: device selection, backend flags, precision.

This is the only module that touches ``torch.backends`` or asks whether CUDA
exists. Stages receive a ``torch.device`` and a :class:`Precision`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, get_args

import torch

log = logging.getLogger(__name__)

PrecisionName = Literal["auto", "fp32", "bf16", "fp16"]
PRECISION_NAMES: tuple[str, ...] = get_args(PrecisionName)


@dataclass(frozen=True)
class Precision:
    """Autocast dtype for inference or training; ``None`` means plain fp32."""

    dtype: torch.dtype | None

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]


def select_device(name: str = "auto") -> torch.device:
    """Turn ``"auto" | "cpu" | "cuda" | "cuda:N"`` into a device, with a clear error.

    Raises:
        ValueError: Unknown name, or CUDA requested where there is none.
    """
    name = (name or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {name!r} requested but CUDA is not available here; "
                "use --device cpu or auto"
            )
        device = torch.device(name)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s); "
                "pick cuda:0 .. cuda:N-1"
            )
        return device
    raise ValueError(f"device {name!r}: expected auto, cpu, cuda or cuda:N")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AMX tiles or AVX-512 BF16).

    Without either, bf16 autocast on a CPU is emulated and slower than fp32.
    """
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    for name in checks:
        check = getattr(torch.cpu, name, None)
        try:
            if check is not None and check():
                return True
        except RuntimeError:  # pragma: no cover - defensive: odd builds
            continue
    return False


def resolve_precision(
    device: torch.device, name: str = "auto", *, cpu_auto_bf16: bool = False
) -> Precision:
    """Pick the autocast dtype for ``name`` on ``device``.

    ``auto`` means fp16 on CUDA; on a CPU it means fp32, or bf16 where
    ``cpu_auto_bf16`` is set and the CPU has native bf16
    (:func:`cpu_has_native_bf16`). The runtime sets ``cpu_auto_bf16``: bf16
    was checked against fp32 for the bundled model on the Kvasir-SEG test
    split (docs/benchmarks.md). Training and evaluation keep fp32 for
    ``auto`` on a CPU.
    """
    if name == "fp32":
        return Precision(None)
    if name == "auto":
        if device.type == "cuda":
            return Precision(torch.float16)
        if cpu_auto_bf16 and cpu_has_native_bf16():
            return Precision(torch.bfloat16)
        return Precision(None)
    if name == "bf16":
        return Precision(torch.bfloat16)
    if name == "fp16":
        if device.type != "cuda":
            raise ValueError("precision fp16 needs CUDA; on CPU use bf16 or fp32")
        return Precision(torch.float16)
    raise ValueError(
        f"precision {name!r}: expected one of {', '.join(PRECISION_NAMES)}"
    )


def configure_backend(device: torch.device, *, threads: int | None = None) -> None:
    """Set process-wide backend flags once (cudnn autotuning, TF32, CPU threads)."""
    if threads:
        torch.set_num_threads(threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    log.debug("backend configured for %s (threads=%s)", device, torch.get_num_threads())


@contextlib.contextmanager
def autocast(device: torch.device, precision: Precision) -> Iterator[None]:
    """Autocast to ``precision`` on ``device``; a no-op for fp32."""
    if precision.dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=precision.dtype):
        yield


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so a CPU clock measures it; a no-op on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
