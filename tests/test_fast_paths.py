"""Segmenter fast paths: staging buffers, static-batch padding, ONNX, compile, CUDA.

CPU tests run everywhere; ``@pytest.mark.gpu`` tests (fp16, CUDA graphs,
compile reduce-overhead, pinned buffers) are skipped without CUDA and run by
``benchmarks/gpu_check.sh`` on a GPU machine.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
from conftest import FIXTURES
from stream_media import moving_disc, tiny_model_file, write_video

from streamseg.app import StreamConfig, run
from streamseg.backends import onnx as onnx_backend
from streamseg.backends.onnx import onnx_path
from streamseg.backends.torch import PaddedBatches
from streamseg.config import ConfigError, load_config
from streamseg.device import Precision
from streamseg.frames import Frame
from streamseg.model import build_network
from streamseg.segmenter import ModelSettings, Segmenter, check_options
from streamseg.sources import SourceSettings
from streamseg.transforms import to_tensor, upload
from streamseg.uploader import FrameUploader

CPU = torch.device("cpu")
FP32 = Precision(None)


@pytest.fixture
def network(tiny_spec):
    torch.manual_seed(0)
    return build_network(tiny_spec).eval()


def _frames(count: int, hw=(50, 70), seed: int = 0) -> list[Frame]:
    rng = np.random.default_rng(seed)
    return [
        Frame(i, i / 25, rng.integers(0, 256, (*hw, 3), dtype=np.uint8))
        for i in range(count)
    ]


def _probabilities(segmenter: Segmenter, frames: list[Frame]) -> torch.Tensor:
    return torch.stack([p.probabilities for p in segmenter.segment(frames)]).cpu()


# --- host staging buffers -----------------------------------------------------


def test_uploader_matches_to_tensor_and_reuses_its_buffers():
    uploader = FrameUploader(CPU, staged=True)  # the CUDA path, unpinned
    batches = [[f.pixels for f in _frames(3, seed=seed)] for seed in range(4)]
    results = [uploader(batch) for batch in batches]

    for batch, result in zip(batches, results, strict=True):
        expected = upload(np.stack(batch), CPU)
        assert torch.equal(result, expected)  # refills never corrupt earlier results
        assert result.stride() == expected.stride()
    assert len(uploader._slots) == 1
    assert len(uploader._slots[(3, 50, 70, 3)]) == FrameUploader.SLOTS


def test_uploader_keeps_few_shapes_and_rejects_non_rgb():
    uploader = FrameUploader(CPU, staged=True)
    for count in range(1, FrameUploader.MAX_SHAPES + 3):
        uploader([f.pixels for f in _frames(count)])
    assert len(uploader._slots) <= FrameUploader.MAX_SHAPES
    with pytest.raises(ValueError, match="uint8 RGB"):
        uploader([np.zeros((4, 4, 3), np.float32)])


def test_uploader_on_the_cpu_is_upload_itself():
    frames = [f.pixels for f in _frames(2)]
    uploader = FrameUploader(CPU)
    assert not uploader.staged
    single, batch = uploader(frames[:1]), uploader(frames)
    assert single.dtype == torch.uint8
    assert torch.equal(single, upload(frames[0], CPU))
    assert single.stride() == upload(frames[0], CPU).stride()  # bit parity
    assert torch.equal(batch, upload(np.stack(frames), CPU))
    assert torch.equal(single.float() / 255, to_tensor(frames[0], CPU))


# --- static batch padding -----------------------------------------------------


@pytest.mark.parametrize(
    ("count", "sizes", "seen"),
    [(1, (1, 4), 1), (2, (1, 4), 4), (3, (1, 4), 4), (4, (1, 4), 4), (6, (1, 4), 6)],
)
def test_padded_batches_pad_to_the_next_prepared_size(count, sizes, seen):
    shapes = []

    def runner(images):
        shapes.append(images.shape[0])
        return images[:, :1] * 2.0

    images = torch.rand(count, 3, 8, 8)
    out = PaddedBatches(runner, sizes)(images)

    assert shapes == [seen]
    assert torch.equal(out, images[:, :1] * 2.0)


def test_padded_batches_keep_channels_last():
    formats = []

    def runner(images):
        formats.append(images.is_contiguous(memory_format=torch.channels_last))
        return images[:, :1]

    images = torch.rand(3, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    PaddedBatches(runner, (4,))(images)
    assert formats == [True]


# --- option checks ------------------------------------------------------------


@pytest.mark.parametrize(
    ("device", "precision", "options", "message"),
    [
        ("cpu", FP32, {"backend": "tensorrt"}, "backend 'tensorrt'"),
        ("cpu", FP32, {"compile_mode": "fast"}, "compile_mode 'fast'"),
        ("cpu", FP32, {"batch_sizes": (0,)}, "batch_sizes"),
        ("cpu", FP32, {"cuda_graphs": True}, "cuda_graphs needs a CUDA device"),
        ("cpu", Precision(torch.bfloat16), {"backend": "onnx"}, "fp32 graph"),
        ("cpu", FP32, {"backend": "onnx", "compile": True}, "apply to backend torch"),
        ("meta", FP32, {"backend": "onnx"}, "runs on the CPU"),
    ],
)
def test_impossible_options_are_refused_with_the_fix(
    device, precision, options, message
):
    with pytest.raises(ValueError, match=message):
        check_options(torch.device(device), precision, **options)


def test_cuda_graphs_and_compile_together_are_refused():
    with pytest.raises(ValueError, match="reduce-overhead"):
        check_options(CPU, FP32, cuda_graphs=True, compile=True)


def test_model_settings_take_the_fast_path_options():
    config = load_config(
        StreamConfig,
        None,
        [
            "model.backend=onnx",
            "model.compile=true",
            "model.compile_mode=reduce-overhead",
            "model.cuda_graphs=false",
        ],
    )
    assert (config.model.backend, config.model.compile) == ("onnx", True)
    assert config.model.compile_mode == "reduce-overhead"
    with pytest.raises(ConfigError, match="backend"):
        load_config(StreamConfig, None, ["model.backend=tensorrt"])


def test_run_turns_an_impossible_option_into_a_config_error(tiny_spec, tmp_path):
    clip = write_video(tmp_path / "c.mp4", [f.pixels for f in moving_disc(2)])
    config = StreamConfig(
        source=SourceSettings(uri=str(clip)),
        model=ModelSettings(
            path=tiny_model_file(tiny_spec, tmp_path), device="cpu", cuda_graphs=True
        ),
    )
    with pytest.raises(ConfigError, match="cuda_graphs"):
        run(config)


# --- bf16 / channels_last on the CPU ------------------------------------------


def test_bf16_channels_last_stays_close_to_fp32(network, tiny_spec):
    frames = _frames(2)
    reference = _probabilities(Segmenter(network, tiny_spec, CPU), frames)
    fast = Segmenter(
        copy.deepcopy(network),
        tiny_spec,
        CPU,
        Precision(torch.bfloat16),
        channels_last=True,
    )
    assert fast.describe() == "bf16, channels_last"
    assert (_probabilities(fast, frames) - reference).abs().max() < 0.05


# --- ONNX Runtime -------------------------------------------------------------


@pytest.fixture
def onnx_cache(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    monkeypatch.setenv("STREAMSEG_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_onnx_backend_matches_eager_and_reuses_its_export(
    network, tiny_spec, onnx_cache, monkeypatch
):
    frames = _frames(3)
    reference = _probabilities(Segmenter(network, tiny_spec, CPU), frames)

    onnx = Segmenter(network, tiny_spec, CPU, backend="onnx")
    assert onnx.describe() == "fp32, ONNX Runtime"
    assert onnx.prepare_s > 0
    assert (_probabilities(onnx, frames) - reference).abs().max() < 1e-4
    assert list((onnx_cache / "onnx").glob("*.onnx")) == [onnx_path(network, tiny_spec)]

    def no_export(*args, **kwargs):
        raise AssertionError("exported again although the cached file fits")

    monkeypatch.setattr(onnx_backend, "export_onnx", no_export)
    again = Segmenter(network, tiny_spec, CPU, backend="onnx")
    assert (_probabilities(again, frames[:1]) - reference[:1]).abs().max() < 1e-4


def test_onnx_cache_name_follows_the_weights(network, tiny_spec, onnx_cache):
    before = onnx_path(network, tiny_spec)
    with torch.no_grad():
        next(network.parameters()).add_(1e-3)
    assert onnx_path(network, tiny_spec) != before
    other = dataclasses.replace(tiny_spec, input_hw=(96, 96))
    assert "96x96" in onnx_path(network, other).name


# --- torch.compile ------------------------------------------------------------


@pytest.mark.slow
def test_compiled_segmenter_matches_eager_without_recompiling_short_batches(
    network, tiny_spec
):
    frames = _frames(3)
    reference = _probabilities(Segmenter(network, tiny_spec, CPU), frames)
    torch._dynamo.reset()
    compiled = Segmenter(network, tiny_spec, CPU, compile=True, batch_sizes=(1, 4))
    assert compiled.describe() == "fp32, compiled (default)"
    assert compiled.prepare_s > 0
    # A batch of 3 is padded to the prepared 4: no new graph may be compiled.
    with torch._dynamo.config.patch(error_on_recompile=True):
        result = _probabilities(compiled, frames)
        _probabilities(compiled, frames[:1])
    assert (result - reference).abs().max() < 1e-4


# --- CUDA (skipped without a GPU) ---------------------------------------------


def _kvasir_frames() -> list[Frame]:
    import cv2

    paths = sorted((FIXTURES / "kvasir" / "images").glob("*.jpg"))
    return [
        Frame(i, 0.0, cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB))
        for i, p in enumerate(paths)
    ]


@pytest.mark.gpu
def test_fp16_agrees_with_fp32_on_real_images(network, tiny_spec):
    cuda = torch.device("cuda")
    fast = Segmenter(
        copy.deepcopy(network),
        tiny_spec,
        cuda,
        Precision(torch.float16),
        channels_last=True,
    )
    reference = Segmenter(network, tiny_spec, cuda)
    threshold = tiny_spec.threshold
    for frame in _kvasir_frames():
        expected = reference(frame).probabilities
        got = fast(frame).probabilities
        assert (got - expected).abs().max() < 1e-2
        # Masks may differ only where fp32 itself is within 0.01 of the threshold.
        differ = (got >= threshold) != (expected >= threshold)
        assert ((expected[differ] - threshold).abs() < 0.01).all()


@pytest.mark.gpu
@pytest.mark.parametrize(
    "options",
    [{"cuda_graphs": True}, {"compile": True, "compile_mode": "reduce-overhead"}],
)
def test_cuda_graph_paths_match_eager(network, tiny_spec, options):
    cuda = torch.device("cuda")
    half = Precision(torch.float16)
    frames = _frames(3)
    fast = Segmenter(
        copy.deepcopy(network),
        tiny_spec,
        cuda,
        half,
        channels_last=True,
        batch_sizes=(1, 4),
        **options,
    )
    eager = Segmenter(network, tiny_spec, cuda, half, channels_last=True)
    reference = _probabilities(eager, frames)
    for _ in range(3):  # replays reuse static buffers: results must not drift
        assert (_probabilities(fast, frames) - reference).abs().max() < 5e-3
        assert (_probabilities(fast, frames[:1]) - reference[:1]).abs().max() < 5e-3


@pytest.mark.gpu
def test_pinned_uploads_are_exact_and_survive_buffer_reuse():
    cuda = torch.device("cuda")
    uploader = FrameUploader(cuda)
    batches = [[f.pixels for f in _frames(2, seed=seed)] for seed in range(5)]
    results = [uploader(batch) for batch in batches]
    torch.cuda.synchronize()
    for batch, result in zip(batches, results, strict=True):
        assert torch.equal(result.cpu(), to_tensor(np.stack(batch), CPU))


def test_flip_tta_is_the_mean_of_the_flipped_predictions_in_one_forward(tiny_spec):
    from streamseg.model import build_network
    from streamseg.segmenter import predict_probabilities

    torch.manual_seed(0)
    network = build_network(tiny_spec).eval()
    calls = []
    network.register_forward_hook(lambda _m, inputs, _o: calls.append(inputs[0].shape))
    images = torch.rand(2, 3, 48, 80)
    with torch.inference_mode():
        plain = predict_probabilities(network, images, tiny_spec.input_hw)
        hflip = predict_probabilities(network, images.flip(-1), tiny_spec.input_hw)
        vflip = predict_probabilities(network, images.flip(-2), tiny_spec.input_hw)
        calls.clear()
        tta = predict_probabilities(network, images, tiny_spec.input_hw, tta="flips")
    assert calls == [torch.Size([6, 3, *tiny_spec.input_hw])]  # one forward pass
    expected = (plain + hflip.flip(-1) + vflip.flip(-2)) / 3
    torch.testing.assert_close(tta, expected, atol=1e-5, rtol=0)
    assert not torch.allclose(tta, plain, atol=1e-3)


def test_tta_runs_on_files_and_never_on_live_sources(tiny_spec, tmp_path):
    from streamseg.model import build_network
    from streamseg.segmenter import Segmenter

    network = build_network(tiny_spec).eval()
    segmenter = Segmenter(network, tiny_spec, torch.device("cpu"), tta="flips")
    assert "flips TTA" in segmenter.describe()
    shapes = []
    network.register_forward_hook(
        lambda _m, inputs, _o: shapes.append(inputs[0].shape[0])
    )
    frames = [
        Frame(i, i / 25, np.full((40, 60, 3), 30 * i, np.uint8)) for i in range(2)
    ]
    segmenter.segment(frames)
    segmenter.segment(frames[:1], tta="none")  # what the app does for live sources
    assert shapes == [6, 1]
    with pytest.raises(ValueError, match="tta: expected one of none, flips"):
        Segmenter(network, tiny_spec, torch.device("cpu"), tta="rotations")


# --- network input size other than the model file's --------------------------


def test_input_hw_runs_the_network_at_another_size(tiny_spec, tmp_path):
    config = load_config(StreamConfig, None, ["model.input_hw=[96,128]"])
    assert config.model.input_hw == (96, 128)
    for bad in ("[100,128]", "[96]", "[0,64]"):
        with pytest.raises(ConfigError, match="input_hw"):
            load_config(StreamConfig, None, [f"model.input_hw={bad}"])
    path = tiny_model_file(tiny_spec, tmp_path)
    sizes = []
    for input_hw in (None, (96, 128)):
        segmenter = Segmenter.from_settings(
            ModelSettings(path=path, device="cpu", input_hw=input_hw)
        )
        shapes = []
        segmenter.network.register_forward_hook(
            lambda _m, inputs, _o, shapes=shapes: shapes.append(inputs[0].shape[-2:])
        )
        (prediction,) = segmenter.segment(_frames(1))
        # The map at the network's input size; the frame is resized to it.
        assert tuple(prediction.probabilities.shape) == segmenter.spec.input_hw
        assert tuple(shapes[-1]) == segmenter.spec.input_hw
        sizes.append(segmenter.spec.input_hw)
    assert sizes == [tiny_spec.input_hw, (96, 128)]
