"""Recipe levers: config checks, structure loss, schedules, weight EMA, multiscale."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch.nn import functional as F
from training_helpers import multiscale_model

from streamseg.config import ConfigError
from training.augment import train_augmentations
from training.callbacks import WeightAverage, warmup_schedule
from training.config import AugmentConfig, OptimizationConfig, load_train_config
from training.losses import StructureLoss, build_loss


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("augment.rotate_deg=200", "rotate_deg"),
        ("augment.shear_deg=95", "shear_deg"),
        ("augment.elastic_p=1.5", "elastic_p"),
        ("augment.elastic_sigma=0", "elastic_sigma"),
        ("augment.multiscale=[0.75, 9.0]", "multiscale"),
        ("augment.translate_fraction=0.9", "translate_fraction"),
        ("optimization.optimizer=sgd", "optimizer"),
        ("optimization.scheduler=step", "scheduler"),
        ("optimization.warmup_epochs=50", "warmup_epochs"),
        ("optimization.ema_decay=1.0", "ema_decay"),
        ("optimization.grad_clip=0", "grad_clip"),
        ("optimization.weight_decay=-1", "weight_decay"),
        ("optimization.min_lr_fraction=1", "min_lr_fraction"),
        ("optimization.loss=structure+lovasz", "lovasz"),
        ("data.cache_scale=0.5", "cache_scale"),
    ],
)
def test_bad_lever_values_are_config_errors_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_train_config(None, [override])


def test_the_bundled_recipe_config_is_the_seed_recipe_with_the_lite2_encoder():
    seed = load_train_config("configs/kvasir_unetpp_b2.yaml")
    lite2 = load_train_config("configs/kvasir_unetpp_lite2.yaml")
    assert lite2.model.encoder_name == "tu-tf_efficientnet_lite2"
    assert lite2.model.encoder_weights == "lite-imagenet"
    assert lite2.augment == seed.augment
    for key in ("epochs", "batch_size", "lr", "weight_decay", "loss", "scheduler"):
        assert getattr(lite2.optimization, key) == getattr(seed.optimization, key)
    assert lite2.optimization.ema_decay is None and lite2.data.cache_scale is None


def _reference_structure_loss(pred, mask):
    # PraNet / HarDNet-MSEG Train.py, at the 352 px input it was written for.
    weit = 1 + 5 * torch.abs(
        F.avg_pool2d(mask, kernel_size=31, stride=1, padding=15) - mask
    )
    wbce = F.binary_cross_entropy_with_logits(pred, mask, reduction="none")
    wbce = (weit * wbce).sum(dim=(2, 3)) / weit.sum(dim=(2, 3))
    pred = torch.sigmoid(pred)
    inter = ((pred * mask) * weit).sum(dim=(2, 3))
    union = ((pred + mask) * weit).sum(dim=(2, 3))
    wiou = 1 - (inter + 1) / (union - inter + 1)
    return (wbce + wiou).mean()


def test_structure_loss_matches_pranet_at_352_px():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 1, 352, 352, generator=generator)
    mask = torch.zeros(2, 1, 352, 352)
    mask[0, :, 100:200, 120:260] = 1
    mask[1, :, 10:40, 300:350] = 1
    loss = StructureLoss()
    assert loss.kernel_px(352) == 31
    assert loss(logits, mask).item() == pytest.approx(
        _reference_structure_loss(logits, mask).item(), rel=1e-6
    )


def test_structure_loss_rewards_the_right_mask_and_scales_its_window():
    loss = StructureLoss()
    assert [loss.kernel_px(h) for h in (352, 160, 32)] == [31, 15, 3]
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., 16:48, 16:48] = 1
    right = (mask * 2 - 1) * 12.0
    logits = torch.zeros_like(mask, requires_grad=True)
    assert loss(right, mask).item() < 0.01 < loss(-right, mask).item()
    loss(logits, mask).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    assert list(build_loss(OptimizationConfig(loss="dice+bce")).terms) == [
        "dice",
        "bce",
    ]


def test_warmup_schedules_rise_linearly_then_decay_to_their_floor():
    cosine = warmup_schedule(100, 10, "cosine", min_fraction=0.01)
    assert cosine(0) == pytest.approx(0.1) and cosine(9) == pytest.approx(1.0)
    assert cosine(55) == pytest.approx(0.01 + 0.99 * 0.5)
    assert cosine(100) == pytest.approx(0.01) and cosine(500) == pytest.approx(0.01)
    poly = warmup_schedule(100, 0, "poly", power=0.9)
    assert poly(0) == 1.0 and poly(50) == pytest.approx(0.5**0.9)
    assert poly(100) == 0.0
    values = [cosine(s) for s in range(10, 101)]
    assert all(a >= b for a, b in itertools.pairwise(values))
    with pytest.raises(ValueError, match="kind"):
        warmup_schedule(10, 1, "step")


def test_weight_average_follows_the_weights_with_a_ramped_decay():
    network = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    average = WeightAverage(network, decay=0.9)
    start = {k: v.clone() for k, v in network.state_dict().items()}
    with torch.no_grad():
        network[0].weight.add_(1.0)
        network[1].num_batches_tracked.fill_(7)
    average.update(network)  # first update: decay min(0.9, 2/11)
    decay = 2 / 11
    expected = start["0.weight"] * decay + network[0].weight * (1 - decay)
    assert torch.allclose(average.shadow["0.weight"], expected)
    assert int(average.shadow["1.num_batches_tracked"]) == 7
    for _ in range(200):
        average.update(network)
    assert torch.allclose(average.shadow["0.weight"], network[0].weight, atol=1e-6)
    copy = WeightAverage(network, decay=0.9)
    copy.load_state_dict(average.state_dict())
    assert copy.updates == 201
    assert all(torch.equal(copy.shadow[k], average.shadow[k]) for k in copy.shadow)
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(network, decay=1.0)


def test_strong_geometry_moves_image_and_mask_together_and_keeps_masks_binary():
    config = AugmentConfig(
        affine_p=1.0,
        rotate_deg=90,
        scale=(0.5, 1.5),
        shear_deg=10,
        elastic_p=1.0,
        color_jitter_p=0.0,
    )
    pipeline = train_augmentations(config, seed=3)
    mask = np.zeros((96, 96), np.uint8)
    mask[30:70, 20:60] = 1
    image = np.repeat(mask[..., None].astype(np.float32), 3, axis=2)
    changed = 0
    for _ in range(4):
        out = pipeline(image=image, mask=mask)
        assert out["image"].shape == (96, 96, 3) and out["mask"].shape == (96, 96)
        assert set(np.unique(out["mask"])) <= {0, 1}
        # The image is the mask drawn in white: the two must still overlap.
        white = out["image"][..., 0] > 0.5
        overlap = (white & (out["mask"] == 1)).sum() / max(1, white.sum())
        assert overlap > 0.9
        changed += int(not np.array_equal(out["mask"], mask))
    assert changed >= 3


def test_multiscale_rescales_training_batches_to_multiples_of_32():
    model = multiscale_model((0.75, 1.0, 1.25))
    torch.manual_seed(0)
    x = torch.rand(2, 3, 160, 160)
    y = (torch.rand(2, 1, 160, 160) > 0.5).float()
    sizes = set()
    for _ in range(30):
        xs, ys = model._rescale(x, y)
        assert xs.shape[-2:] == ys.shape[-2:] and xs.shape[-1] % 32 == 0
        assert set(ys.unique().tolist()) <= {0.0, 1.0}
        sizes.add(xs.shape[-1])
    # 0.75 x 160 = 120 rounds to 128; 1.25 x 160 = 200 rounds to 192.
    assert sizes == {128, 160, 192}


def _recorded_differences(
    provenance: dict, config_path: str, overrides: tuple[str, ...] = ()
) -> tuple[set[str], dict]:
    """Keys whose recorded value differs from the config file's; keys newer than it."""
    import json

    from streamseg.config import to_dict
    from training.config import _flatten

    recorded = _flatten(json.loads(provenance["config"]))
    config = json.loads(
        json.dumps(to_dict(load_train_config(config_path, overrides)), default=str)
    )
    current = _flatten(config)
    # Where and how fast it ran, not what it learned.
    machine = {"data.root", "data.num_workers", "optimization.threads", "output.name"}
    newer = {key: current[key] for key in current.keys() - recorded.keys()}
    if newer.get("distill.teachers") == []:
        # Distillation came after these files; off, its section changes nothing.
        newer = {k: v for k, v in newer.items() if not k.startswith("distill.")}
    return {
        key
        for key in recorded.keys() & current.keys()
        if recorded[key] != current[key] and key not in machine
    }, newer


