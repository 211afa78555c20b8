"""OpenVINO backend: fp32 conversion, the INT8 artefact and its provenance check,
backend auto; and the CPU facts bench reports."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FIXTURES, make_tiny_spec

from streamseg.backends import openvino as ov_backend
from streamseg.cpu import parse_cpuinfo
from streamseg.device import Precision
from streamseg.frames import Frame
from streamseg.model import (
    ModelFileError,
    build_network,
    file_sha256,
    load_model,
    save_model,
)
from streamseg.segmenter import ModelSettings, Segmenter

CPU = torch.device("cpu")
KVASIR = FIXTURES / "kvasir"

needs_openvino = pytest.mark.skipif(
    not ov_backend.available(),
    reason="OpenVINO not installed (pip install 'streamseg[openvino]')",
)


@pytest.fixture
def ov_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("STREAMSEG_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def quantized_model(tmp_path_factory):
    """A tiny model file with an INT8 artefact made by ``training quantize``."""
    if not ov_backend.available():
        pytest.skip("OpenVINO not installed (pip install 'streamseg[openvino]')")
    pytest.importorskip("nncf", reason="NNCF not installed (streamseg[openvino])")
    folder = tmp_path_factory.mktemp("int8")
    # Its own file (not the session's shared tiny model): the artefact lands beside it.
    spec = make_tiny_spec()
    torch.manual_seed(0)
    model = save_model(folder / "quantized.safetensors", build_network(spec), spec)
    # The real command, in its own process: NNCF patches torch when imported,
    # and the tests after these ones train in this process.
    command = [sys.executable, "-m", "training", "quantize", "--model", str(model)]
    command += ["--data", str(KVASIR), "--subset-size", "4", "--max-dice-drop", "1.0"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return model, json.loads(ov_backend.int8_paths(model).provenance.read_text())


def _frames(count: int = 2) -> list[Frame]:
    generator = np.random.default_rng(0)
    return [
        Frame(i, i / 25, generator.integers(0, 256, (72, 96, 3), dtype=np.uint8))
        for i in range(count)
    ]


def _in_child(code: str, *args: str) -> dict:
    """Run ``code`` in a child Python (tests/ on its path); its stdout as JSON."""
    tests = Path(__file__).parent
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(tests), os.environ.get("PYTHONPATH")])
        ),
    }
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


# Runs in a child process: after OpenVINO's fp32 conversion has run in a
# process, a later training run with DataLoader workers in that same process
# crashes (a segmentation fault seen in this suite); the runtime never trains.
FP32_CHECK = """
import json, sys
import numpy as np, torch
from conftest import make_tiny_spec
from streamseg.backends import openvino as ov_backend
from streamseg.frames import Frame
from streamseg.model import build_network
from streamseg.segmenter import Segmenter

spec = make_tiny_spec()
torch.manual_seed(0)
network = build_network(spec).eval()
runner = ov_backend.OpenVinoRunner.fp32(network, spec)
images = torch.rand((3, 3, *spec.input_hw))
with torch.inference_mode():
    expected = network(images)
