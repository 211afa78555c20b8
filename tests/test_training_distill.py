"""Knowledge distillation: teachers' maps, their augmentation, the loss, a real run."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F
from training_helpers import KVASIR, TINY, multiscale_model

from streamseg.config import ConfigError
from streamseg.model import build_network, file_sha256, load_model, save_model
from streamseg.segmenter import predict_probabilities
from training.augment import train_augmentations
from training.config import AugmentConfig, load_train_config
from training.data import CachedImages, PolypDataset, PolypFolder
from training.distill import TeacherMaps
from training.losses import DistillationLoss, SumOfLosses, build_loss
from training.metrics import PixelScore
from training.train import train


def _teacher(tiny_spec, folder: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    return save_model(
        folder / f"teacher{seed}.safetensors", build_network(tiny_spec), tiny_spec
    )


def test_the_loss_mixes_the_label_term_and_bce_towards_the_teacher():
    torch.manual_seed(0)
    logits = torch.randn(2, 1, 16, 16)
    label = (torch.rand(2, 1, 16, 16) > 0.5).float()
    teacher = torch.rand(2, 1, 16, 16)
    task = build_loss(load_train_config(None, ["optimization.loss=dice"]).optimization)
    loss = DistillationLoss(task, weight=0.3)
    expected = 0.7 * task(logits, label) + 0.3 * F.binary_cross_entropy_with_logits(
        logits, teacher
    )
    mixed = loss(logits, torch.cat([label, teacher], dim=1))
    assert torch.allclose(mixed, expected)
    # Validation targets (the label alone) get the task loss alone.
    assert torch.allclose(loss(logits, label), task(logits, label))
    # The teacher's own probabilities are the minimum of the pure teacher term.
    only_teacher = DistillationLoss(task, weight=1.0)
    agreeing = only_teacher(teacher.logit(), torch.cat([label, teacher], dim=1))
    assert agreeing < only_teacher(logits, torch.cat([label, teacher], dim=1))
    with pytest.raises(ValueError, match="1 or 2 channels"):
        loss(logits, torch.cat([label, teacher, teacher], dim=1))
    with pytest.raises(ValueError, match="weight"):
        DistillationLoss(SumOfLosses({"bce": torch.nn.BCEWithLogitsLoss()}), 0.0)


def test_the_epoch_dice_scores_the_label_channel_only():
    torch.manual_seed(1)
    logits = torch.randn(2, 1, 8, 8)
    label = (torch.rand(2, 1, 8, 8) > 0.5).float()
    alone, distilled = PixelScore("dice"), PixelScore("dice")
    alone.update(logits, label)
    distilled.update(logits, torch.cat([label, torch.rand(2, 1, 8, 8)], dim=1))
    assert alone.compute() == distilled.compute()


def test_teacher_maps_are_the_mean_of_the_teachers_and_computed_once(
    tmp_path, tiny_spec
):
    folder = PolypFolder.open(KVASIR)
    cache = CachedImages.build(folder, folder.paired_stems[:3], (80, 80), tmp_path)
    first, second = _teacher(tiny_spec, tmp_path, 0), _teacher(tiny_spec, tmp_path, 1)
    maps = TeacherMaps.build(cache, [first, second], tta="flips", batch_size=2)
    assert maps.probabilities.shape == (3, 80, 80)
    assert maps.probabilities.dtype == np.uint8
    assert maps.teachers == (
        f"teacher0.safetensors {file_sha256(first)}",
        f"teacher1.safetensors {file_sha256(second)}",
    )
    images = torch.from_numpy(np.array(cache.images)).permute(0, 3, 1, 2)
    expected = torch.zeros(3, 80, 80)
    for path in (first, second):
        network, spec = load_model(path)
        with torch.inference_mode():
            expected += predict_probabilities(
                network, images, spec.input_hw, tta="flips", output_hw=(80, 80)
            )
    expected = (expected / 2 * 255).numpy()
    assert np.abs(maps.probabilities.astype(np.float32) - expected).max() <= 0.51
    # The maps change with the teachers: the two differ somewhere.
    alone = TeacherMaps.build(cache, [first], tta="flips")
    assert alone.path != maps.path
    assert not np.array_equal(alone.probabilities, maps.probabilities)
    # Reused, not recomputed: same file, untouched.
    written = maps.path.stat().st_mtime_ns
    again = TeacherMaps.build(cache, [first, second], tta="flips")
    assert again.path == maps.path and maps.path.stat().st_mtime_ns == written
    assert TeacherMaps.build(cache, [first, second], tta="none").path != maps.path
    assert not list(tmp_path.glob("*.tmp"))
    with pytest.raises(ConfigError, match=r"distill\.teachers: no such model file"):
        TeacherMaps.build(cache, [tmp_path / "missing.safetensors"])
    foreign = tmp_path / "foreign.safetensors"
    foreign.write_bytes(b"not a model")
    with pytest.raises(ConfigError, match=r"distill\.teachers"):
        TeacherMaps.build(cache, [foreign])


def test_the_teachers_map_moves_with_the_image_under_strong_geometry(tmp_path):
    folder = PolypFolder.open(KVASIR)
    stems = folder.paired_stems[:4]
    cache = CachedImages.build(folder, stems, (80, 80), tmp_path)
    # A stand-in teacher whose map is the label itself: after augmentation and
    # resizing both channels must still outline the same pixels.
    maps = TeacherMaps(
        np.asarray(cache.masks) * np.uint8(255), tmp_path / "maps.npy", (), "none"
    )
    strong = dataclasses.replace(
        AugmentConfig(),
        affine_p=1.0,
        rotate_deg=90.0,
        scale=(0.5, 1.5),
        elastic_p=1.0,
        color_jitter_p=1.0,
    )
    dataset = PolypDataset(
        folder,
        stems,
        (64, 64),
        train_augmentations(strong, seed=3),
        cache=cache,
        teacher=maps,
    )
    plain = PolypDataset(folder, stems, (64, 64), cache=cache)
    moved = 0
    for index in range(len(stems)):
        image, target = dataset[index]
        assert image.shape == (3, 64, 64) and target.shape == (2, 64, 64)
        label, soft = target[0], target[1]
        assert set(label.unique().tolist()) <= {0.0, 1.0}
        assert 0.0 <= soft.min() and soft.max() <= 1.0
        assert ((soft >= 0.5) == (label == 1)).float().mean() > 0.97
        moved += int(not torch.equal(label, plain[index][1][0]))
    assert moved >= 3
    assert maps.dice_against(cache.masks) == 1.0
    inverted = TeacherMaps(255 - maps.probabilities, maps.path, (), "none")
    assert inverted.dice_against(cache.masks) == 0.0
    half = np.asarray(cache.masks).copy()
    half[:2] = 0  # the first two labels lost: Dice = 2 * kept / (kept + all)
    kept, everything = int(half.sum()), int(np.asarray(cache.masks).sum())
    expected = 2 * kept / (kept + everything)
    assert maps.dice_against(half, chunk=3) == pytest.approx(expected)
    with pytest.raises(ValueError, match="cache"):
        PolypDataset(folder, stems, (64, 64), teacher=maps)
    wrong = TeacherMaps(np.zeros((4, 40, 40), np.uint8), tmp_path / "w.npy", (), "none")
    with pytest.raises(Exception, match="do not fit"):
        PolypDataset(folder, stems, (64, 64), cache=cache, teacher=wrong)


def test_multiscale_resizes_the_label_nearest_and_the_teacher_bilinearly():
    model = multiscale_model((0.75, 1.25))
    torch.manual_seed(0)
    x = torch.rand(2, 3, 160, 160)
    y = torch.cat(
        [(torch.rand(2, 1, 160, 160) > 0.5).float(), torch.rand(2, 1, 160, 160)], 1
    )
    for _ in range(10):
        xs, ys = model._rescale(x, y)
        assert ys.shape == (2, 2, *xs.shape[-2:]) and xs.shape[-1] != 160
        assert set(ys[:, 0].unique().tolist()) <= {0.0, 1.0}
        assert len(ys[:, 1].unique()) > 1000  # interpolated, not sampled


def test_distillation_needs_the_image_cache():
    with pytest.raises(ConfigError, match=r"data\.cache_scale"):
        load_train_config(None, ["distill.teachers=[a.safetensors]"])
    with pytest.raises(ConfigError, match="weight"):
        load_train_config(None, ["distill.weight=1.5"])


@pytest.mark.slow
def test_a_distilled_run_trains_records_its_teachers_and_refuses_another_on_resume(
    tmp_path, tiny_spec
):
    teacher = _teacher(tiny_spec, tmp_path, 0)
    overrides = [
        *TINY,
        "optimization.epochs=1",
        "data.cache_scale=1.25",
        f"distill.teachers=[{teacher}]",
        "distill.weight=0.5",
        "augment.multiscale=[0.75, 1.0]",
    ]
    run_dir = tmp_path / "runs" / "distilled"
    result = train(
        load_train_config(None, overrides, data_root=KVASIR),
        run_dir,
        device="cpu",
        progress=False,
    )
    provenance = load_model(result.model_path)[1].provenance
    assert provenance["distill"] == (
        "weight 0.5, teacher TTA flips, teachers (file sha256): "
        f"teacher0.safetensors {file_sha256(teacher)}"
    )
    assert len(list((tmp_path / "runs" / ".cache").glob("*-teachers-*.npy"))) == 1
    other = _teacher(tiny_spec, tmp_path, 1)
    changed = [*overrides[:-3], f"distill.teachers=[{other}]", *overrides[-2:]]
    with pytest.raises(ConfigError, match=r"distill\.teachers"):
        train(
            load_train_config(None, changed, data_root=KVASIR),
            run_dir,
            device="cpu",
            progress=False,
            resume=True,
        )
