"""End to end on real fixture images: train, resume, calibrate, load, evaluate."""

from __future__ import annotations

import csv
import importlib.util
import json
import time
from pathlib import Path

import pytest
import torch
from training_helpers import KVASIR
from training_helpers import TINY as TINY_RECIPE

from streamseg.config import ConfigError
from streamseg.model import file_sha256, load_model, read_spec
from training.callbacks import load_training_state
from training.config import TrainConfig, load_train_config
from training.evaluate import evaluate_model
from training.train import (
    build_training_network,
    initialize_from,
    make_spec,
    train,
)

# A worker process: its seeding is part of what is checked.
TINY = [*TINY_RECIPE, "data.num_workers=1"]


def _config(*overrides: str) -> TrainConfig:
    return load_train_config(None, [*TINY, *overrides], data_root=KVASIR)


def _stems(run_dir: Path) -> set[str]:
    return {
        stem
        for name in ("train.txt", "val.txt")
        for stem in (run_dir / "splits" / name).read_text().split()
    }


def _log_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "log.csv", newline="") as file:
        return list(csv.DictReader(file))


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "straight"
    result = train(
        _config("optimization.epochs=2"), run_dir, device="cpu", progress=False
    )
    return run_dir, result


def test_training_writes_a_loadable_calibrated_model(two_epochs):
    run_dir, result = two_epochs
    assert result.model_path == run_dir / "model.safetensors"
    for name in (
        "config.yaml",
        "splits/train.txt",
        "splits/val.txt",
        "log.csv",
        "best.safetensors",
        "state.pt",
        "calibration.csv",
        "summary.json",
    ):
        assert (run_dir / name).is_file(), name
    _, spec = load_model(result.model_path)
    assert spec.threshold == result.threshold and result.threshold in (0.3, 0.5, 0.7)
    assert spec.input_hw == (64, 64) and spec.architecture == "Unet"
    for key in (
        "dataset",
        "train_split",
        "val_split",
        "epochs",
        "best_epoch",
        "val_dice",
        "git_revision",
        "date",
        "encoder_init",
        "config",
    ):
        assert spec.provenance.get(key), key
    assert spec.provenance["epochs"] == "2"
    assert "random" in spec.provenance["encoder_init"]
    # No path of the training machine in the record: the data root and run folder
    # (both absolute here) appear nowhere; the dataset is named by its contents.
    record = json.dumps(spec.provenance)
    for where in (KVASIR.resolve(), run_dir.resolve(), run_dir.resolve().parent):
        assert str(where) not in record, where
    assert "root" not in json.loads(spec.provenance["config"])["data"]
    assert spec.provenance["dataset"].startswith(
        f"{KVASIR.resolve().name}: the {len(_stems(run_dir))} images and masks of "
        "splits/train.txt, contents sha256 "
    )
    assert [row["epoch"] for row in _log_rows(run_dir)] == ["1", "2"]
    assert {"loss", "val_loss", "val_dice", "val_iou", "lr"} <= set(
        _log_rows(run_dir)[0]
    )
    # The best checkpoint is itself a model file (threshold not yet calibrated).
    assert read_spec(run_dir / "best.safetensors").provenance[
        "checkpoint_epoch"
    ] == str(result.best_epoch)


def test_the_model_file_evaluates_on_the_test_split(two_epochs):
    _, result = two_epochs
    report, thumbnails = evaluate_model(result.model_path, KVASIR, "test", device="cpu")
    assert report.split == "test" and len(report.images) == 2
    assert set(thumbnails) == {r.stem for r in report.images}
    assert 0.0 <= report.micro.dice <= 1.0 and report.threshold == result.threshold


def test_resume_continues_where_it_stopped_and_matches_a_straight_run(
    two_epochs, tmp_path
):
    straight_dir, _ = two_epochs
    run_dir = tmp_path / "resumed"
    train(_config("optimization.epochs=1"), run_dir, device="cpu", progress=False)
    assert load_training_state(run_dir / "state.pt")["epoch"] == 1
    # Simulate a kill after epoch 2 was logged but before its state was written:
    # the resumed run must drop that row and redo the epoch.
    with open(run_dir / "log.csv", "a", newline="") as file:
        row = _log_rows(run_dir)[0]
        csv.DictWriter(file, fieldnames=list(row)).writerow(
            {**row, "epoch": "2", "loss": "9"}
        )
    resumed = train(
        _config("optimization.epochs=2"),
        run_dir,
        device="cpu",
        resume=True,
        progress=False,
    )
    assert resumed.resumed_from_epoch == 1 and resumed.epochs == 2
    rows, expected = _log_rows(run_dir), _log_rows(straight_dir)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    # Same seed, restored RNG (worker seeds included) and optimizer state: the same
    # numbers as the run that was never interrupted.
    for got, want in zip(rows, expected, strict=True):
        for key in ("loss", "val_loss", "val_dice"):
            assert float(got[key]) == pytest.approx(
                float(want[key]), rel=1e-5, abs=1e-6
            ), key
    a = load_training_state(run_dir / "state.pt")["network"]
    b = load_training_state(straight_dir / "state.pt")["network"]
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)
    assert (run_dir / "splits" / "val.txt").read_text() == (
        straight_dir / "splits" / "val.txt"
    ).read_text()