logits = runner(images)
cpu = torch.device("cpu")
ov = Segmenter(network, spec, cpu, backend="openvino")
eager = Segmenter(network, spec, cpu)
generator = np.random.default_rng(0)
frames = [
    Frame(i, i / 25, generator.integers(0, 256, (72, 96, 3), dtype=np.uint8))
    for i in range(2)
]
pairs = zip(ov.segment(frames), eager.segment(frames), strict=True)
json.dump({
    "shape": list(logits.shape),
    "input_hw": list(spec.input_hw),
    "logits_diff": float((logits - expected).abs().max()),
    "cached": sorted([ov_backend.ir_path(network, spec).name,
                      ov_backend.ir_path(network, spec).with_suffix(".bin").name]),
    "describe": ov.describe(),
    "probability_diff": max(
        float((a.probabilities - b.probabilities).abs().max()) for a, b in pairs
    ),
}, sys.stdout)
"""


@needs_openvino
@pytest.mark.slow
def test_openvino_fp32_logits_match_torch_and_the_ir_is_cached(ov_cache):
    result = _in_child(FP32_CHECK)
    assert result["shape"] == [3, 1, *result["input_hw"]]
    assert result["logits_diff"] < 1e-4
    assert sorted(p.name for p in (ov_cache / "openvino").iterdir()) == result["cached"]
    # The segmenter takes the same path; its probabilities equal torch's.
    assert result["describe"] == "fp32, OpenVINO"
    assert result["probability_diff"] < 1e-4


def test_openvino_rejects_what_it_cannot_honour(tiny_spec):
    network = build_network(tiny_spec)
    with pytest.raises(ValueError, match="precision fp32"):
        Segmenter(
            network, tiny_spec, CPU, Precision(torch.bfloat16), backend="openvino"
        )
    with pytest.raises(ValueError, match="apply to backend torch"):
        Segmenter(network, tiny_spec, CPU, backend="openvino", compile=True)


@pytest.mark.slow
def test_quantize_writes_the_artefact_with_provenance(quantized_model):
    model, _ = quantized_model
    paths = ov_backend.int8_paths(model)
    assert paths.exist()
    provenance = json.loads(paths.provenance.read_text())
    assert provenance["model_sha256"] == file_sha256(model)
    assert provenance["preset"] == "mixed"
    calibration = provenance["calibration"]
    # The fixture's training split (6 stems) minus its validation carve-out (1).
    assert calibration["images"] == 4
    assert calibration["training_part_images"] == 5
    assert len(calibration["stems_sha256"]) == 64
    test_stems = (KVASIR / "splits" / "test.txt").read_text().split()
    assert calibration["stems_sha256"] != ov_backend.stems_sha256(test_stems)
    assert provenance["validation"]["images"] == 1
    assert 0 <= provenance["validation"]["mask_agreement_pct"] <= 100
    assert set(provenance["versions"]) == {"openvino", "nncf", "torch"}
    # The INT8 network runs and gives logits of the right shape.
    runner = ov_backend.OpenVinoRunner.int8(paths.xml)
    assert runner(torch.rand((2, 3, 64, 64))).shape == (2, 1, 64, 64)


@pytest.mark.slow
def test_backend_auto_picks_openvino_int8_when_the_artefact_matches(quantized_model):
    model, _ = quantized_model
    choice = ov_backend.choose_backend("auto", "auto", CPU, model)
    assert choice.backend == "openvino"
    assert choice.int8 == ov_backend.int8_paths(model).xml
    # Two streams (the default for files here) in a child process: STREAMS_CHECK.
    segmenter = Segmenter.from_settings(
        ModelSettings(path=model, batch_size=2), live=True
    )
    assert segmenter.describe() == "int8, OpenVINO"  # live: one stream
    assert len(segmenter.segment(_frames())) == 2
    # A torch precision or torch option, quantized false, or a GPU: torch.
    assert (
        ov_backend.choose_backend("auto", "auto", CPU, model, precision="bf16").backend
        == "torch"
    )
    assert (
        ov_backend.choose_backend(
            "auto", "auto", CPU, model, torch_options=True
        ).backend
        == "torch"
    )
    assert ov_backend.choose_backend("auto", False, CPU, model).backend == "torch"
    assert (
        ov_backend.choose_backend("auto", "auto", torch.device("cuda"), model).backend
        == "torch"
    )
    fp32 = ov_backend.choose_backend("openvino", False, CPU, model)
    assert (fp32.backend, fp32.int8) == ("openvino", None)


# Runs in a child process: a process that has run OpenVINO with 2 streams
# (its throughput executor) crashed in a later training run with DataLoader
# workers in this suite; the runtime never trains (batch workers are spawned).
STREAMS_CHECK = """
import json, sys
from concurrent.futures import ThreadPoolExecutor
import numpy as np, torch
from streamseg.backends import openvino as ov_backend
from streamseg.frames import Frame
from streamseg.segmenter import ModelSettings, Segmenter

