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


def test_groups_resample_whole_sequences(tmp_path):
    rng = np.random.default_rng(5)
    # 6 sequences of 10 frames; within a sequence B is better or worse together,
    # as frames of one video are.
    rows_a, rows_b, groups = [], [], {}
    for sequence in range(6):
        shift = 120 if sequence % 2 else -100
        for frame in range(10):
            stem = f"s{sequence}f{frame}"
            miss = int(rng.integers(150, 250))
            rows_a.append((stem, 1000 - miss, 50, miss, 9000))
            rows_b.append((stem, 1000 - miss + shift, 50, miss - shift, 9000))
            groups[stem] = str(sequence)
    a = read_report(_report(tmp_path / "a.csv", rows_a))
    b = read_report(_report(tmp_path / "b.csv", rows_b))
    by_image = compare(a, b, resamples=4000)
    by_sequence = compare(a, b, resamples=4000, groups=groups)
    assert (by_image.groups, by_sequence.groups) == (60, 6)
    assert by_sequence.micro.delta == by_image.micro.delta  # the scores themselves
    width = lambda d: d.high - d.low  # noqa: E731
    assert width(by_sequence.micro) > 1.5 * width(by_image.micro)
    assert width(by_sequence.macro) > 1.5 * width(by_image.macro)
    # One group per image is the plain bootstrap (other draws, the same spread).
    alone = compare(a, b, resamples=4000, groups={s: s for s in groups})
    assert alone.groups == 60
    assert width(alone.micro) == pytest.approx(width(by_image.micro), rel=0.15)
    del groups["s0f0"]
    with pytest.raises(ReportError, match="no group for 1 of the 60 images"):
        compare(a, b, groups=groups)


def test_the_command_reads_groups_from_a_csv(tmp_path, capsys):
    rows = _rows(np.random.default_rng(6), 8, [50] * 8)
    a = _report(tmp_path / "a.csv", rows)
    b = _report(
        tmp_path / "b.csv", [(s, tp - 5, fp, fn + 5, tn) for s, tp, fp, fn, tn in rows]
    )
    sequences = tmp_path / "sequences.csv"
    sequences.write_text(
        "frame,sequence\n" + "".join(f"img{i},{i // 4}\n" for i in range(8))
    )
    argv = ["compare", str(a), str(b), "--resamples", "200", "--groups", str(sequences)]
    assert main([*argv, "--stem-column", "frame", "--group-column", "sequence"]) == 0
    assert "of 2 groups" in capsys.readouterr().out
    assert main(argv) == 1  # default columns stem, group: not in this file
    err = capsys.readouterr().err
    assert "no column group, stem" in err and "--stem-column" in err
