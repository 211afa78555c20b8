"""The torch backend: the network run by PyTorch, eager, compiled or as CUDA graphs.

:class:`TorchRunner` picks the execution once, at construction:

* eager (the default): the ``nn.Module`` itself;
* ``compile``: :class:`CompiledRunner`, ``torch.compile`` with a
  :data:`CompileMode`, one static graph per prepared batch size;
* ``cuda_graphs``: :class:`CudaGraphRunner`, one captured CUDA graph per
  input shape, replayed through static buffers (CUDA only).

Static graphs serve only the shapes they were built for, so their batches
are padded up to a prepared size (:class:`PaddedBatches`) and handed over in
one memory format.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Literal, get_args

import torch
from torch import nn

from streamseg.device import Precision

log = logging.getLogger(__name__)

CompileMode = Literal[
    "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"
]
COMPILE_MODES: tuple[str, ...] = get_args(CompileMode)

Forward = Callable[[torch.Tensor], torch.Tensor]


class TorchRunner:
    """The network run by PyTorch (see the module docstring for the three ways).

    Args:
        network: Eval-mode network on the inference device, already in its
            memory format.
        device: Where it runs.
        precision: Autocast dtype (captured into CUDA graphs).
        channels_last: Static graphs get NHWC input (else NCHW).
        compile_mode: ``torch.compile`` mode; ``None``: not compiled.
        cuda_graphs: Capture and replay CUDA graphs.
        batch_sizes: Batch sizes the static graphs are built for; smaller
            batches are padded up to one of them.
    """

    name = "torch"

    def __init__(
        self,
        network: nn.Module,
        device: torch.device,
        precision: Precision,
        *,
        channels_last: bool = False,
        compile_mode: CompileMode | None = None,
        cuda_graphs: bool = False,
        batch_sizes: Sequence[int] = (1,),
    ) -> None:
        self.static = compile_mode is not None or cuda_graphs
        # One memory format for every call of a static graph: graphs guard on
        # strides, and a resize may hand back either format.
        self.memory_format = (
            torch.channels_last if channels_last else torch.contiguous_format
        )
        forward: Forward = network
        if cuda_graphs:
            forward = CudaGraphRunner(network, precision)
        elif compile_mode is not None:
            forward = CompiledRunner(network, compile_mode, device)
        if self.static:
            forward = PaddedBatches(forward, batch_sizes)
        self.forward = forward

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.static:
            images = images.contiguous(memory_format=self.memory_format)
        return self.forward(images)


class PaddedBatches:
    """Pads a batch with zeros up to the smallest prepared size, then drops the padding.

    Static graphs (compiled without dynamic shapes, CUDA graphs) serve only
    the shapes they were built for; padding reuses them for smaller batches.
    A batch larger than every prepared size runs as it is.

    Args:
        run: Maps (N, 3, h, w) to (N, 1, h, w).
        sizes: Prepared batch sizes.
    """

    def __init__(self, run: Forward, sizes: Sequence[int]) -> None:
        self.run = run
        self.sizes = tuple(sorted(set(sizes)))

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        count = images.shape[0]
        size = next((s for s in self.sizes if s >= count), count)
        if size == count:
            return self.run(images)
        padded = torch.zeros(
            (size, *images.shape[1:]), dtype=images.dtype, device=images.device
        ).contiguous(memory_format=_memory_format(images))
        padded[:count] = images
        return self.run(padded)[:count]


def _memory_format(images: torch.Tensor) -> torch.memory_format:
    if not images.is_contiguous() and images.is_contiguous(
        memory_format=torch.channels_last
    ):
        return torch.channels_last
    return torch.contiguous_format


class CompiledRunner:
    """``torch.compile`` of the network, without dynamic shapes (one graph per size).

    Inductor caches compiled kernels on disk (``TORCHINDUCTOR_CACHE_DIR``,
    default ``/tmp/torchinductor_$USER``), so a later start with the same
    model and settings compiles much faster.
    """

    def __init__(self, network: nn.Module, mode: str, device: torch.device) -> None:
        self.compiled = torch.compile(network, mode=mode, dynamic=False)
        # Inductor's CUDA graphs (cudagraph trees) reuse their output memory on
        # the next replay; marking each call as a new step tells them that the
        # previous outputs (already consumed) may be overwritten.
        self.marks_steps = device.type == "cuda" and mode in (
            "reduce-overhead",
            "max-autotune",
        )

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if torch.is_inference_mode_enabled() and not images.is_inference():
            # Graphs guard on the tensor kind: a normal tensor where inference
            # tensors were compiled for would compile a second graph.
            images = images.clone()
        if self.marks_steps:
            torch.compiler.cudagraph_mark_step_begin()
        return self.compiled(images)


class CudaGraphRunner:
    """Replays one captured CUDA graph per input shape, through static buffers.

    The output tensor is reused by the next replay of the same graph: callers
    consume it at once (:func:`predict_probabilities` applies the sigmoid,
    which makes a new tensor).

    Args:
        network: Eval-mode network on a CUDA device.
        precision: Autocast dtype captured into the graph.
    """

    WARM_UP_ITERATIONS = 3

    def __init__(self, network: nn.Module, precision: Precision) -> None:
        self.network = network
        self.precision = precision
        self._graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, torch.Tensor, ...]] = {}

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        key = (tuple(images.shape), images.dtype, _memory_format(images))
        entry = self._graphs.get(key)
        if entry is None:
            entry = self._capture(images)
            self._graphs[key] = entry
        graph, static_input, static_output = entry
        static_input.copy_(images)
        graph.replay()
        return static_output

    def _capture(self, images: torch.Tensor):
        device = images.device
        static_input = images.clone()
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        # Warm up on a side stream (cudnn autotuning, lazy allocations), as the
        # CUDA graph documentation prescribes; autocast's weight cache must be
        # off during capture, or the cached casts would escape the graph.
        with torch.cuda.stream(side), self._autocast():
            for _ in range(self.WARM_UP_ITERATIONS):
                self.network(static_input)
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph), self._autocast():
            static_output = self.network(static_input)
        log.debug("captured a CUDA graph for input %s", tuple(images.shape))
        return graph, static_input, static_output

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.precision.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=self.precision.dtype, cache_enabled=False)