torch.set_num_threads(2)
model = sys.argv[1]
settings = ModelSettings(path=model, device="cpu", batch_size=2)
files = Segmenter.from_settings(settings)
live = Segmenter.from_settings(settings, live=True)
frame = Frame(0, 0.0, np.zeros((64, 80, 3), np.uint8))
xml = ov_backend.int8_paths(model).xml
one = ov_backend.OpenVinoRunner.int8(xml, threads=2, streams=1)
two = ov_backend.OpenVinoRunner.int8(xml, threads=2, streams=2)
generator = torch.Generator().manual_seed(0)
height, width = files.spec.input_hw
batches = [torch.rand((n, 3, height, width), generator=generator) for n in (3, 1, 2)]
expected = [one(images) for images in batches]
# Concurrent calls are checked against the same runner's calls one at a time: across
# runners a batch may run at another per-request batch size, whose INT8 kernels can
# round differently (up to about 0.1 of a logit on a few pixels for some files).
sequential = [two(images) for images in batches]
with ThreadPoolExecutor(2) as pool:  # calls from several threads at once
    results = list(pool.map(two, batches * 4))
try:
    ov_backend.compile_ir(xml, threads=2, streams=3)
    too_many = ""
except ValueError as error:
    too_many = str(error)
json.dump({
    "files": files.describe(),
    "live": live.describe(),
    "streams": [files.streams, live.streams],
    "map_hw": list(files(frame).probabilities.shape),
    "input_hw": [height, width],
    "split_diff": float((two(batches[0]) - expected[0]).abs().max()),
    "shapes_ok": all(
        got.shape == want.shape for got, want in zip(results, expected * 4)
    ),
    "concurrent_diff": max(
        float((got - want).abs().max()) for got, want in zip(results, sequential * 4)
    ),
    "too_many": too_many,
}, sys.stdout)
"""


def _streams_check(model: Path) -> dict:
    return _in_child(STREAMS_CHECK, str(model))


@pytest.mark.slow
def test_streams_split_a_batch_and_serve_concurrent_calls_with_the_same_logits(
    quantized_model,
):
    model, _ = quantized_model
    result = _streams_check(model)
    # With 2 threads: files run 2 streams, live sources 1.
    assert result["files"] == "int8, OpenVINO, 2 streams"
    assert result["live"] == "int8, OpenVINO"
    assert result["streams"] == [2, 1]
    assert result["map_hw"] == result["input_hw"]
    # A batch of 3 runs as parts of 2 and 1 on the two streams: the same logits.
    assert result["split_diff"] < 1e-5
    # Calls from two threads at once each get their own requests.
    assert result["shapes_ok"] and result["concurrent_diff"] < 1e-5
    assert "streams: expected 1 to the thread count (2), got 3" in result["too_many"]


def test_streams_resolve_once_from_the_backend_and_threads():
    auto = ModelSettings()
    assert auto.resolved_streams("openvino", threads=2) == 2
    assert auto.resolved_streams("openvino", threads=8) == 2
    assert auto.resolved_streams("openvino", threads=1) == 1
    # Live sources: one stream, every frame on all the threads.
    assert auto.resolved_streams("openvino", threads=8, live=True) == 1
    assert ModelSettings(streams=2).resolved_streams("openvino", 2, live=True) == 2
    assert auto.resolved_streams("torch", threads=8) == 1
    assert auto.resolved_streams("onnx", threads=8) == 1
    assert ModelSettings(streams=1).resolved_streams("openvino", threads=8) == 1
    assert ModelSettings(streams=4).resolved_streams("openvino", threads=8) == 4
    with pytest.raises(ValueError, match=r"need backend openvino.*model.backend"):
        ModelSettings(streams=2).resolved_streams("torch", threads=2)
    with pytest.raises(ValueError, match=r"at least as many threads.*model.threads"):
        ModelSettings(streams=3).resolved_streams("openvino", threads=2)
    with pytest.raises(ValueError, match="streams: expected >= 1"):
        ModelSettings(streams=0)


def test_more_than_one_stream_needs_the_openvino_backend(tiny_spec):
    with pytest.raises(ValueError, match="streams: expected 1, or more with backend"):
        Segmenter(build_network(tiny_spec), tiny_spec, CPU, streams=2)


def test_backend_auto_without_an_artefact_keeps_torch(tiny_spec, tmp_path):
    model = save_model(
        tmp_path / "plain.safetensors", build_network(tiny_spec), tiny_spec
    )
    assert ov_backend.choose_backend("auto", "auto", CPU, model).backend == "torch"
    with pytest.raises(ov_backend.Int8ArtefactError, match="training quantize"):
        ov_backend.choose_backend("openvino", True, CPU, model)
    with pytest.raises(ValueError, match="set backend openvino"):
        ov_backend.choose_backend("torch", True, CPU, model)


@pytest.mark.slow
def test_an_artefact_of_another_model_file_is_refused(quantized_model, tmp_path):
    model, _ = quantized_model
    # Same architecture, other weights, with the first model's artefact beside it.
    network, spec = load_model(model)
    with torch.no_grad():
        next(network.parameters()).add_(1.0)
    other = save_model(tmp_path / "other.safetensors", network, spec)
    source, target = ov_backend.int8_paths(model), ov_backend.int8_paths(other)
    for a, b in zip(
        (source.xml, source.bin, source.provenance),
        (target.xml, target.bin, target.provenance),
        strict=True,
    ):
        shutil.copy(a, b)
    with pytest.raises(ov_backend.Int8ArtefactError) as caught:
        ov_backend.choose_backend("auto", "auto", CPU, other)
    message = str(caught.value)
    assert "\n" not in message
    assert "another model file" in message and "python -m training quantize" in message
    with pytest.raises(ModelFileError, match="another model file"):
        Segmenter.from_settings(ModelSettings(path=other))
    # quantized false ignores the artefact.
    assert ov_backend.choose_backend("auto", False, CPU, other).backend == "torch"
    # The CLI: one line, exit 1.
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamseg",
            "run",
            str(KVASIR / "images"),
            "--model",
            str(other),
            "--view",
            "none",
            "--set",
            "source.max_frames=1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "another model file" in lines[0], done.stderr


def test_cpu_facts_from_cpuinfo():
    text = (
        "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor\n"
        "flags\t\t: fpu avx512f avx512_vnni avx512_bf16\n\n"
        "processor\t: 1\nmodel name\t: Intel(R) Xeon(R) Processor\n"
        "flags\t\t: fpu avx512f avx512_vnni avx512_bf16\n"
    )
    info = parse_cpuinfo(text, 2)
    assert info.model == "Intel(R) Xeon(R) Processor"
    assert info.flags() == {"amx": False, "avx512_bf16": True, "avx512_vnni": True}
    assert "amx no" in info.describe()
    amx = parse_cpuinfo("model name: X\nflags: amx_tile amx_bf16 amx_int8\n", 1)
    assert amx.amx and not amx.avx512_vnni


@pytest.mark.parametrize("name", ["default", "fast"])
def test_each_bundled_model_ships_its_int8_artefact(name):
    from streamseg.model import resolve_model_path

    model = resolve_model_path(f"bundled:{name}")
    paths = ov_backend.int8_paths(model)
    assert paths.exist(), f"streamseg/assets/{name}.int8.{{xml,bin,json}} missing"
    provenance = ov_backend.read_provenance(model)  # sha256 of the shipped file
    assert provenance["schema"] == ov_backend.PROVENANCE_SCHEMA
    assert provenance["calibration"]["images"] == 200
    assert "training part" in provenance["calibration"]["drawn_from"]
    validation = provenance["validation"]
    assert validation["images"] == 88
    assert abs(validation["fp32_dice"] - validation["int8_dice"]) <= 0.005
    assert validation["mask_agreement_pct"] > 99.0


@needs_openvino
def test_backend_auto_runs_the_bundled_int8_artefact_on_the_cpu():
    from streamseg.model import default_model_path

    result = _streams_check(default_model_path())  # in a child: STREAMS_CHECK
    assert result["files"] == "int8, OpenVINO, 2 streams"
    assert result["live"] == "int8, OpenVINO"
    # The map at the network's input size, covering the frame.
    assert result["map_hw"] == result["input_hw"]
    assert result["split_diff"] < 1e-5 and result["concurrent_diff"] < 1e-5


def test_bench_lists_openvino_variants_and_the_cpu_flags(tiny_spec, tmp_path):
    from streamseg.evaluation import bench, bench_inputs, bench_timing

    plain = save_model(
        tmp_path / "plain.safetensors", build_network(tiny_spec), tiny_spec
    )
    names = bench_inputs.variant_names(CPU, plain)
    assert "ov-int8" not in names
    assert ("ov-fp32" in names) == ov_backend.available()
    machine = bench.describe_machine(CPU)
    assert set(machine["cpu_flags"]) == {"amx", "avx512_bf16", "avx512_vnni"}
    # ov-int8 and ov-fp32 run differently; config resolves to one of the variants.
    base = ModelSettings(path=plain)
    keys = {
        bench_inputs.settings_key(bench_inputs.resolve_variant(n, base), CPU)
        for n in ("ov-fp32", "ov-int8", "ov-int8-1s", "fp32-cl", "onnx")
    }
    assert len(keys) == 5
    assert bench_timing.describe_settings(
        bench_inputs.resolve_variant("ov-int8", base)
    ) == ("int8, OpenVINO, 2 streams")
    assert bench_timing.describe_settings(
        bench_inputs.resolve_variant("ov-int8-1s", base)
    ) == ("int8, OpenVINO")


def test_quantize_command_usage_errors_exit_2(tiny_spec, tmp_path):
    from training.__main__ import main

    model = save_model(tmp_path / "m.safetensors", build_network(tiny_spec), tiny_spec)
    code = main(
        ["quantize", "--model", str(model), "--data", str(KVASIR), "--subset-size", "0"]
    )
    assert code == 2
    assert not ov_backend.int8_paths(model).any_exist()


# In a child process, as the other OpenVINO runs (see STREAMS_CHECK).
INPUT_HW_CHECK = """
import json, sys
import numpy as np, torch
from PIL import Image
from conftest import FIXTURES
from streamseg.frames import Frame
from streamseg.segmenter import ModelSettings, Segmenter

