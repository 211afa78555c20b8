"""OpenVINO backend (CPU): the network in fp32, or its INT8 artefact.

fp32: the network is converted with :func:`openvino.convert_model`
(normalization is its first layer, so the graph takes RGB in [0, 1]) with a
dynamic batch dimension and a static ``input_hw``, saved as IR (uncompressed
fp32 weights) under :func:`streamseg.backends.onnx.cache_dir` and reused while the
weights, spec and OpenVINO version stay the same.

INT8: an IR written by ``python -m training quantize`` beside the model file
(``<stem>.int8.xml``, ``<stem>.int8.bin``, ``<stem>.int8.json``). The JSON
records the sha256 of the ``.safetensors`` file it was made from; a runtime
given another model file refuses the artefact (:class:`Int8ArtefactError`).
Quantization itself (NNCF) lives in the training package: the runtime never
calibrates.

Both run with ``INFERENCE_PRECISION_HINT=f32``: on CPUs with native bf16
OpenVINO would otherwise run the float layers in bf16, which is not what was
validated. Threads: torch's thread count.

Streams: with one stream (latency hint) every call runs on all the threads,
which must meet after every layer: on a CPU shared with decoding, drawing
and encoding, one preempted thread stalls the others. With ``streams`` > 1
(throughput hint) the threads are split between independent streams; a batch
is split across them and runs in parallel, and concurrent calls (the
pipeline keeps ``streams`` calls in flight) each get their own. A preempted
thread then delays only its own part (docs/benchmarks.md). A process that
has run streams should not fork afterwards (a training run with DataLoader
workers after it crashed in the test suite): ``streamseg batch`` spawns its
workers, and the runtime never trains.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import logging
import os
import queue
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from streamseg.backends import Backend
from streamseg.model import ModelSpec, file_sha256

log = logging.getLogger(__name__)

OPENVINO_EXTRA_HINT = "pip install 'streamseg[openvino]' (openvino)"
QUANTIZE_HINT = "python -m training quantize --model MODEL --data DATA_ROOT"
PROVENANCE_SCHEMA = "streamseg-int8/1"
INT8_SUFFIX = ".int8"
# model.quantized: auto = the INT8 artefact where one matching the model file
# exists (and the backend is openvino, or auto on a CPU); True = require it;
# False = never.
Quantized = Literal["auto", True, False]
QUANTIZED_OPTIONS: tuple[Any, ...] = ("auto", True, False)


class Int8ArtefactError(ValueError):
    """An INT8 artefact is missing, unreadable or belongs to another model file."""


def available() -> bool:
    """Whether the ``openvino`` package is installed (nothing is imported)."""
    return importlib.util.find_spec("openvino") is not None


def import_openvino():
    """Import ``openvino``, or fail with the install command.

    Raises:
        ValueError: OpenVINO is not installed.
    """
    try:
        import openvino
    except ImportError as error:
        raise ValueError(
            "backend openvino needs OpenVINO, which is not installed: "
            + OPENVINO_EXTRA_HINT
        ) from error
    return openvino


# --- the INT8 artefact ------------------------------------------------------


@dataclass(frozen=True)
class Int8Paths:
    """The three files of an INT8 artefact, beside the model file."""

    xml: Path
    bin: Path
    provenance: Path

    def exist(self) -> bool:
        return self.xml.is_file() and self.bin.is_file() and self.provenance.is_file()

    def any_exist(self) -> bool:
        return self.xml.exists() or self.bin.exists() or self.provenance.exists()


def int8_paths(model_path: str | Path) -> Int8Paths:
    """``model.safetensors`` -> ``model.int8.xml``, ``.int8.bin``, ``.int8.json``."""
    path = Path(model_path)
    stem = path.with_suffix("").name + INT8_SUFFIX
    return Int8Paths(
        path.with_name(stem + ".xml"),
        path.with_name(stem + ".bin"),
        path.with_name(stem + ".json"),
    )


def stems_sha256(stems: list[str] | tuple[str, ...]) -> str:
    """Hex sha256 of the sorted stems, one per line (the calibration set's identity)."""
    return hashlib.sha256("".join(f"{s}\n" for s in sorted(stems)).encode()).hexdigest()


def read_provenance(model_path: str | Path) -> dict[str, Any]:
    """The provenance of ``model_path``'s INT8 artefact, checked against the file.

    Raises:
        Int8ArtefactError: The artefact is incomplete or unreadable, or was
            made from another model file (one line, with the fix).
    """
    paths = int8_paths(model_path)
    fix = f"rebuild it with {QUANTIZE_HINT.replace('MODEL', str(model_path))}"
    if not paths.exist():
        files = (paths.xml, paths.bin, paths.provenance)
        missing = [p.name for p in files if not p.is_file()]
        raise Int8ArtefactError(
            f"{paths.xml.parent}: INT8 artefact incomplete ({', '.join(missing)} "
            f"missing); {fix}"
        )
    try:
        provenance = json.loads(paths.provenance.read_text(encoding="utf-8"))
        expected = provenance["model_sha256"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise Int8ArtefactError(
            f"{paths.provenance}: unreadable INT8 provenance ({error}); {fix}"
        ) from None
    actual = file_sha256(model_path)
    if expected != actual:
        raise Int8ArtefactError(
            f"{paths.xml}: INT8 artefact was made from another model file "
            f"(sha256 {str(expected)[:12]}, {Path(model_path).name} is "
            f"{actual[:12]}); {fix}, or set model.quantized=false"
        )
    return provenance


# --- choosing the backend ---------------------------------------------------


@dataclass(frozen=True)
class BackendChoice:
    """What ``model.backend`` / ``model.quantized`` resolved to.

    Attributes:
        backend: ``torch``, ``onnx`` or ``openvino``.
        int8: The INT8 artefact's XML (openvino only), or ``None`` for fp32.
        reason: Why, for the log.
    """

    backend: Backend
    int8: Path | None
    reason: str


def choose_backend(
    backend: str,
    quantized: Any,
    device: torch.device,
    model_path: str | Path,
    *,
    precision: str = "auto",
    torch_options: bool = False,
) -> BackendChoice:
    """Resolve ``auto`` backends and quantization, once, at the edge.

    ``backend auto``: OpenVINO with the INT8 artefact where the device is a
    CPU, OpenVINO is installed, ``quantized`` is not False, the model file
    has an INT8 artefact, and neither a torch precision (bf16, fp16) nor a
    torch option (``torch_options``: compile, CUDA graphs) was asked for;
    else torch (the previous default).
    ``backend openvino``: INT8 when ``quantized`` is True, or ``auto`` and an
    artefact exists; else fp32.

    Raises:
        Int8ArtefactError: An artefact exists but belongs to another model
            file, or ``quantized`` is True and there is none.
        ValueError: ``quantized`` True with another backend than openvino/auto.
    """
    if quantized not in QUANTIZED_OPTIONS:
        raise ValueError(f"quantized {quantized!r}: expected auto, true or false")
    paths = int8_paths(model_path)
    if backend not in ("auto", "openvino"):
        if quantized is True:
            raise ValueError(
                f"quantized true runs the OpenVINO INT8 artefact, but backend is "
                f"{backend}; set backend openvino (or auto)"
            )
        return BackendChoice(backend, None, f"backend {backend} as configured")
    wants_int8 = quantized is True or (quantized == "auto" and paths.any_exist())
    if backend == "auto":
        if device.type != "cpu":
            return BackendChoice("torch", None, f"backend auto on {device}: torch")
        if precision not in ("auto", "fp32") or torch_options:
            return BackendChoice(
                "torch", None, "backend auto: torch (precision or options of torch)"
            )
        if not available():
            return BackendChoice(
                "torch", None, "backend auto: OpenVINO not installed, torch"
            )
        if not wants_int8:
            why = "quantized false" if quantized is False else "no INT8 artefact"
            return BackendChoice("torch", None, f"backend auto: {why}, torch")
    if not wants_int8:
        return BackendChoice("openvino", None, "backend openvino, fp32")
    if quantized is True and not paths.any_exist():
        raise Int8ArtefactError(
            f"{paths.xml}: no INT8 artefact for {Path(model_path).name}; make it "
            f"with {QUANTIZE_HINT.replace('MODEL', str(model_path))}, or set "
            "model.quantized=auto"
        )
    provenance = read_provenance(model_path)  # raises on a foreign artefact
    agreement = provenance.get("validation", {}).get("mask_agreement_pct")
    detail = f", val mask agreement {agreement:.2f} %" if agreement else ""
    return BackendChoice(
        "openvino",
        paths.xml,
        f"backend {backend}: OpenVINO INT8 ({paths.xml.name}, preset "
        f"{provenance.get('preset', '?')}{detail})",
    )


# --- fp32 conversion --------------------------------------------------------


def ir_path(network: nn.Module, spec: ModelSpec) -> Path:
    """Cache path of the fp32 IR, named after weights, spec and versions."""
    from streamseg.backends.onnx import network_cache_path

    openvino = import_openvino()
    versions = f"torch {torch.__version__} ov {openvino.__version__}"
    return network_cache_path(network, spec, "openvino", versions, ".xml")


def convert(network: nn.Module, spec: ModelSpec):
    """``openvino.convert_model`` of the network: input (N, 3, h, w), N dynamic.

    Returns:
        An ``openvino.Model`` taking float RGB in [0, 1] at ``spec.input_hw``
        and giving (N, 1, h, w) logits.
    """
    openvino = import_openvino()
    height, width = spec.input_hw
    network = network.to("cpu", memory_format=torch.contiguous_format).eval()
    example = torch.rand((1, 3, height, width))
    # The tracer warns about internals that are not for our users.
    with (
        contextlib.redirect_stdout(io.StringIO()),
        warnings.catch_warnings(),
        torch.no_grad(),
    ):
        warnings.simplefilter("ignore")
        model = openvino.convert_model(
            network, example_input=example, input=[(-1, 3, height, width)]
        )
    return model


def save_ir(model, path: str | Path) -> Path:
    """Write an ``openvino.Model`` as IR (``.xml`` + ``.bin``) atomically, fp32 kept."""
    openvino = import_openvino()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=path.stem, dir=path.parent))
    try:
        staged = folder / path.name
        openvino.save_model(model, str(staged), compress_to_fp16=False)
        # .bin first: a reader that finds the .xml finds its weights.
        os.replace(staged.with_suffix(".bin"), path.with_suffix(".bin"))
        os.replace(staged, path)
    finally:
        for leftover in folder.glob("*"):
            leftover.unlink()
        folder.rmdir()
    return path


