"""The onnx backend: the network's ONNX export run by ONNX Runtime (CPU, fp32).

The export is cached under :func:`cache_dir`, named after the weights, the
spec, the torch version and the opset, so a stale export is never used.
ONNX Runtime, onnx and onnxscript (the ``onnx`` extra) are imported only
when this backend is asked for.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from streamseg.model import ModelSpec

log = logging.getLogger(__name__)

ONNX_OPSET = 18
ONNX_EXTRA_HINT = "pip install 'streamseg[onnx]' (onnxruntime, onnx, onnxscript)"


class OnnxRunner:
    """Runs the network's ONNX export with ONNX Runtime (CPU, fp32).

    Args:
        session: An ``onnxruntime.InferenceSession`` with one (N, 3, h, w)
            input and one (N, 1, h, w) output.
    """

    name = "ONNX Runtime"

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
    versions = f"torch {torch.__version__} opset {ONNX_OPSET}"
    return network_cache_path(network, spec, "onnx", versions, ".onnx")


def network_cache_path(
    network: nn.Module, spec: ModelSpec, folder: str, versions: str, suffix: str
) -> Path:
    """``cache_dir()/folder/<arch>-<encoder>-<h>x<w>-<digest><suffix>``.

    The digest covers the spec, ``versions`` (the converter's versions) and
    every weight, so a converted network is reused only while all are the same.
    """
    digest = hashlib.sha256()
    digest.update(spec.to_json().encode())
    digest.update(versions.encode())
    for name, tensor in network.state_dict().items():
        digest.update(name.encode())
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    height, width = spec.input_hw
    name = f"{spec.architecture}-{spec.encoder_name}-{height}x{width}"
    return cache_dir() / folder / f"{name}-{digest.hexdigest()[:16]}{suffix}"


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