torch.set_num_threads(2)
folder = FIXTURES / "kvasir"
stems = (folder / "splits" / "test.txt").read_text().split()
frames = [
    Frame(i, 0.0, np.asarray(Image.open(folder / "images" / f"{s}.jpg").convert("RGB")))
    for i, s in enumerate(stems)
]
out = {}
for backend, precision in (("auto", "auto"), ("torch", "fp32")):
    # The reference is fp32 (precision auto would pick bf16 on CPUs with AVX-512 BF16).
    settings = ModelSettings(
        device="cpu", backend=backend, precision=precision, input_hw=(256, 256)
    )
    segmenter = Segmenter.from_settings(settings)
    masks = [segmenter(f).probabilities >= segmenter.spec.threshold for f in frames]
    out[backend] = {
        "describe": segmenter.describe(),
        "hw": [list(m.shape) for m in masks],
        "masks": masks,
    }
agree = np.mean([
    float((a == b).float().mean())
    for a, b in zip(out["auto"]["masks"], out["torch"]["masks"], strict=True)
])
json.dump({
    "auto": out["auto"]["describe"],
    "torch": out["torch"]["describe"],
    "hw": out["auto"]["hw"],
    "agreement": agree,
}, sys.stdout)
"""


@needs_openvino
def test_the_bundled_int8_artefact_runs_at_a_smaller_input():
    result = _in_child(INPUT_HW_CHECK)
    assert result["auto"].startswith("int8, OpenVINO")
    assert result["torch"] == "fp32, channels_last"
    assert result["hw"] == [[256, 256]] * len(result["hw"])
    # The INT8 network reshaped to 256x256 draws the fp32 network's masks there.
    assert result["agreement"] > 0.98