def fp32_ir(network: nn.Module, spec: ModelSpec) -> Path:
    """The cached fp32 IR of ``network``, converted now if missing."""
    path = ir_path(network, spec)
    if not (path.is_file() and path.with_suffix(".bin").is_file()):
        start_s = time.perf_counter()
        save_ir(convert(network, spec), path)
        log.info(
            "converted to OpenVINO in %.1f s -> %s", time.perf_counter() - start_s, path
        )
    return path


# --- running ----------------------------------------------------------------


def compile_ir(
    model,
    threads: int | None = None,
    streams: int = 1,
    input_hw: tuple[int, int] | None = None,
):
    """Compile for the CPU: f32 float layers, ``threads`` threads, ``streams`` streams.

    Args:
        model: An IR ``.xml`` path or an ``openvino.Model``.
        threads: Inference threads in all (default: torch's thread count).
        streams: 1: the latency hint (every call on all the threads); more:
            the throughput hint with that many streams sharing the threads.
        input_hw: Reshape the input to (height, width) first, the batch
            dimension kept (``None``: the IR's own size).

    Raises:
        ValueError: ``streams`` below 1 or above the thread count.
    """
    openvino = import_openvino()
    threads = int(threads or torch.get_num_threads())
    if not 1 <= streams <= threads:
        raise ValueError(
            f"streams: expected 1 to the thread count ({threads}), got {streams}"
        )
    if isinstance(model, (str, Path)):
        model = str(model)
    if input_hw is not None:
        model = reshaped(model, input_hw)
    config: dict[str, Any] = {
        "PERFORMANCE_HINT": "LATENCY" if streams == 1 else "THROUGHPUT",
        "INFERENCE_PRECISION_HINT": "f32",
        "INFERENCE_NUM_THREADS": threads,
    }
    if streams > 1:
        config["NUM_STREAMS"] = streams
    return openvino.Core().compile_model(model, "CPU", config)


