"""Training config errors and the CLI's exit codes and one-line messages."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from streamseg.config import ConfigError
from training.__main__ import main
from training.config import TrainConfig, check_resumable, load_train_config

KVASIR = Path(__file__).parent / "fixtures" / "kvasir"
REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optimization.epoch=3"], "did you mean 'epochs'"),
        (["optimization.loss=focal+lovasz"], "unknown term"),
        (["optimization.precision=fp8"], "expected one of"),
        (["model.input_hw=[100, 320]"], "multiples of 32"),
        (["model.mean=[0.5, 0.5, 0.5]"], "give both or neither"),
        (["model.encoder_weights=ssl"], "expected one of"),
        (["data.val_fraction=1.5"], r"val_fraction: expected a value in \(0, 1\)"),
        (["optimization.batch_size=0"], "batch_size: expected >= 1"),
        (["calibration.thresholds=[0.5, 1.0]"], "thresholds"),
        (["augment.hflip_p=2"], "probability"),
    ],
)
def test_bad_values_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_train_config(None, overrides)


def test_shipped_configs_load():
    seed = load_train_config(REPO / "configs" / "kvasir_unetpp_b2.yaml")
    assert (seed.model.architecture, seed.model.encoder_name) == (
        "UnetPlusPlus",
        "efficientnet-b2",
    )
    assert seed.model.input_hw == (320, 320) and seed.optimization.loss == "focal"
    assert (
        seed.optimization.lr,
        seed.optimization.epochs,
        seed.optimization.batch_size,
    ) == (1e-3, 50, 8)
    quick = load_train_config(REPO / "configs" / "quick_cpu.yaml", data_root=KVASIR)
    assert quick.data.root == KVASIR and quick.optimization.epochs <= 10


def _flat(config: TrainConfig) -> dict[str, object]:
    return {
        f"{section}.{key}": value
        for section, values in dataclasses.asdict(config).items()
        for key, value in values.items()
    }


@pytest.mark.parametrize(
    ("config", "parent", "differences"),
    [
        (  # the full-size recipe with the bundled model's network
            "kvasir_fpn_lite2_v2.yaml",
            "kvasir_unetpp_lite2_v2.yaml",
            {
                "model.architecture": "FPN",
                "model.input_hw": (320, 320),
                "optimization.precision": "auto",
                "data.num_workers": 1,
                "output.name": "kvasir_fpn_lite2_v2",
            },
        ),
        (  # stage 2's recipe with a slimmer decoder over the bundled model's encoder
            "kvasir_fpn_lite2_slim.yaml",
            "kvasir_fpn_lite2_from_bundled.yaml",
            {
                "model.init_from": Path(
                    "runs/kvasir_fpn_lite2_finetune/model.safetensors"
                ),
                "model.model_kwargs": {
                    "decoder_pyramid_channels": 128,
                    "decoder_segmentation_channels": 32,
                },
                "output.name": "kvasir_fpn_lite2_slim",
            },
        ),
        (  # the slim file fine-tuned as stage 3 fine-tuned the wide one
            "kvasir_fpn_lite2_slim_finetune.yaml",
            "kvasir_fpn_lite2_slim.yaml",
            {
                "model.init_from": Path("runs/kvasir_fpn_lite2_slim/model.safetensors"),
                "optimization.epochs": 8,
                "optimization.lr": 0.0003,
                "output.name": "kvasir_fpn_lite2_slim_finetune",
            },
        ),
    ],
)
def test_candidate_configs_differ_from_their_parent_only_as_documented(
    config, parent, differences
):
    got = _flat(load_train_config(REPO / "configs" / config))
    base = _flat(load_train_config(REPO / "configs" / parent))
    changed = {key: got[key] for key in got if got[key] != base[key]}
    assert changed == differences


def test_resume_refuses_a_changed_recipe_but_allows_more_epochs():
    saved = TrainConfig()
    longer = dataclasses.replace(
        saved, optimization=dataclasses.replace(saved.optimization, epochs=80)
    )
    check_resumable(saved, longer)
    other = dataclasses.replace(
        saved, model=dataclasses.replace(saved.model, encoder_name="resnet34")
    )
    with pytest.raises(ConfigError, match=r"model\.encoder_name"):
        check_resumable(saved, other)


def _run(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err


def test_cli_config_error_exits_2_with_one_line(capsys, tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("optimization:\n  lr: fast\n")
    code, err = _run(capsys, "train", "--config", str(config), "--data", str(KVASIR))
    assert code == 2
    assert "optimization.lr: expected a number" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_cli_missing_config_is_a_usage_error(capsys):
    code, err = _run(capsys, "train", "--data", str(KVASIR))
    assert code == 2 and "--config is required" in err


def test_cli_bad_device_is_a_usage_error(capsys, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("{}\n")
    code, err = _run(capsys, "train", "--config", str(config), "--device", "tpu")
    assert code == 2 and "expected auto, cpu, cuda" in err


def test_cli_missing_data_is_a_runtime_error(capsys, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("{}\n")
    code, err = _run(
        capsys,
        "train",
        "--config",
        str(config),
        "--data",
        str(tmp_path / "nowhere"),
        "--run-dir",
        str(tmp_path / "run"),
        "--device",
        "cpu",
    )
    assert code == 1 and "no such dataset folder" in err


def test_cli_missing_model_file_is_a_runtime_error(capsys, tmp_path):
    code, err = _run(
        capsys,
        "evaluate",
        "--model",
        str(tmp_path / "m.safetensors"),
        "--data",
        str(KVASIR),
    )
    assert code == 1 and "no such model file" in err


def test_cli_argparse_errors_exit_2():
    with pytest.raises(SystemExit) as stop:
        main(["evaluate", "--data", str(KVASIR)])  # --model missing
    assert stop.value.code == 2
