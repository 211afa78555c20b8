"""Segmenter: Frame -> Prediction (upload, resize, forward, sigmoid, resize back).

:func:`predict_probabilities` is the one inference path (training's test-set
evaluation calls it too). :class:`Segmenter` runs it on frames and chooses how
the network itself is executed, once, at construction:

=================  ==========================================================
option             what it does
=================  ==========================================================
precision          autocast dtype: fp32, bf16 (CPU with AMX/AVX-512, GPUs),
                   fp16 (CUDA)
channels_last      NHWC memory format (faster convolutions with bf16 on CPU
                   and on tensor cores)
compile            ``torch.compile`` with ``compile_mode`` (``default``,
                   ``reduce-overhead`` = CUDA graphs through Inductor,
                   ``max-autotune``); compiled at construction for the
                   ``batch_sizes`` that will be used, and cached on disk by
                   Inductor (``TORCHINDUCTOR_CACHE_DIR``), so a second start is
                   much faster
cuda_graphs        one captured CUDA graph per batch size, replayed with a
                   static input buffer (CUDA only; removes per-kernel launch
                   overhead for small batches)
backend ``onnx``   the network exported to ONNX (cached under
                   :func:`cache_dir`) and run by ONNX Runtime on the CPU;
                   needs the ``onnx`` extra, imported only when asked for
backend            OpenVINO on the CPU: the network converted to fp32 IR
``openvino``       (cached), or the model file's INT8 artefact
                   (:mod:`streamseg.backends.openvino`)
=================  ==========================================================

On CUDA, frames reach the device through reusable pinned host buffers (the
copy is asynchronous and no pinned memory is allocated per frame); every
later step (resize, sigmoid, resize back) runs on the inference device.
Compiled graphs and CUDA graphs have static shapes: a batch whose size was
not prepared is padded with zeros up to the next prepared size (the network
treats batch rows independently), so a short last batch of a file does not
trigger a recompilation.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from streamseg.device import Precision, autocast, synchronize
from streamseg.frames import Frame, Prediction
from streamseg.model import ModelSpec, load_model
from streamseg.transforms import resize, to_tensor

log = logging.getLogger(__name__)

Backend = Literal["torch", "onnx", "openvino"]
CompileMode = Literal[
    "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"
]
BACKENDS = ("torch", "onnx", "openvino")
COMPILE_MODES = (
    "default",
    "reduce-overhead",
    "max-autotune",
    "max-autotune-no-cudagraphs",
)
ONNX_OPSET = 18
ONNX_EXTRA_HINT = "pip install 'streamseg[onnx]' (onnxruntime, onnx, onnxscript)"
# Calls per prepared batch size at construction: the first compiles or captures,
# the second runs the compiled path once more (cudagraph trees record there).
WARM_UP_CALLS = 2

Runner = Callable[[torch.Tensor], torch.Tensor]
FP32 = Precision(None)


def predict_probabilities(
    network: nn.Module | Runner,
    images: torch.Tensor,
    input_hw: Sequence[int],
    precision: Precision = FP32,
) -> torch.Tensor:
    """Foreground probabilities at the images' own resolution.

    This is the single inference path: the runtime's :class:`Segmenter` and
    the training package's test-set evaluation both call it.

    Args:
        network: Maps (N, 3, h, w) RGB in [0, 1] to (N, 1, h, w) logits.
        images: (N, 3, H, W) float RGB in [0, 1], on the network's device.
        input_hw: Network input (height, width).
        precision: Autocast dtype; the sigmoid and resize back run in float32.

    Returns:
        (N, H, W) float32 probabilities in [0, 1], on the images' device.
    """
    height, width = images.shape[-2:]
    with autocast(images.device, precision):
        logits = network(resize(images, input_hw))
    return resize(logits.float().sigmoid(), (height, width))[:, 0]


class Segmenter:
    """Runs a trained network on frames.

    Args:
        network: A :class:`streamseg.model.SegmentationNetwork` (or compatible).
        spec: Its model card (input size, threshold).
        device: Where inference runs.
        precision: Autocast dtype (fp32, bf16 or fp16).
        channels_last: Use the NHWC memory format (faster convolutions on
            CPU with bf16 and on tensor-core GPUs).
        backend: ``torch``, ``onnx`` (ONNX Runtime, CPU, fp32 only) or
            ``openvino`` (CPU; fp32, or INT8 with ``int8``).
        compile: Run the network through ``torch.compile``.
        compile_mode: ``torch.compile`` mode.
        cuda_graphs: Capture and replay a CUDA graph per batch size (CUDA
            only; not together with ``compile``: use
            ``compile_mode="reduce-overhead"`` for both).
        batch_sizes: Batch sizes prepared at construction when a fast path
            needs it (compile, CUDA graphs): 1 for live sources and the file
            batch size. Smaller batches are padded up to a prepared size.
        int8: backend openvino: the model file's INT8 artefact (``.xml``),
            checked by :func:`streamseg.backends.openvino.choose_backend`;
            ``None``: fp32.

    Attributes:
        prepare_s: Seconds spent at construction on ONNX export/loading,
            compilation, graph capture and the warm-up calls (0 for eager).

    Raises:
        ValueError: An option this device or backend cannot honour, with the
            fix; or the ``onnx`` extra missing for ``backend="onnx"``.

    Example:
        >>> segmenter = Segmenter.from_file(
        ...     "model.safetensors", torch.device("cpu"), Precision(torch.bfloat16),
        ...     channels_last=True, compile=True, batch_sizes=(1, 4),
        ... )  # doctest: +SKIP
        >>> segmenter.describe(), round(segmenter.prepare_s)  # doctest: +SKIP
        ('bf16, channels_last, compiled (default)', 58)
    """

    def __init__(
        self,
        network: nn.Module,
        spec: ModelSpec,
        device: torch.device,
        precision: Precision = FP32,
        *,
        channels_last: bool = False,
        backend: Backend = "torch",
        compile: bool = False,
        compile_mode: CompileMode = "default",
        cuda_graphs: bool = False,
        batch_sizes: Sequence[int] = (1,),
        int8: str | Path | None = None,
    ) -> None:
        check_options(
            device,
            precision,
            backend=backend,
            compile=compile,
            compile_mode=compile_mode,
            cuda_graphs=cuda_graphs,
            batch_sizes=batch_sizes,
        )
        self.spec = spec
        self.device = device
        self.precision = precision
        self.backend = backend
        self.channels_last = channels_last and backend == "torch"
        self.compile_mode: str | None = compile_mode if compile else None
        self.cuda_graphs = cuda_graphs
        self.batch_sizes = tuple(sorted(set(batch_sizes)))
        self.int8 = Path(int8) if int8 is not None and backend == "openvino" else None
        network = network.to(device).eval()
        if self.channels_last:
            network = network.to(memory_format=torch.channels_last)
        self.network = network
        self._upload = FrameUploader(device)
        start_s = time.perf_counter()
        self._runner = self._make_runner(network)
        if self.compile_mode is not None or cuda_graphs:
            self._runner = PaddedBatches(self._runner, self.batch_sizes)
        # Compile, capture, and on CUDA let cudnn pick its kernels, now rather
        # than on the first frames (a live source would drop frames meanwhile).
        prepares = self._is_fast_path or device.type == "cuda"
        if self.backend in ("torch", "openvino") and prepares:
            self.warm_up(self.batch_sizes)
        self.prepare_s = time.perf_counter() - start_s if prepares else 0.0
        if prepares:
            log.info("prepared %s in %.1f s", self.describe(), self.prepare_s)

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        device: torch.device,
        precision: Precision = FP32,
        *,
        threshold: float | None = None,
        channels_last: bool = False,
        backend: Backend = "torch",
        compile: bool = False,
        compile_mode: CompileMode = "default",
        cuda_graphs: bool = False,
        batch_sizes: Sequence[int] = (1,),
        int8: str | Path | None = None,
    ) -> Segmenter:
        """Load a model file; ``threshold`` (if given) replaces the file's own."""
        network, spec = load_model(path)
        if threshold is not None:
            spec = dataclasses.replace(spec, threshold=threshold)
        return cls(
            network,
            spec,
            device,
            precision,
            channels_last=channels_last,
            backend=backend,
            compile=compile,
            compile_mode=compile_mode,
            cuda_graphs=cuda_graphs,
            batch_sizes=batch_sizes,
            int8=int8,
        )

    @property
    def _is_fast_path(self) -> bool:
        return (
            self.backend != "torch" or self.compile_mode is not None or self.cuda_graphs
        )

    def describe(self) -> str:
        """How the network runs, e.g. ``"bf16, channels_last, compiled (default)"``."""
        parts = [self.precision.name]
        if self.channels_last:
            parts.append("channels_last")
        if self.backend == "onnx":
            parts.append("ONNX Runtime")
        if self.backend == "openvino":
            parts = ["int8" if self.int8 is not None else "fp32", "OpenVINO"]
        if self.compile_mode is not None:
            parts.append(f"compiled ({self.compile_mode})")
        if self.cuda_graphs:
            parts.append("CUDA graphs")
        return ", ".join(parts)

    @torch.inference_mode()
    def __call__(self, frame: Frame) -> Prediction:
        return self.segment([frame])[0]

    @torch.inference_mode()
    def segment(self, frames: Sequence[Frame]) -> list[Prediction]:
        """Segment a batch of frames of one size (batched for throughput on files)."""
        if not frames:
            return []
        sizes = {frame.hw for frame in frames}
        if len(sizes) != 1:
            raise ValueError(
                f"a batch must hold frames of one size, got {sorted(sizes)}"
            )
        images = self._upload([frame.pixels for frame in frames])
        probabilities = self.probabilities(images)
        return [
            Prediction(frame, probabilities[i], self.spec.threshold)
            for i, frame in enumerate(frames)
        ]

    @torch.inference_mode()
    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """Probabilities for images already on the device (what :meth:`segment` runs).

        Args:
            images: (N, 3, H, W) float RGB in [0, 1] on ``self.device``; at
                ``spec.input_hw`` no resize happens (the model-only benchmark).

        Returns:
            (N, H, W) float32 probabilities on ``self.device``.
        """
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return predict_probabilities(
            self._run_network, images, self.spec.input_hw, self.precision
        )

    def _run_network(self, images: torch.Tensor) -> torch.Tensor:
        if self.compile_mode is not None or self.cuda_graphs:
            # One memory format for every call: static graphs guard on strides,
            # and a resize may hand back either format.
            memory_format = (
                torch.channels_last if self.channels_last else torch.contiguous_format
            )
            images = images.contiguous(memory_format=memory_format)
        return self._runner(images)

    @torch.inference_mode()
    def warm_up(self, batch_sizes: Sequence[int], calls: int = WARM_UP_CALLS) -> float:
        """Run random inputs at the network's input size, to compile, capture or tune.

        Returns:
            Seconds spent (the device synchronized).
        """
        height, width = self.spec.input_hw
        generator = torch.Generator(device="cpu").manual_seed(0)
        start_s = time.perf_counter()
        for size in sorted(set(batch_sizes)):
            # NHWC memory, as uploaded frames are (cudnn tunes per layout).
            images = torch.rand((size, height, width, 3), generator=generator)
            images = images.to(self.device).permute(0, 3, 1, 2)
            for _ in range(calls):
                self.probabilities(images)
        synchronize(self.device)
        return time.perf_counter() - start_s

    def _make_runner(self, network: nn.Module) -> Runner:
        if self.backend == "onnx":
            return OnnxRunner.for_network(network, self.spec)
        if self.backend == "openvino":
            from streamseg.backends.openvino import OpenVinoRunner

            if self.int8 is not None:
                return OpenVinoRunner.int8(self.int8)
            return OpenVinoRunner.fp32(network, self.spec)
        if self.cuda_graphs:
            return CudaGraphRunner(network, self.precision)
        if self.compile_mode is not None:
            return CompiledRunner(network, self.compile_mode, self.device)
        return network


