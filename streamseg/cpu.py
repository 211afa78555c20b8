"""Facts about the CPU that decide the fast paths: model name and ISA flags.

Read once from ``/proc/cpuinfo`` (Linux); elsewhere the model comes from
:func:`platform.processor` and the flags are unknown (all ``False``).
"""

from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
# Flags reported by bench and used to explain backend choices.
#   amx: AMX tiles (Sapphire Rapids and later): bf16/int8 matrix units.
#   avx512_bf16: AVX-512 bf16 dot products (Cooper Lake, Sapphire Rapids, Zen 4).
#   avx512_vnni: AVX-512 int8 dot products (Cascade Lake and later).
FLAGS = {"amx": "amx_tile", "avx512_bf16": "avx512_bf16", "avx512_vnni": "avx512_vnni"}


@dataclass(frozen=True)
class CpuInfo:
    """The CPU this process runs on.

    Attributes:
        model: Marketing name, e.g. ``Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz``.
        logical_cpus: Logical CPUs this process may run on.
        amx: AMX tiles present.
        avx512_bf16: AVX-512 BF16 present.
        avx512_vnni: AVX-512 VNNI present.
    """

    model: str
    logical_cpus: int
    amx: bool
    avx512_bf16: bool
    avx512_vnni: bool

    def flags(self) -> dict[str, bool]:
        """``{"amx": ..., "avx512_bf16": ..., "avx512_vnni": ...}``."""
        return {name: getattr(self, name) for name in FLAGS}

    def describe(self) -> str:
        """One line, e.g. ``Intel Xeon ... (2 CPUs; amx no, avx512_bf16 yes, ...)``."""
        flags = ", ".join(
            f"{name} {'yes' if value else 'no'}" for name, value in self.flags().items()
        )
        return f"{self.model} ({self.logical_cpus} CPUs; {flags})"


def parse_cpuinfo(text: str, logical_cpus: int) -> CpuInfo:
    """Build a :class:`CpuInfo` from the text of ``/proc/cpuinfo``."""
    model = ""
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    present = {name: flag in flags for name, flag in FLAGS.items()}
    return CpuInfo(
        model or platform.processor() or "unknown CPU", logical_cpus, **present
    )


@functools.cache
def cpu_info() -> CpuInfo:
    """The CPU of this machine (read once per process)."""
    try:
        logical = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        logical = os.cpu_count() or 1
    try:
        text = CPUINFO.read_text(encoding="utf-8", errors="replace")
    except OSError:  # pragma: no cover - non-Linux
        text = ""
    return parse_cpuinfo(text, logical)
