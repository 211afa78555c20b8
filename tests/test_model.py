"""Model file: round trip, fp16 storage, and one clear error for each kind of bad
file.
"""

from __future__ import annotations

import dataclasses
import os
import pickle

import pytest
import torch

from streamseg.model import (
    FORMAT,
    ModelFileError,
    ModelSpec,
    build_network,
    load_model,
    read_spec,
    save_model,
)


def _inputs() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.rand(2, 3, 64, 64)


def test_round_trip_gives_identical_logits(tiny_spec, tmp_path):
    torch.manual_seed(1)
    network = build_network(tiny_spec).eval()
    path = save_model(tmp_path / "m.safetensors", network, tiny_spec)
    loaded, spec = load_model(path)
    assert spec == tiny_spec
    with torch.no_grad():
        assert torch.equal(network(_inputs()), loaded(_inputs()))


def test_fp16_file_is_half_the_size_and_close(tiny_spec, tmp_path):
    network = build_network(tiny_spec).eval()
    full = save_model(tmp_path / "a.safetensors", network, tiny_spec)
    half = save_model(
        tmp_path / "b.safetensors", network, tiny_spec, dtype=torch.float16
    )
    assert half.stat().st_size < 0.6 * full.stat().st_size
    loaded, _ = load_model(half)
    assert next(loaded.parameters()).dtype == torch.float32
    with torch.no_grad():
        expected, got = network(_inputs()).sigmoid(), loaded(_inputs()).sigmoid()
    assert torch.allclose(expected, got, atol=2e-2)


def test_header_is_readable_without_loading_tensors(tiny_spec, tmp_path):
    path = save_model(tmp_path / "m.safetensors", build_network(tiny_spec), tiny_spec)
    assert read_spec(path) == tiny_spec
    assert FORMAT.encode() in path.read_bytes()[:4000]


def test_normalization_lives_in_the_network(tiny_spec):
    network = build_network(tiny_spec)
    assert torch.allclose(
        network.normalize.mean.flatten(), torch.tensor(tiny_spec.mean)
    )
    # Non-persistent: the spec, not the tensors, is the single source of mean/std.
    assert not any("normalize" in key for key in network.state_dict())


@pytest.mark.parametrize(
    ("make_file", "message"),
    [
        (lambda p, s: None, "no such model file"),
        (lambda p, s: p.write_bytes(b""), "not a readable .safetensors"),
        (
            lambda p, s: p.write_bytes(b"hello, I am text"),
            "not a readable .safetensors",
        ),
        (lambda p, s: p.write_bytes(pickle.dumps({"a": 1})), "never unpickles"),
        (lambda p, s: torch.save({"w": torch.zeros(2)}, p), "never unpickles"),
    ],
    ids=["missing", "empty", "text", "pickle", "torch-save"],
)
def test_bad_files_raise_one_clear_error(tmp_path, tiny_spec, make_file, message):
    path = tmp_path / "bad.safetensors"
    make_file(path, tiny_spec)
    with pytest.raises(ModelFileError, match=message):
        load_model(path)


def test_truncated_file(tiny_spec, tmp_path):
    path = save_model(tmp_path / "m.safetensors", build_network(tiny_spec), tiny_spec)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="truncated"):
        load_model(path)


def test_foreign_safetensors_file(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(3)}, str(path))
    with pytest.raises(ModelFileError, match="not a streamseg model"):
        load_model(path)


def test_weights_that_do_not_fit_the_spec(tiny_spec, tmp_path):
    other = dataclasses.replace(tiny_spec, encoder_name="resnet34")
    path = tmp_path / "m.safetensors"
    save_model(path, build_network(tiny_spec), tiny_spec)
    # Rewrite the header to claim another encoder: tensors no longer fit.
    from safetensors.torch import load_file, save_file

    save_file(
        load_file(str(path)),
        str(path),
        metadata={"format": FORMAT, "spec": other.to_json()},
    )
    with pytest.raises(ModelFileError, match="do not fit"):
        load_model(path)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"input_hw": (60, 64)}, "multiples of 32"),
        ({"threshold": 1.0}, "threshold"),
        ({"mean": (0.5, 0.5)}, "mean"),
    ],
)
def test_spec_validation(tiny_spec, changes, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(tiny_spec, **changes)


def test_spec_json_round_trip(tiny_spec):
    assert ModelSpec.from_json(tiny_spec.to_json()) == tiny_spec
    with pytest.raises(ValueError, match="unknown spec fields"):
        ModelSpec.from_json(
            '{"architecture": "Unet", "encoder_name": "x", '
            '"input_hw": [32, 32], "bogus": 1}'
        )


def test_model_file_is_readable_by_others(tiny_spec, tmp_path):
    # mkstemp's 0600 must not leak into shipped model files; the umask still applies.
    previous = os.umask(0o022)
    try:
        path = save_model(
            tmp_path / "m.safetensors", build_network(tiny_spec), tiny_spec
        )
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o644