def _make_overrides(config_path: str) -> tuple[str, ...]:
    """The ``--set`` overrides ``make bundled-model`` passes with one config."""
    import shlex
    from pathlib import Path

    makefile = Path(__file__).resolve().parents[1] / "Makefile"
    (line,) = [
        line
        for line in makefile.read_text().splitlines()
        if f"--config {config_path} " in line
    ]
    words = shlex.split(line)
    return tuple(words[i + 1] for i, word in enumerate(words) if word == "--set")


def test_the_bundled_default_is_the_one_run_recipe_make_reproduces():
    import json

    from streamseg.model import read_spec

    config = "configs/kvasir_fpn_lite2_v2.yaml"
    provenance = read_spec("streamseg/assets/default.safetensors").provenance
    overrides = _make_overrides(config)
    assert overrides == ("optimization.seed=1",)
    differing, newer = _recorded_differences(provenance, config, overrides)
    # It trained in bf16 on a CPU where bf16 is the faster (docs/results.md, "CPU
    # training speed"); `precision: auto` chooses fp32 on CPUs (bf16 can be slower).
    assert differing == {"optimization.precision"}
    assert json.loads(provenance["config"])["optimization"]["precision"] == "bf16"
    # The training package records no machine's folders.
    assert set(newer) <= {"data.root", "data.num_workers", "output.runs_dir"}
    assert "init_from" not in provenance  # one run, from ImageNet weights
    assert provenance["encoder_init"].startswith("ImageNet weights")
    assert provenance["dataset"].endswith("contents sha256 9db76e139ccffb5a")


