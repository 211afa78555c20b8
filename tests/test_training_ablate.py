"""Training image cache, weight EMA in a real run, and the resumable ablation driver."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from training_helpers import KVASIR, TINY

from streamseg.config import ConfigError
from streamseg.model import load_model
from training.__main__ import main
from training.ablate import load_plan, run_plan, write_tables
from training.callbacks import load_training_state
from training.config import load_train_config
from training.data import CachedImages, PolypDataset, PolypFolder, cache_key
from training.train import train


def _log(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "log.csv", newline="") as file:
        return list(csv.DictReader(file))


def test_the_cache_is_written_once_and_matches_the_direct_path(tmp_path):
    folder = PolypFolder.open(KVASIR)
    stems = folder.paired_stems[:3]
    cache = CachedImages.build(folder, stems, (80, 96), tmp_path)
    assert cache.images.shape == (3, 80, 96, 3) and cache.images.dtype == np.uint8
    assert cache.masks.shape == (3, 80, 96) and set(np.unique(cache.masks)) <= {0, 1}
    written = cache.images_path.stat().st_mtime_ns
    again = CachedImages.build(folder, stems, (80, 96), tmp_path)
    assert again.images_path == cache.images_path
    assert again.images_path.stat().st_mtime_ns == written
    assert not list(tmp_path.glob("*.tmp"))
    # Unaugmented items from the cache: the direct item up to uint8 rounding and
    # the second (antialiased) resize; masks nearly the same pixels.
    direct = PolypDataset(folder, stems, (64, 64))
    cached = PolypDataset(folder, stems, (64, 64), cache=cache)
    for index in range(3):
        (image_a, mask_a), (image_b, mask_b) = direct[index], cached[index]
        assert image_a.shape == image_b.shape == (3, 64, 64)
        assert (image_a - image_b).abs().mean() < 0.02
        assert (mask_a != mask_b).float().mean() < 0.03
    with pytest.raises(Exception, match="lacks"):
        PolypDataset(folder, folder.paired_stems, (64, 64), cache=cache)


def test_the_cache_key_follows_contents_stems_and_size_not_paths_or_times(tmp_path):
    copy = tmp_path / "kvasir"
    shutil.copytree(KVASIR, copy)
    folder = PolypFolder.open(copy)
    stems = folder.paired_stems[:2]
    key = cache_key(folder, stems, (80, 80))
    assert key == cache_key(PolypFolder.open(KVASIR), stems, (80, 80))
    assert key == cache_key(folder, list(stems), (80, 80))
    assert key != cache_key(folder, stems, (96, 96))
    assert key != cache_key(folder, folder.paired_stems[:3], (80, 80))
    image = folder.images[stems[0]]
    info = image.stat()
    os.utime(image, ns=(info.st_atime_ns, info.st_mtime_ns + 10**9))
    assert key == cache_key(folder, stems, (80, 80))
    mask = folder.masks[stems[1]]
    data = bytearray(mask.read_bytes())
    data[-1] ^= 1
    mask.write_bytes(bytes(data))
    assert key != cache_key(folder, stems, (80, 80))


@pytest.mark.slow
def test_ema_run_validates_and_saves_the_average_and_resumes_exactly(tmp_path):
    levers = [
        *TINY,
        "optimization.ema_decay=0.5",
        "optimization.optimizer=adamw",
        "optimization.weight_decay=0.01",
        "optimization.grad_clip=0.5",
        "optimization.loss=structure+dice",
        "augment.multiscale=[0.75, 1.0, 1.25]",
        "data.cache_scale=1.25",
    ]
    straight = tmp_path / "runs" / "straight"
    config = load_train_config(
        None, [*levers, "optimization.epochs=2"], data_root=KVASIR
    )
    train(config, straight, device="cpu", progress=False)
    state = load_training_state(straight / "state.pt")
    assert state["average"]["updates"] == 6  # 5 training stems, batch 2, 2 epochs
    assert (tmp_path / "runs" / ".cache").is_dir()
    best_epoch = int(
        load_model(straight / "best.safetensors")[1].provenance["checkpoint_epoch"]
    )
    if best_epoch == 2:  # the saved file holds the averaged, not the trained, weights
        saved = load_model(straight / "best.safetensors")[0].state_dict()
        shadow, trained = state["average"]["shadow"], state["network"]
        name = next(k for k in saved if k.endswith("weight") and saved[k].ndim == 4)
        assert torch.allclose(saved[name], shadow[name], atol=1e-6)
        assert not torch.allclose(saved[name], trained[name], atol=1e-6)

    resumed = tmp_path / "runs" / "resumed"
    one = load_train_config(None, [*levers, "optimization.epochs=1"], data_root=KVASIR)
    train(one, resumed, device="cpu", progress=False)
    train(config, resumed, device="cpu", resume=True, progress=False)
    for got, want in zip(_log(resumed), _log(straight), strict=True):
        for key in ("loss", "val_loss", "val_dice"):
            assert float(got[key]) == pytest.approx(float(want[key]), rel=1e-5), key
    again = load_training_state(resumed / "state.pt")["average"]["shadow"]
    assert all(
        torch.allclose(
            again[k].float(), state["average"]["shadow"][k].float(), atol=1e-6
        )
        for k in again
    )


def _plan(tmp_path: Path, arms: str) -> Path:
    base = tmp_path / "base.yaml"
    base.write_text(
        "model: {architecture: Unet, encoder_name: resnet18, input_hw: [64, 64], "
        "model_kwargs: {encoder_depth: 3, decoder_channels: [32, 16, 8]}}\n"
        "optimization: {batch_size: 2, epochs: 1}\n"
        "data: {num_workers: 0, cache_scale: 1.25}\n"
        "calibration: {thresholds: [0.3, 0.5, 0.7]}\n"
    )
    plan = tmp_path / "plan.yaml"
    plan.write_text(f"base: base.yaml\noverrides: [optimization.seed=1]\narms:\n{arms}")
    return plan


def test_plans_are_checked_before_any_training(tmp_path):
    bad = _plan(tmp_path, "  - name: a\n    overrides: [optimization.lr=-1]\n")
    with pytest.raises(ConfigError, match=r"arm 'a'.*lr"):
        load_plan(bad)
    twice = _plan(tmp_path, "  - name: a\n  - name: a\n")
    with pytest.raises(ConfigError, match="twice"):
        load_plan(twice)
    unsafe = _plan(tmp_path, "  - name: ../x\n")
    with pytest.raises(ConfigError, match="plain folder name"):
        load_plan(unsafe)


def _ablate_cli(plan, runs, *options):
    """``python -m training ablate`` on ``plan`` with the fixture data."""
    paths = ["--plan", str(plan.path), "--data", str(KVASIR), "--runs-dir", str(runs)]
    return main(["ablate", *paths, *options])


def test_arms_can_be_chosen_by_name_in_the_order_given(tmp_path, capsys):
    plan = load_plan(_plan(tmp_path, "  - name: a\n  - name: b\n  - name: c\n"))
    assert [arm.name for arm in plan.select()] == ["a", "b", "c"]
    assert [arm.name for arm in plan.select(("c", "a", "c"))] == ["c", "a"]
    with pytest.raises(ConfigError, match="no arm called x; the plan lists a, b, c"):
        plan.select(("a", "x"))
    # The command line refuses an unknown arm before any training starts.
    code = _ablate_cli(plan, tmp_path / "runs", "--arms", "b,x")
    assert code == 2
    assert "no arm called x" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_ablation_trains_each_arm_once_scores_validation_and_resumes(tmp_path):
    plan = load_plan(
        _plan(
            tmp_path,
            "  - name: seed\n"
            "  - name: ema\n    overrides: [optimization.ema_decay=0.9]\n",
        )
    )
    runs = tmp_path / "runs"
    # A report before anything ran: every arm pending.
    assert [r["status"] for r in write_tables(plan, runs)] == ["pending", "pending"]
    rows = run_plan(plan, KVASIR, runs, device="cpu", progress=False)
    assert [r["status"] for r in rows] == ["done", "done"]
    for row in rows:
        assert (
            0.0 <= row["val_micro_dice"] <= 1.0 and 0.0 <= row["val_macro_dice"] <= 1.0
        )
        assert row["epochs_done"] == row["epochs"] == 1
    table = (runs / "ablation.md").read_text()
    assert "| seed |" in table or "| **seed** |" in table
    with open(runs / "ablation.csv", newline="") as file:
        assert [r["arm"] for r in csv.DictReader(file)] == ["seed", "ema"]
    # Finished arms are skipped: nothing is retrained.
    stamp = (runs / "seed" / "model.safetensors").stat().st_mtime_ns
    run_plan(plan, KVASIR, runs, device="cpu", progress=False)
    assert (runs / "seed" / "model.safetensors").stat().st_mtime_ns == stamp
    # The command line: --report-only rewrites the table without training.
    code = _ablate_cli(plan, runs, "--report-only")
    assert code == 0
    # The test split is never scored: no arm folder holds an evaluation of it.
    assert not list(runs.glob("*/eval"))


def test_the_report_shows_unfinished_arms_with_their_epochs(tmp_path):
    plan = load_plan(
        _plan(
            tmp_path,
            "  - name: seed\n  - name: long\n    overrides: [optimization.epochs=3]\n",
        )
    )
    runs = tmp_path / "runs"
    (runs / "long").mkdir(parents=True)
    (runs / "long" / "log.csv").write_text(
        "epoch,time,lr,loss,dice,iou,val_loss,val_dice,val_iou\n"
        "1,100.0,0.001,0.5,0.6,0.4,0.4,0.70,0.5\n"
        "2,120.0,0.001,0.4,0.7,0.5,0.3,0.75,0.6\n"
    )
    rows = write_tables(plan, runs)
    assert [r["status"] for r in rows] == ["pending", "running"]
    long = rows[1]
    assert (long["epochs_done"], long["epochs"], long["best_epoch"]) == (2, 3, 2)
    assert long["val_dice_input_size"] == pytest.approx(0.75)
    assert long["s_per_epoch"] == pytest.approx(110.0)
    table = (runs / "ablation.md").read_text()
    assert "| long | `optimization.epochs=3` | running | 2/3 | 2 | 0.7500 |" in table