def check_options(
    device: torch.device,
    precision: Precision,
    *,
    backend: str = "torch",
    compile: bool = False,
    compile_mode: str = "default",
    cuda_graphs: bool = False,
    batch_sizes: Sequence[int] = (1,),
) -> None:
    """Reject option combinations that cannot work, with the fix.

    Raises:
        ValueError: Names the option and what to set instead.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    if compile_mode not in COMPILE_MODES:
        raise ValueError(
            f"compile_mode {compile_mode!r}: expected one of {', '.join(COMPILE_MODES)}"
        )
    if not batch_sizes or min(batch_sizes) < 1:
        raise ValueError(f"batch_sizes: expected sizes >= 1, got {list(batch_sizes)}")
    if backend == "onnx":
        if device.type != "cpu":
            raise ValueError(
                f"backend onnx runs on the CPU, but the device is {device}; use "
                "backend torch on CUDA (fp16, cuda_graphs or compile)"
            )
        if precision.dtype is not None:
            raise ValueError(
                f"backend onnx runs the fp32 graph, but precision is {precision.name}; "
                "set precision fp32 (or auto)"
            )
        if compile or cuda_graphs:
            raise ValueError(
                "compile and cuda_graphs apply to backend torch; turn them off for "
                "backend onnx"
            )
    if backend == "openvino":
        if device.type != "cpu":
            raise ValueError(
                f"backend openvino runs on the CPU, but the device is {device}; use "
                "backend torch on CUDA"
            )
        if precision.dtype is not None:
            raise ValueError(
                f"backend openvino runs fp32 or the INT8 artefact, but precision is "
                f"{precision.name}; set precision fp32 (or auto)"
            )
        if compile or cuda_graphs:
            raise ValueError(
                "compile and cuda_graphs apply to backend torch; turn them off for "
                "backend openvino"
            )
    if cuda_graphs and compile:
        raise ValueError(
            "cuda_graphs and compile together: use compile with compile_mode "
            "reduce-overhead (Inductor's own CUDA graphs) or cuda_graphs alone"
        )
    if cuda_graphs and device.type != "cuda":
        raise ValueError(
            f"cuda_graphs needs a CUDA device, got {device}; turn it off on the CPU"
        )


class FrameUploader:
    """Copies batches of uint8 RGB frames to the device as float images.

    On CUDA the frames go through reusable pinned host buffers, so the copy
    is asynchronous and no pinned memory is allocated per frame: two buffers
    per batch shape alternate, and each is refilled only after its previous
    copy has finished (a CUDA event). On the CPU there is nothing to copy
    to: :func:`streamseg.transforms.to_tensor` is called exactly as the
    training evaluation calls it, so the two stay bit-identical.

    Args:
        device: Where the images go.
        staged: Use the reusable buffers (default: on CUDA only; tests turn
            them on for the CPU, unpinned).
    """

    SLOTS = 2
    MAX_SHAPES = 4

    def __init__(self, device: torch.device, *, staged: bool | None = None) -> None:
        self.device = device
        self.staged = device.type == "cuda" if staged is None else staged
        self.pinned = device.type == "cuda"
        self._slots: dict[tuple[int, ...], list[_Slot]] = {}
        self._turn = 0

    def __call__(self, pixels: Sequence[np.ndarray]) -> torch.Tensor:
        """Upload frames.

        Args:
            pixels: Frames of one size, each (H, W, 3) uint8 RGB.

        Returns:
            (N, 3, H, W) float32 in [0, 1] on the device; equal to
            ``to_tensor(np.stack(pixels))``.
        """
        if not self.staged:
            if len(pixels) == 1:
                return to_tensor(pixels[0], self.device)
            return to_tensor(np.stack(pixels), self.device)
        shape = (len(pixels), *pixels[0].shape)
        if pixels[0].dtype != np.uint8 or len(shape) != 4 or shape[-1] != 3:
            raise ValueError(
                "expected (H, W, 3) uint8 RGB frames, got shape "
                f"{pixels[0].shape} dtype {pixels[0].dtype}"
            )
        slot = self._slot(shape)
        if slot.copied is not None:
            slot.copied.synchronize()  # the last copy out of this buffer is done
        host = slot.buffer.numpy()
        for index, image in enumerate(pixels):
            host[index] = image
        if self.device.type == "cpu":
            # No copy: the float conversion below makes a new tensor, so the
            # buffer can be refilled as soon as this call returns.
            uploaded = slot.buffer
        else:
            uploaded = slot.buffer.to(self.device, non_blocking=self.pinned)
            if slot.copied is not None:
                slot.copied.record()
        # Same arithmetic as transforms.to_tensor.
        return uploaded.permute(0, 3, 1, 2).float().div_(255.0)

    def _slot(self, shape: tuple[int, ...]) -> _Slot:
        slots = self._slots.get(shape)
        if slots is None:
            if len(self._slots) >= self.MAX_SHAPES:  # frame sizes changed: start over
                self._slots.clear()
            slots = [self._new_slot(shape) for _ in range(self.SLOTS)]
            self._slots[shape] = slots
        self._turn = (self._turn + 1) % self.SLOTS
        return slots[self._turn]

    def _new_slot(self, shape: tuple[int, ...]) -> _Slot:
        buffer = torch.empty(shape, dtype=torch.uint8, pin_memory=self.pinned)
        copied = torch.cuda.Event() if self.device.type == "cuda" else None
        return _Slot(buffer, copied)


@dataclasses.dataclass(slots=True)
class _Slot:
    buffer: torch.Tensor
    copied: torch.cuda.Event | None


class PaddedBatches:
    """Pads a batch with zeros up to the smallest prepared size, then drops the padding.

    Static graphs (compiled without dynamic shapes, CUDA graphs) serve only
    the shapes they were built for; padding reuses them for smaller batches.
    A batch larger than every prepared size runs as it is.

    Args:
        run: Maps (N, 3, h, w) to (N, 1, h, w).
        sizes: Prepared batch sizes.
    """

    def __init__(self, run: Runner, sizes: Sequence[int]) -> None:
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


class OnnxRunner:
    """Runs the network's ONNX export with ONNX Runtime (CPU, fp32).

    Args:
        session: An ``onnxruntime.InferenceSession`` with one (N, 3, h, w)
            input and one (N, 1, h, w) output.
    """

    def __init__(self, session) -> None:
        self.session = session
        self.input_name = session.get_inputs()[0].name

    @classmethod
    def for_network(cls, network: nn.Module, spec: ModelSpec) -> OnnxRunner:
        """Export ``network`` (or reuse its cached export) and open a session.

        The session uses torch's CPU thread count, and its threads sleep
        rather than spin between runs, so decoding and encoding threads of
        the pipeline keep their cores.
        """
        ort = _import_onnxruntime()
        path = onnx_path(network, spec)
        if not path.exists():
            export_onnx(network, spec, path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
        return cls(session)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        array = images.detach().to("cpu", torch.float32).contiguous().numpy()
        (logits,) = self.session.run(None, {self.input_name: array})
        return torch.from_numpy(logits).to(images.device)


def _import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as error:
        raise ValueError(
            "backend onnx needs ONNX Runtime, which is not installed: "
            + ONNX_EXTRA_HINT
        ) from error
    return onnxruntime


def cache_dir() -> Path:
    """Where streamseg keeps derived files (ONNX exports).

    ``$STREAMSEG_CACHE_DIR``, else ``$XDG_CACHE_HOME/streamseg``, else
    ``~/.cache/streamseg``.
    """
    if os.environ.get("STREAMSEG_CACHE_DIR"):
        return Path(os.environ["STREAMSEG_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "streamseg"


def onnx_path(network: nn.Module, spec: ModelSpec) -> Path:
    """The cache path of ``network``'s ONNX export, named after its weights and spec.

    Any change of weights, spec, torch version or opset gives a new name, so a
    stale export is never used.
    """
    digest = hashlib.sha256()
    digest.update(spec.to_json().encode())
    digest.update(f"torch {torch.__version__} opset {ONNX_OPSET}".encode())
    for name, tensor in network.state_dict().items():
        digest.update(name.encode())
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    height, width = spec.input_hw
    name = f"{spec.architecture}-{spec.encoder_name}-{height}x{width}"
    return cache_dir() / "onnx" / f"{name}-{digest.hexdigest()[:16]}.onnx"


def export_onnx(network: nn.Module, spec: ModelSpec, path: str | Path) -> Path:
    """Export the network (fp32, dynamic batch) to ONNX, atomically.

    Input ``images`` (N, 3, h, w) float RGB in [0, 1] at ``spec.input_hw``;
    output ``logits`` (N, 1, h, w). Normalization is inside the graph.

    Raises:
        ValueError: The ``onnx`` extra (onnx, onnxscript) is missing.
    """
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as error:
        raise ValueError(
            f"exporting to ONNX needs onnx and onnxscript: {ONNX_EXTRA_HINT}"
        ) from error
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = spec.input_hw
    network = network.to("cpu", memory_format=torch.contiguous_format).eval()
    example = torch.rand((2, 3, height, width))
    start_s = time.perf_counter()
    handle, temporary = tempfile.mkstemp(
        prefix=path.stem, suffix=".onnx.tmp", dir=path.parent
    )
    os.close(handle)
    try:
        # The exporter narrates its steps on stdout and warns about internals;
        # neither is for our users (errors still raise).
        with (
            contextlib.redirect_stdout(io.StringIO()),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                network,
                (example,),
                temporary,
                input_names=["images"],
                output_names=["logits"],
                opset_version=ONNX_OPSET,
                dynamo=True,
                external_data=False,
                dynamic_shapes={"images": {0: torch.export.Dim("batch", min=1)}},
                verbose=False,
            )
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    log.info("exported %s in %.1f s", path, time.perf_counter() - start_s)
    return path