def test_the_fast_model_is_stage_4_of_the_previous_default():
    import json

    from streamseg.model import read_spec

    provenance = read_spec("streamseg/assets/fast.safetensors").provenance
    # Where a run read its data and how many loader processes it used were left out of
    # these files' records (paths of one machine): they may only be missing.
    dropped = {"data.root", "data.num_workers"}
    # Stage 4: configs/kvasir_fpn_lite2_slim.yaml. Its record names stage 3's run folder
    # as model.init_from, as the config does; the run read the previous default's file.
    differing, newer = _recorded_differences(
        provenance, "configs/kvasir_fpn_lite2_slim.yaml"
    )
    assert not differing and set(newer) <= dropped
    # Its encoder (379 of 409 tensors) came from stage 3; the decoder did not.
    assert "379 of 409 tensors" in provenance["encoder_init"]
    assert "sha256 8c33fc10d6c27341" in provenance["encoder_init"]
    # Stage 3 (the previous default): configs/kvasir_fpn_lite2_finetune.yaml, every
    # tensor from stage 2's file.
    stage3 = json.loads(provenance["init_from"])
    assert stage3["sha256"].startswith("8c33fc10d6c27341")
    differing, newer = _recorded_differences(
        stage3["provenance"], "configs/kvasir_fpn_lite2_finetune.yaml"
    )
    assert not differing and set(newer) <= dropped
    stage2 = json.loads(stage3["provenance"]["init_from"])
    assert stage2["sha256"].startswith("2b4bfff86f1d4962")
    # Stage 2: configs/kvasir_fpn_lite2_from_bundled.yaml; it started from the bundled
    # UNet++ of its day, stage 1's file, which the config now names by its run folder.
    differing, newer = _recorded_differences(
        stage2["provenance"], "configs/kvasir_fpn_lite2_from_bundled.yaml"
    )
    assert differing == {"model.init_from"} and set(newer) <= dropped
    assert (
        "UnetPlusPlus/tu-tf_efficientnet_lite2, sha256 5271eafe5763b20f"
        in (stage2["provenance"]["encoder_init"])
    )
    assert (
        "from model.safetensors (FPN/tu-tf_efficientnet_lite2, sha256 2b4bfff8"
        in (stage3["provenance"]["encoder_init"])
    )


def test_a_warmup_schedule_survives_the_weights_only_state_file(tmp_path):
    from training.config import TrainConfig
    from training.train import make_scheduler

    config = load_train_config(
        None,
        ["optimization.scheduler=warmup_cosine", "optimization.warmup_epochs=1"],
    )
    assert isinstance(config, TrainConfig)

    def fresh():
        parameter = torch.nn.Parameter(torch.zeros(1))
        optimizer = torch.optim.AdamW([parameter], lr=1e-3)
        return optimizer, make_scheduler(config, optimizer, steps_per_epoch=10)[0]

    optimizer, scheduler = fresh()
    for _ in range(25):
        optimizer.step()
        scheduler.step()
    torch.save({"scheduler": scheduler.state_dict()}, tmp_path / "state.pt")
    restored_optimizer, restored = fresh()
    restored.load_state_dict(
        torch.load(tmp_path / "state.pt", weights_only=True)["scheduler"]
    )
    restored_optimizer.load_state_dict(optimizer.state_dict())
    optimizer.step()
    scheduler.step()
    restored_optimizer.step()
    restored.step()
    assert restored.get_last_lr() == pytest.approx(scheduler.get_last_lr())
    assert 0 < scheduler.get_last_lr()[0] < 1e-3  # past warm-up, decaying