def test_a_finished_run_is_not_overwritten_without_resume(two_epochs):
    run_dir, _ = two_epochs
    with pytest.raises(ConfigError, match="--resume"):
        train(_config("optimization.epochs=2"), run_dir, device="cpu", progress=False)


def test_resume_with_another_recipe_is_refused(two_epochs):
    run_dir, _ = two_epochs
    with pytest.raises(ConfigError, match=r"optimization\.lr"):
        train(
            _config("optimization.epochs=2", "optimization.lr=0.1"),
            run_dir,
            device="cpu",
            resume=True,
            progress=False,
        )


def test_missing_data_root_is_a_config_error(tmp_path):
    config = load_train_config(None, TINY)
    with pytest.raises(ConfigError, match="--data"):
        train(config, tmp_path / "run", device="cpu", progress=False)


def test_imagenet_weights_fail_fast_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = _config("model.encoder_weights=imagenet")
    start = time.monotonic()
    # Asked for the encoder's statistics (smp reads them from the hub) ...
    with pytest.raises(RuntimeError, match="encoder_weights=null"):
        make_spec(config.model)
    # ... or for the weights themselves: one clear error, no minute of retries.
    spec, _ = make_spec(_config().model)
    with pytest.raises(RuntimeError, match="HF_HUB_OFFLINE=1"):
        build_training_network(spec, "imagenet")
    assert time.monotonic() - start < 5.0


@pytest.mark.skipif(
    importlib.util.find_spec("training.pretrained") is None,
    reason="no training/pretrained.py",
)
def test_lite_imagenet_on_an_unsupported_encoder_is_a_config_error():
    with pytest.raises(ConfigError, match="lite-imagenet"):
        make_spec(_config("model.encoder_weights=lite-imagenet").model)


def test_bf16_autocast_trains_on_cpu(tmp_path):
    result = train(
        _config(
            "optimization.epochs=1",
            "optimization.precision=bf16",
            "optimization.channels_last=true",
            "data.num_workers=0",
        ),
        tmp_path / "bf16",
        device="cpu",
        progress=False,
    )
    assert (
        load_model(result.model_path)[1].provenance["training_device"] == "cpu (bf16)"
    )


def test_model_files_whose_header_length_starts_with_0x80_load(tiny_spec, tmp_path):
    # Regression: a safetensors file begins with its header length (u64 LE); a length
    # whose low byte is 0x80 was once mistaken for pickle's magic and refused.
    from streamseg.model import build_network, save_model

    path = save_model(tmp_path / "m.safetensors", build_network(tiny_spec), tiny_spec)
    data = path.read_bytes()
    length = int.from_bytes(data[:8], "little")
    padded = (
        length + (0x80 - length % 256) % 256
    )  # spaces after the JSON are valid padding
    path.write_bytes(
        padded.to_bytes(8, "little")
        + data[8 : 8 + length]
        + b" " * (padded - length)
        + data[8 + length :]
    )
    assert path.read_bytes()[0] == 0x80
    assert load_model(path)[1] == tiny_spec


def test_init_from_copies_what_fits_and_leaves_a_new_decoder_alone(two_epochs):
    _, result = two_epochs
    source, _ = load_model(result.model_path)
    # The same encoder under another decoder: encoder copied, decoder kept.
    spec, _ = make_spec(
        _config(
            "model.model_kwargs={encoder_depth: 3, decoder_channels: [16, 8, 4]}"
        ).model
    )
    network, _ = build_training_network(spec, None)
    before = {k: v.clone() for k, v in network.state_dict().items()}
    sentence = initialize_from(network, spec, result.model_path)
    after, trained = network.state_dict(), source.state_dict()
    fits = {k for k in after if k in trained and after[k].shape == trained[k].shape}
    assert all(k in fits for k in after if k.startswith("segmentation.encoder."))
    assert all(torch.equal(after[k], trained[k]) for k in fits)
    kept = [k for k in after if k not in fits]
    assert any(k.startswith("segmentation.decoder.") for k in kept)
    assert all(torch.equal(after[k], before[k]) for k in kept)
    copied = len(fits)
    assert sentence.startswith(f"{copied} of {len(after)} tensors")
    assert "model.safetensors" in sentence and "sha256" in sentence


