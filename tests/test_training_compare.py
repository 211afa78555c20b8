"""``python -m training compare``: two per-image reports, B - A and its interval."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from training.__main__ import main
from training.compare import ReportError, compare, read_report

COLUMNS = ["split", "stem", "tp", "fp", "fn", "tn", "dice"]


def _report(path, rows):
    """Write an evaluate-style per-image CSV of (stem, tp, fp, fn, tn) rows."""
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(COLUMNS)
        for stem, tp, fp, fn, tn in rows:
            writer.writerow(["test", stem, tp, fp, fn, tn, 2 * tp / (2 * tp + fp + fn)])
    return path


def _rows(rng, n, miss):
    """n images with 1000 polyp pixels each; ``miss`` of them missed per image."""
    fp = rng.integers(0, 200, n)
    return [(f"img{i}", 1000 - miss[i], int(fp[i]), miss[i], 9000) for i in range(n)]


def test_equal_reports_differ_by_nothing(tmp_path):
    rows = _rows(np.random.default_rng(0), 30, [100] * 30)
    a = read_report(_report(tmp_path / "a.csv", rows))
    b = read_report(_report(tmp_path / "b.csv", rows[::-1]))  # order does not matter
    result = compare(a, b, resamples=500)
    assert result.images == 30 and result.same == 30
    for row in (result.micro, result.macro):
        assert row.delta == 0 and row.low == 0 and row.high == 0


def test_a_model_better_on_every_image_has_an_interval_above_zero(tmp_path):
    rng = np.random.default_rng(1)
    miss = rng.integers(100, 300, 40)
    a = read_report(_report(tmp_path / "a.csv", _rows(rng, 40, miss)))
    b = read_report(_report(tmp_path / "b.csv", _rows(rng, 40, miss - 50)))
    result = compare(a, b, resamples=2000)
    assert result.b_better + result.b_worse + result.same == 40
    # Micro Dice by hand: pixels pooled over the images.
    tp, fp, fn = (a.counts[:, i].sum() for i in range(3))
    assert result.micro.a == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert result.micro.low <= result.micro.delta <= result.micro.high
    assert result.macro.low <= result.macro.delta <= result.macro.high


def test_noise_gives_an_interval_around_zero(tmp_path):
    rng = np.random.default_rng(2)
    a = read_report(
        _report(tmp_path / "a.csv", _rows(rng, 60, rng.integers(0, 400, 60)))
    )
    b = read_report(
        _report(tmp_path / "b.csv", _rows(rng, 60, rng.integers(0, 400, 60)))
    )
    result = compare(a, b, resamples=2000)
    assert result.micro.low < 0 < result.micro.high
    assert result.macro.low < 0 < result.macro.high
    assert 0.025 < result.share_b_better_micro < 0.975


def test_reports_of_different_images_or_masks_are_refused(tmp_path):
    rows = _rows(np.random.default_rng(3), 5, [10] * 5)
    a = read_report(_report(tmp_path / "a.csv", rows))
    other = read_report(_report(tmp_path / "b.csv", [*rows[:4], ("x", 990, 0, 10, 0)]))
    with pytest.raises(ReportError, match="do not score the same images"):
        compare(a, other)
    resized = [(s, tp * 2, fp, fn, tn) for s, tp, fp, fn, tn in rows]
    with pytest.raises(ReportError, match="different masks or sizes"):
        compare(a, read_report(_report(tmp_path / "c.csv", resized)))
    (tmp_path / "d.csv").write_text("stem,dice\nx,0.5\n")
    with pytest.raises(ReportError, match="missing columns: fn, fp, tn, tp"):
        read_report(tmp_path / "d.csv")


def test_the_command_prints_the_table_and_fails_in_one_line(tmp_path, capsys):
    rng = np.random.default_rng(4)
    a = _report(tmp_path / "a.csv", _rows(rng, 20, rng.integers(0, 300, 20)))
    b = _report(tmp_path / "b.csv", _rows(rng, 20, rng.integers(0, 300, 20)))
    assert main(["compare", str(a), str(b), "--resamples", "300"]) == 0
    out = capsys.readouterr().out
    assert "micro Dice" in out and "95% interval" in out and "B higher on" in out
    assert main(["compare", str(a), str(tmp_path / "none.csv")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such per-image report" in err[0]
    assert main(["compare", str(a), str(b), "--confidence", "95"]) == 2
