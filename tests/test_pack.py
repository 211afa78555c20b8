"""``python -m training pack``: a lossless, verified .tar of one split, on fixtures."""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest

import training.pack
from training.__main__ import main
from training.data import PolypFolder, read_split
from training.pack import PackError, pack_split

KVASIR = Path(__file__).parent / "fixtures" / "kvasir"
TRAIN = read_split(KVASIR / "splits" / "train.txt")
needs_jpegtran = pytest.mark.skipif(
    shutil.which("jpegtran") is None,
    reason="jpegtran not installed (apt-get install libjpeg-turbo-progs)",
)


def extract(tar_path: Path, into: Path) -> Path:
    with tarfile.open(tar_path) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(into, filter="data")
        else:
            tar.extractall(into)
    return into


def assert_same_split(packed_root: Path, stems: list[str]) -> PolypFolder:
    packed, source = PolypFolder.open(packed_root), PolypFolder.open(KVASIR)
    assert sorted(packed.images) == sorted(stems) == sorted(packed.masks)
    for stem in stems:
        image, mask = packed.load_pair(stem)
        source_image, source_mask = source.load_pair(stem)
        assert image.dtype == source_image.dtype and mask.dtype == source_mask.dtype
        assert np.array_equal(image, source_image)
        assert np.array_equal(mask, source_mask)
    return packed


def test_round_trip_gives_a_dataset_folder_equal_to_the_split(tmp_path):
    out = tmp_path / "kv.tar"
    result = pack_split(KVASIR, "splits/train.txt", out)
    assert not (tmp_path / "kv.tar.partial").exists()
    assert result.count == len(TRAIN) == 6 and result.transcoded == 0
    assert result.packed_bytes == out.stat().st_size
    assert result.split_file == KVASIR / "splits" / "train.txt"

    root = extract(out, tmp_path / "x") / "kv"
    assert sorted(p.name for p in root.iterdir()) == ["images", "masks", "splits"]
    assert read_split(root / "splits" / "train.txt") == TRAIN
    packed = assert_same_split(root, TRAIN)  # the test split's stems stay out
    for stem in TRAIN:
        source_image = KVASIR / "images" / f"{stem}.jpg"
        assert packed.images[stem].read_bytes() == source_image.read_bytes()
        # the fixture masks hold grey edges; the packed ones are bilevel 0/255
        stored = cv2.imread(str(root / "masks" / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        assert stored.ndim == 2 and set(np.unique(stored)) <= {0, 255}
    assert result.source_image_bytes == result.packed_image_bytes
    assert result.source_bytes == sum(
        (KVASIR / kind / f"{stem}{suffix}").stat().st_size
        for stem in TRAIN
        for kind, suffix in (("images", ".jpg"), ("masks", ".png"))
    )


def test_pack_is_reproducible_and_split_paths_resolve(tmp_path):
    first = pack_split(KVASIR, "splits/test.txt", tmp_path / "a.tar", name="kv")
    absolute = (KVASIR / "splits" / "test.txt").resolve()
    second = pack_split(KVASIR, absolute, tmp_path / "b.tar", name="kv")
    third = pack_split(KVASIR, "test", tmp_path / "c.tar", name="kv")
    data = first.out.read_bytes()
    assert data == second.out.read_bytes() == third.out.read_bytes()
    assert first.count == 2


def test_cli_prints_the_summary(tmp_path, capsys):
    out = tmp_path / "pack" / "kvasir-train.tar"
    argv = ["pack", "--data", str(KVASIR), "--split", "splits/train.txt"]
    code = main([*argv, "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0 and out.is_file()
    rows = {
        line.split("│")[1].strip(): line.split("│")[2].strip()
        for line in printed.splitlines()
        if line.count("│") == 3
    }
    assert rows["pairs"] == "6" and rows["images"] == "copied byte for byte"
    assert rows["tar size"].startswith(f"{out.stat().st_size:,} B")
    assert rows["verified"] == "all pixels equal the source" and "wall time" in rows
    assert "--data kvasir-train" in printed
    with tarfile.open(out) as tar:
        assert "kvasir-train/splits/train.txt" in tar.getnames()


def test_a_split_stem_without_files_fails_with_one_line(tmp_path, capsys):
    split = tmp_path / "bad.txt"
    split.write_text("\n".join([*TRAIN[:2], "cjmissing0000000000000000"]) + "\n")
    out = tmp_path / "bad.tar"
    code = main(
        ["pack", "--data", str(KVASIR), "--split", str(split), "--out", str(out)]
    )
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert "\n" not in err and err.startswith("error:")
    assert "cjmissing0000000000000000" in err
    assert not out.exists() and not (tmp_path / "bad.tar.partial").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--out", "x.tar.gz"], "expected a .tar"),
        (["--out", "x.tar", "--name", "a/b"], "plain folder name"),
    ],
)
def test_bad_targets_are_usage_errors(tmp_path, monkeypatch, capsys, extra, message):
    monkeypatch.chdir(tmp_path)
    code = main(["pack", "--data", str(KVASIR), "--split", "train", *extra])
    assert code == 2 and message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_lossy_mask_fails_verification(tmp_path, monkeypatch):
    encode = training.pack.encode_mask

    def flip_one_pixel(mask):
        mask = mask.copy()
        mask[0, 0] ^= 1
        return encode(mask)

    monkeypatch.setattr(training.pack, "encode_mask", flip_one_pixel)
    out = tmp_path / "lossy.tar"
    with pytest.raises(PackError, match=f"^{TRAIN[0]}: the packed mask"):
        pack_split(KVASIR, "splits/train.txt", out)
    assert list(tmp_path.iterdir()) == []  # nothing left behind


def test_a_lossy_image_fails_verification_in_the_cli(tmp_path, monkeypatch, capsys):
    def reencode(jpegtran, path):
        pixels = cv2.imread(str(path))
        return cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, 50])[1].tobytes()

    monkeypatch.setattr(training.pack, "find_jpegtran", lambda: "jpegtran")
    monkeypatch.setattr(training.pack, "transcode_jpeg", reencode)
    out = tmp_path / "lossy.tar"
    argv = ["pack", "--data", str(KVASIR), "--split", "splits/train.txt"]
    code = main([*argv, "--out", str(out), "--optimize-jpeg"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "\n" not in err
    assert f"{TRAIN[0]}: the packed image does not decode" in err
    assert not out.exists()


def test_missing_jpegtran_names_the_fix(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(training.pack.shutil, "which", lambda name: None)
    out = tmp_path / "x.tar"
    argv = ["pack", "--data", str(KVASIR), "--split", "splits/train.txt"]
    code = main([*argv, "--out", str(out), "--optimize-jpeg"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "\n" not in err
    assert "apt-get install libjpeg-turbo-progs" in err and "--optimize-jpeg" in err
    assert not out.exists()


@needs_jpegtran
def test_optimize_jpeg_is_lossless_and_progressive(tmp_path):
    out = tmp_path / "opt.tar"
    result = pack_split(KVASIR, "splits/train.txt", out, optimize_jpeg=True)
    assert result.transcoded == 6
    root = extract(out, tmp_path / "x") / "opt"
    assert_same_split(root, TRAIN)
    for stem in TRAIN:
        data = (root / "images" / f"{stem}.jpg").read_bytes()
        assert data != (KVASIR / "images" / f"{stem}.jpg").read_bytes()
        assert b"\xff\xc2" in data  # SOF2: progressive DCT
    assert result.packed_image_bytes == sum(
        (root / "images" / f"{stem}.jpg").stat().st_size for stem in TRAIN
    )