def test_init_from_refuses_another_normalization_or_encoder(two_epochs, tmp_path):
    _, result = two_epochs
    other_norm = _config("model.mean=[0.5, 0.5, 0.5]", "model.std=[0.25, 0.25, 0.25]")
    spec, _ = make_spec(other_norm.model)
    network, _ = build_training_network(spec, None)
    with pytest.raises(ConfigError, match=r"model\.mean and model\.std"):
        initialize_from(network, spec, result.model_path)
    spec, _ = make_spec(_config("model.encoder_name=mobilenet_v2").model)
    network, _ = build_training_network(spec, None)
    with pytest.raises(ConfigError, match="same encoder"):
        initialize_from(network, spec, result.model_path)
    with pytest.raises(ConfigError, match=r"model\.init_from: no such model file"):
        initialize_from(network, spec, tmp_path / "missing.safetensors")
    (tmp_path / "foreign.safetensors").write_bytes(b"not a model file")
    with pytest.raises(ConfigError, match=r"model\.init_from: .*foreign"):
        initialize_from(network, spec, tmp_path / "foreign.safetensors")


def test_a_run_started_from_a_model_file_records_it(two_epochs, tmp_path):
    _, result = two_epochs
    fine_tuned = train(
        _config(
            "optimization.epochs=1",
            "data.num_workers=0",
            f"model.init_from={result.model_path}",
        ),
        tmp_path / "fine-tune",
        device="cpu",
        progress=False,
    )
    provenance = load_model(fine_tuned.model_path)[1].provenance
    init = provenance["encoder_init"]
    assert "(100% of the parameters) from model.safetensors" in init
    # The lineage: the parent file's name, hash and own provenance (its recipe).
    parent = json.loads(provenance["init_from"])
    assert parent["file"] == "model.safetensors"
    assert parent["sha256"] == file_sha256(result.model_path)
    assert parent["provenance"] == load_model(result.model_path)[1].provenance
    assert "init_from" not in parent["provenance"]


def test_soup_averages_one_network_and_calibrates_on_the_shared_validation(
    two_epochs, tmp_path
):
    from streamseg.model import save_model
    from training.__main__ import main
    from training.soup import make_soup

    _, result = two_epochs
    network, spec = load_model(result.model_path)
    state = network.state_dict()
    name = next(k for k, v in state.items() if v.is_floating_point() and v.ndim == 4)
    original = state[name].clone()
    with torch.no_grad():
        state[name] += 0.5
    network.load_state_dict(state)
    other = save_model(tmp_path / "other.safetensors", network, spec)
    out = tmp_path / "soup" / "soup.safetensors"
    assert (
        main(
            [
                "soup",
                "--models",
                str(result.model_path),
                str(other),
                "--weights",
                "0.25",
                "0.75",
                "--data",
                str(KVASIR),
                "--out",
                str(out),
                "--threads",
                "1",
            ]
        )
        == 0
    )
    averaged, soup_spec = load_model(out)
    expected = original + 0.75 * 0.5
    assert torch.allclose(averaged.state_dict()[name], expected, atol=2e-3)
    ingredients = json.loads(soup_spec.provenance["soup"])
    files = [i["file"] for i in ingredients]
    assert files == ["model.safetensors", "other.safetensors"]
    assert [i["weight"] for i in ingredients] == [0.25, 0.75]
    assert ingredients[1]["sha256"] == file_sha256(other)
    assert ingredients[0]["provenance"] == spec.provenance
    # The threshold is the calibration table's best row, on the run's validation stems.
    with open(out.with_name("soup.calibration.csv"), newline="") as file:
        rows = list(csv.DictReader(file))
    best = max(  # ties go to the threshold nearest 0.5, as in a training run
        rows,
        key=lambda row: (
            float(row["val_dice_micro"]),
            -abs(float(row["threshold"]) - 0.5),
        ),
    )
    assert soup_spec.threshold == pytest.approx(float(best["threshold"]))
    val_stems = (result.model_path.parent / "splits" / "val.txt").read_text().split()
    assert f"{len(val_stems)} validation images" in soup_spec.provenance["val_dice"]
    carve = json.loads(soup_spec.provenance["config"])["data"]
    assert carve["split_seed"] == 0 and "root" not in carve

    with pytest.raises(ConfigError, match="two or more"):
        make_soup([result.model_path], KVASIR, tmp_path / "x.safetensors")
    with pytest.raises(ConfigError, match="summing to 1"):
        make_soup([result.model_path, other], KVASIR, out, weights=[0.5, 0.6])
    spec_other, _ = make_spec(_config("model.encoder_name=mobilenet_v2").model)
    foreign_net, _ = build_training_network(spec_other, None)
    foreign = save_model(tmp_path / "foreign.safetensors", foreign_net, spec_other)
    with pytest.raises(ConfigError, match="one network"):
        make_soup([result.model_path, foreign], KVASIR, out)