def reshaped(model, input_hw: tuple[int, int]):
    """``model`` (an IR path or ``openvino.Model``) taking (N, 3, *input_hw).

    The networks are fully convolutional, so the same weights run at any size
    that is a multiple of 32, INT8 included (its quantization ranges hold at
    every position). The batch dimension stays as it is (dynamic in our IRs).
    """
    openvino = import_openvino()
    if isinstance(model, str):
        model = openvino.Core().read_model(model)
    shape = model.input(0).get_partial_shape()
    height, width = input_hw
    if shape[2] != height or shape[3] != width:
        model.reshape({0: openvino.PartialShape([shape[0], shape[1], height, width])})
    return model


class OpenVinoRunner:
    """Runs a compiled OpenVINO model: (N, 3, h, w) float -> (N, 1, h, w) logits.

    Thread-safe: up to ``streams`` calls may run at once (each takes its own
    infer requests from a pool). A call splits its batch into at most
    ``streams`` parts that run in parallel, one per stream.

    Args:
        compiled: An ``openvino.CompiledModel`` with one input and one output.
        kind: ``fp32`` or ``int8`` (for descriptions).
        streams: The streams it was compiled with (:func:`compile_ir`).
    """

    name = "OpenVINO"

    def __init__(self, compiled, kind: str, streams: int = 1) -> None:
        if streams < 1:
            raise ValueError(f"streams: expected >= 1, got {streams}")
        self.compiled = compiled
        self.kind = kind
        self.streams = streams
        # Enough requests for ``streams`` concurrent calls of ``streams`` parts.
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        for _ in range(streams * streams):
            self._requests.put(compiled.create_infer_request())

    @classmethod
    def fp32(
        cls,
        network: nn.Module,
        spec: ModelSpec,
        threads: int | None = None,
        streams: int = 1,
    ) -> OpenVinoRunner:
        """Convert ``network`` (or reuse its cached IR) and compile it."""
        compiled = compile_ir(fp32_ir(network, spec), threads, streams)
        return cls(compiled, "fp32", streams)

    @classmethod
    def int8(
        cls,
        xml: str | Path,
        threads: int | None = None,
        streams: int = 1,
        input_hw: tuple[int, int] | None = None,
    ) -> OpenVinoRunner:
        """Compile an INT8 artefact (checked by :func:`choose_backend` first).

        ``input_hw``: run it at this size instead of the artefact's own.
        """
        return cls(compile_ir(xml, threads, streams, input_hw), "int8", streams)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        array = images.detach().to("cpu", torch.float32).contiguous().numpy()
        parts = np.array_split(array, min(self.streams, len(array)))
        requests = [self._requests.get() for _ in parts]
        try:
            for request, part in zip(requests, parts, strict=True):
                request.start_async({0: part})
            # A request reuses its output buffer on the next call: copy out.
            outputs = []
            for request in requests:
                request.wait()
                outputs.append(request.get_output_tensor(0).data.copy())
        finally:
            for request in requests:
                request.wait()  # none may go back to the pool still running
                self._requests.put(request)
        logits = torch.from_numpy(np.concatenate(outputs))
        return logits.to(images.device)
