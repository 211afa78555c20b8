"""Which bundled model a live source runs on this machine, chosen once at start.

A live feed is useful only if the outline keeps up with it: a network that
takes longer than the source's frame interval drops frames and draws each
outline late, where the polyp was. When the model is left to the tool
(``model.path`` and ``model.input_hw`` unset) and ``model.live_fallback`` is
on, a live run on the CPU times the bundled default's network at start, at
batch 1 as the live loop runs it, while the source is already being read.
If it takes more than :data:`NETWORK_SHARE` of the source's frame interval,
the next candidate of :data:`LIVE_FALLBACKS` is timed, down to the last,
which runs whatever its time. The rest of a live frame (grab, smoothing,
drawing, display, the source's reader) shares the same cores, hence the
share (how it was set: docs/benchmarks.md).

Files never fall back: nothing is dropped, a slower run only takes longer.
``--model bundled:default`` keeps the default on a live source.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from streamseg.model import ModelFileError, resolve_model_path
from streamseg.segmenter import ModelSettings, Segmenter

#: Candidates after the bundled default, in order: (model path, network input).
LIVE_FALLBACKS: tuple[tuple[str, tuple[int, int] | None], ...] = (
    ("bundled:fast", None),
    ("bundled:fast", (256, 256)),
)
#: The largest share of the source's frame interval the network may take.
NETWORK_SHARE = 0.6
#: The rate assumed for a live source that does not declare one.
UNKNOWN_SOURCE_FPS = 25.0
#: Sources faster than this are judged at this rate (the newest frame wins
#: anyway: a 50 or 60 fps feed segmented 30 times a second is on time).
MAX_TARGET_FPS = 30.0
#: Untimed calls before the timed ones, and timed calls (the median counts).
WARM_CALLS = 2
TIMED_CALLS = 8

Build = Callable[[ModelSettings], Segmenter]
Measure = Callable[[Segmenter], float]


@dataclass(frozen=True)
class LiveModel:
    """The model a live run uses and why.

    Attributes:
        settings: The ``model`` section it runs with (``path`` and
            ``input_hw`` of the chosen candidate).
        segmenter: Ready to run.
        timed_ms: (what ran, network ms a frame) for each candidate timed.
        budget_ms: The most a frame's network may take for this source.
    """

    settings: ModelSettings
    segmenter: Segmenter
    timed_ms: tuple[tuple[str, float], ...]
    budget_ms: float

    @property
    def fell_back(self) -> bool:
        return len(self.timed_ms) > 1

    def describe(self) -> str:
        """One line for the log: what was timed and what runs."""
        timed = ", ".join(f"{name} {ms:.0f} ms" for name, ms in self.timed_ms)
        kept = self.timed_ms[-1][1] <= self.budget_ms
        verdict = "" if kept else " (none keeps up: the last runs)"
        return (
            f"live source: network time a frame on this machine {timed}; at most "
            f"{self.budget_ms:.0f} ms keeps up{verdict} -> {self.timed_ms[-1][0]}"
            + (
                " (its accuracy: docs/model-card.md; --model bundled:default keeps "
                "the default)"
                if self.fell_back
                else ""
            )
        )


def applies(settings: ModelSettings, device: torch.device) -> bool:
    """Whether a live run with these settings on ``device`` may fall back."""
    return (
        settings.live_fallback
        and settings.path is None
        and settings.input_hw is None
        and device.type == "cpu"
    )


def budget_ms(source_fps: float | None) -> float:
    """The most a frame's network may take for a source of this rate."""
    fps = source_fps if source_fps and source_fps > 0 else UNKNOWN_SOURCE_FPS
    return NETWORK_SHARE * 1000.0 / min(fps, MAX_TARGET_FPS)


@torch.inference_mode()
def network_ms(segmenter: Segmenter) -> float:
    """Median milliseconds of one live call (batch 1, at the network's input)."""
    height, width = segmenter.spec.input_hw
    generator = torch.Generator(device="cpu").manual_seed(0)
    images = torch.rand((1, height, width, 3), generator=generator)
    images = images.to(segmenter.device).permute(0, 3, 1, 2)  # NHWC, as uploaded
    for _ in range(WARM_CALLS):
        segmenter.probabilities(images)
    times_ms = []
    for _ in range(TIMED_CALLS):
        start_s = time.perf_counter()
        segmenter.probabilities(images)
        times_ms.append((time.perf_counter() - start_s) * 1000.0)
    return statistics.median(times_ms)


def _name(settings: ModelSettings) -> str:
    path = "bundled:default" if settings.path is None else str(settings.path)
    if settings.input_hw is None:
        return path
    return f"{path} at {settings.input_hw[1]}x{settings.input_hw[0]}"


def choose(
    settings: ModelSettings,
    *,
    source_fps: float | None,
    build: Build,
    measure: Measure = network_ms,
) -> LiveModel:
    """Time the default, then each fallback, until one keeps up (or the last).

    Args:
        settings: The ``model`` section (:func:`applies` is true for it).
        source_fps: The source's declared frame rate (``None``: unknown).
        build: Settings -> a ready segmenter (``Segmenter.from_settings`` for
            a live source).
        measure: Segmenter -> network milliseconds a frame.
    """
    limit_ms = budget_ms(source_fps)
    candidates = [settings]
    for path, input_hw in LIVE_FALLBACKS:
        try:
            resolve_model_path(path)
        except ModelFileError:  # a build without it
            continue
        candidates.append(
            dataclasses.replace(settings, path=Path(path), input_hw=input_hw)
        )
    timed: list[tuple[str, float]] = []
    for i, candidate in enumerate(candidates):
        segmenter = build(candidate)
        timed.append((_name(candidate), measure(segmenter)))
        if timed[-1][1] <= limit_ms or i == len(candidates) - 1:
            return LiveModel(candidate, segmenter, tuple(timed), limit_ms)
        del segmenter  # the next one replaces it
    raise AssertionError("unreachable: the last candidate always returns")
