"""Full-resolution evaluation reports and the EDA step, on real fixture images."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from training.__main__ import main
from training.data import DatasetError, PolypFolder, read_split
from training.eda import analyze, write_eda
from training.evaluate import evaluate_model, predict_image, resolve_split, write_report
from training.metrics import confusion_counts, macro_scores, micro_scores

KVASIR = Path(__file__).parent / "fixtures" / "kvasir"


def test_scores_are_recomputed_from_full_resolution_masks(model_file):
    report, thumbnails = evaluate_model(
        model_file, KVASIR, "test", device="cpu", threshold=0.5
    )
    folder = PolypFolder.open(KVASIR)
    stems = read_split(KVASIR / "splits" / "test.txt")
    assert [r.stem for r in report.images] == stems
    from streamseg.model import load_model

    network, spec = load_model(model_file)
    counts = []
    for stem in stems:
        pixels, mask = folder.load_pair(stem)
        probabilities = predict_image(
            network, pixels, spec.input_hw, torch.device("cpu")
        )
        assert probabilities.shape == mask.shape  # full resolution, not the 64x64 input
        counts.append(
            confusion_counts(probabilities >= 0.5, torch.from_numpy(mask).bool())[0]
        )
    counts = np.stack(counts)
    assert report.micro == micro_scores(counts) and report.macro == macro_scores(counts)
    row = report.images[0]
    assert (row.tp, row.fp, row.fn, row.tn) == tuple(counts[0])
    assert row.height * row.width == counts[0].sum()
    assert thumbnails[stems[0]].dtype == np.uint8


def test_an_ensemble_scores_the_mean_probability_at_the_mean_threshold(
    model_file, tiny_spec, tmp_path
):
    import dataclasses

    from streamseg.model import build_network, load_model, save_model

    torch.manual_seed(1)
    other_spec = dataclasses.replace(tiny_spec, input_hw=(96, 96), threshold=0.3)
    other = save_model(
        tmp_path / "other.safetensors", build_network(other_spec), other_spec
    )
    report, _ = evaluate_model([model_file, other], KVASIR, "test", device="cpu")
    assert report.threshold == pytest.approx(0.4) and report.members == 2
    assert report.model == f"{model_file} + {other}"
    members = [load_model(model_file), load_model(other)]
    folder = PolypFolder.open(KVASIR)
    counts = []
    for stem in read_split(KVASIR / "splits" / "test.txt"):
        pixels, mask = folder.load_pair(stem)
        mean = sum(
            predict_image(network, pixels, spec.input_hw, torch.device("cpu"))
            for network, spec in members
        ) / len(members)
        counts.append(confusion_counts(mean >= 0.4, torch.from_numpy(mask).bool())[0])
    assert report.micro == micro_scores(np.stack(counts))
    alone, _ = evaluate_model(model_file, KVASIR, "test", device="cpu")
    assert alone.members == 1 and alone.threshold == 0.5
    summary = report.summary()
    assert summary["members"] == 2 and "the members' mean" in summary["resolution"]


def test_input_hw_replaces_each_members_input_size(model_file):
    from streamseg.model import load_model

    network, spec = load_model(model_file)
    assert tuple(spec.input_hw) == (64, 64)
    folder = PolypFolder.open(KVASIR)
    stems = read_split(KVASIR / "splits" / "test.txt")
    cpu = torch.device("cpu")

    def counts_of(sizes):
        counts = []
        for stem in stems:
            pixels, mask = folder.load_pair(stem)
            mean = sum(
                predict_image(network, pixels, size, cpu) for size in sizes
            ) / len(sizes)
            counts.append(
                confusion_counts(mean >= 0.5, torch.from_numpy(mask).bool())[0]
            )
        return np.stack(counts)

    def counts_in(report):
        return np.array([[r.tp, r.fp, r.fn, r.tn] for r in report.images])

    at_96, _ = evaluate_model(
        model_file, KVASIR, "test", device="cpu", input_hw=[(96, 96)]
    )
    assert np.array_equal(counts_in(at_96), counts_of([(96, 96)]))
    assert not np.array_equal(counts_in(at_96), counts_of([(64, 64)]))  # size mattered
    assert at_96.input_hw == ((96, 96),) and at_96.input_hw_given
    assert "96x96 (given" in at_96.summary()["resolution"]
    scales, _ = evaluate_model(
        [model_file, model_file],
        KVASIR,
        "test",
        device="cpu",
        input_hw=[(64, 64), (96, 128)],
    )
    assert np.array_equal(counts_in(scales), counts_of([(64, 64), (96, 128)]))
    assert scales.summary()["input_hw"] == [[64, 64], [96, 128]]
    own, _ = evaluate_model(model_file, KVASIR, "test", device="cpu")
    assert own.input_hw == ((64, 64),) and not own.input_hw_given
    with pytest.raises(ValueError, match="one per model"):
        evaluate_model(
            model_file, KVASIR, "test", device="cpu", input_hw=[(64, 64)] * 2
        )
    with pytest.raises(ValueError, match="multiples of 32"):
        evaluate_model(model_file, KVASIR, "test", device="cpu", input_hw=[(100, 100)])


def test_the_evaluate_cli_takes_input_sizes_and_names_bad_ones(
    model_file, tmp_path, capsys
):
    args = ["evaluate", "--model", str(model_file), "--data", str(KVASIR)]
    args += ["--device", "cpu", "--out", str(tmp_path)]
    assert main([*args, "--input-hw", "96x128"]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "network input 96x128" in printed
    summary = json.loads((tmp_path / "test_summary.json").read_text())
    assert summary["input_hw"] == [[96, 128]]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--input-hw", "100"])
    assert exit_info.value.code == 2
    assert "multiples of 32" in capsys.readouterr().err
    assert main([*args, "--input-hw", "64", "96"]) == 2
    assert "one per --model" in " ".join(capsys.readouterr().err.split())


def test_the_evaluate_cli_wants_an_out_folder_for_an_ensemble(
    model_file, tmp_path, capsys
):
    args = ["evaluate", "--model", str(model_file), str(model_file)]
    args += ["--data", str(KVASIR), "--device", "cpu"]
    assert main(args) != 0
    assert "--out" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path)]) == 0
    printed = " ".join(capsys.readouterr().out.split())  # the console wraps lines
    assert "mean of 2 models" in printed
    assert json.loads((tmp_path / "test_summary.json").read_text())["members"] == 2


def test_reports_name_split_and_averaging(model_file, tmp_path):
    report, thumbnails = evaluate_model(model_file, KVASIR, "test", device="cpu")
    paths = write_report(report, thumbnails, tmp_path, cases=1)
    summary = json.loads(paths["summary"].read_text())
    assert summary["split"] == "test" and summary["images"] == 2
    assert (
        "pooled" in summary["micro"]["averaging"]
        and "mean over images" in summary["macro"]["averaging"]
    )
    assert {"dice", "iou", "precision", "recall"} <= set(summary["micro"])
    with open(paths["per_image"], newline="") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 2 and {r["split"] for r in rows} == {"test"}
    picture = cv2.imread(str(paths["cases"]))
    assert picture is not None and picture.shape[1] >= 3 * 200


def test_flip_tta_averages_three_views(model_file):
    from streamseg.model import load_model

    network, spec = load_model(model_file)
    pixels = PolypFolder.open(KVASIR).load_image(
        read_split(KVASIR / "splits" / "test.txt")[0]
    )
    device = torch.device("cpu")
    plain = predict_image(network, pixels, spec.input_hw, device)
    tta = predict_image(network, pixels, spec.input_hw, device, tta=True)
    h_flip = predict_image(network, pixels[:, ::-1].copy(), spec.input_hw, device).flip(
        -1
    )
    v_flip = predict_image(network, pixels[::-1].copy(), spec.input_hw, device).flip(-2)
    assert torch.allclose(tta, (plain + h_flip + v_flip) / 3, atol=1e-6)
    assert not torch.allclose(tta, plain)


def test_split_names_and_files(tmp_path):
    assert resolve_split(KVASIR, "test") == ("test", KVASIR / "splits" / "test.txt")
    custom = tmp_path / "val.txt"
    custom.write_text("x\n")
    assert resolve_split(KVASIR, str(custom)) == ("val", custom)
    with pytest.raises(DatasetError, match="expected 'test', 'train' or a split file"):
        resolve_split(KVASIR, "validation")


def test_evaluate_cli_prints_the_table_and_writes_reports(model_file, tmp_path, capsys):
    code = main(
        [
            "evaluate",
            "--model",
            str(model_file),
            "--data",
            str(KVASIR),
            "--out",
            str(tmp_path),
            "--device",
            "cpu",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "split 'test'" in out and "micro" in out and "macro" in out
    assert (tmp_path / "test_summary.json").is_file() and (
        tmp_path / "test_cases.png"
    ).is_file()


def test_eda_counts_sizes_and_areas(tmp_path):
    report, facts = analyze(KVASIR)
    assert (report.images, report.masks, report.pairs) == (8, 8, 8)
    assert report.split_counts == {"train": 6, "test": 2} and report.split_overlap == 0
    heights = [f.height for f in facts]
    assert report.height_range == (
        min(heights),
        max(heights),
    ) and report.width_range == (96, 96)
    quantiles = report.area_quantiles["all"]
    values = list(quantiles.values())
    assert values == sorted(values) and 0.0 < values[0] and values[-1] < 1.0
    assert set(report.area_quantiles) == {"all", "train", "test"}
    first = PolypFolder.open(KVASIR).load_mask(facts[0].stem)
    assert facts[0].area_fraction == pytest.approx(first.mean())
    paths = write_eda(report, facts, tmp_path, grid_count=4)
    assert json.loads(paths["summary"].read_text())["pairs"] == 8
    grid = cv2.imread(str(paths["grid"]))
    assert grid is not None and grid.shape[0] >= 180
