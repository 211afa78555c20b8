"""Runners: how the network's forward pass is executed, one small class per backend.

A :class:`~streamseg.segmenter.Segmenter` does everything around the
network (upload, resize, sigmoid, resize back, batching) and hands the
forward pass itself to a runner chosen once, at construction, from
``model.backend``:

============  ====================================================  ==================
backend       runner                                                what runs
============  ====================================================  ==================
``torch``     :class:`~streamseg.backends.torch.TorchRunner`        eager,
                                                                    ``torch.compile``
                                                                    or CUDA graphs
``onnx``      :class:`~streamseg.backends.onnx.OnnxRunner`          ONNX Runtime, CPU,
                                                                    fp32 (``onnx``
                                                                    extra)
``openvino``  :class:`~streamseg.backends.openvino.OpenVinoRunner`  OpenVINO, CPU:
                                                                    fp32 IR or the
                                                                    model's INT8
                                                                    artefact
============  ====================================================  ==================

The ``model.backend`` setting also takes ``auto`` (:data:`BackendSetting`),
resolved once, before a runner is built, by
:func:`streamseg.backends.openvino.choose_backend`.

The runner interface (:class:`Runner`) is deliberately small:

* ``runner(images) -> logits``: ``images`` is an (N, 3, h, w) float tensor,
  RGB in [0, 1], at the network's input size ``spec.input_hw``, on the
  segmenter's device (any memory format); the result is (N, 1, h, w) logits
  (any float dtype) on the same device. Normalization is inside the network.
  Called under ``torch.inference_mode`` and, for the torch backend, under
  autocast to the segmenter's precision.
* ``runner.name``: a short label for logs and reports (``"torch"``,
  ``"ONNX Runtime"``, ``"OpenVINO"``).

A backend module is imported only when its backend is asked for, and its
optional packages only inside the runner's constructor, so the error names
the extra to install.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Protocol, get_args

if TYPE_CHECKING:
    import torch

Backend = Literal["torch", "onnx", "openvino"]
BACKENDS: tuple[str, ...] = get_args(Backend)
# The ``model.backend`` setting: a backend, or ``auto`` (resolved at the edge).
BackendSetting = Literal["auto", Backend]
BACKEND_SETTINGS: tuple[str, ...] = get_args(BackendSetting)


class Runner(Protocol):
    """Runs the network: (N, 3, h, w) float RGB in [0, 1] -> (N, 1, h, w) logits."""

    name: str

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...
