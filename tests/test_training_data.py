"""Dataset folders, split files and the validation carve-out, on real fixture images."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from streamseg.transforms import network_input, upload
from training.config import DataConfig
from training.data import (
    DatasetError,
    PolypDataset,
    PolypFolder,
    carve_validation,
    prepare_splits,
    read_split,
    resize_mask,
)

KVASIR = Path(__file__).parent / "fixtures" / "kvasir"


@pytest.fixture(scope="module")
def folder() -> PolypFolder:
    return PolypFolder.open(KVASIR)


def test_masks_load_binary_although_files_hold_grey_levels(folder):
    for stem in folder.paired_stems:
        raw = cv2.imread(str(folder.masks[stem]), cv2.IMREAD_GRAYSCALE)
        mask = folder.load_mask(stem)
        assert len(np.unique(raw)) > 2  # the fixture keeps JPEG-like grey edges
        assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 1}
        np.testing.assert_array_equal(mask, (raw > 127).astype(np.uint8))


def test_images_load_rgb_matching_mask_size(folder):
    stem = folder.paired_stems[0]
    image, mask = folder.load_pair(stem)
    bgr = cv2.imread(str(folder.images[stem]), cv2.IMREAD_COLOR)
    assert image.shape == (*mask.shape, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image, bgr[..., ::-1])


def test_size_mismatch_is_a_clear_error(tmp_path):
    root = tmp_path / "data"
    shutil.copytree(KVASIR, root)
    stem = read_split(root / "splits" / "train.txt")[0]
    mask = cv2.imread(str(root / "masks" / f"{stem}.png"), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(root / "masks" / f"{stem}.png"), mask[:-5])
    with pytest.raises(DatasetError, match="must match"):
        PolypFolder.open(root).load_pair(stem)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: None, "no such dataset folder"),
        (
            lambda root: (root / "masks").mkdir(parents=True),
            "expected a images/ folder",
        ),
        (
            lambda root: (
                (root / "images").mkdir(parents=True),
                (root / "masks").mkdir(),
            ),
            "holds no",
        ),
    ],
)
def test_bad_folders_are_clear_errors(tmp_path, make, message):
    root = tmp_path / "data"
    make(root)
    with pytest.raises(DatasetError, match=message):
        PolypFolder.open(root)


@pytest.mark.parametrize(
    ("text", "message"),
    [("", "lists no stems"), ("a\nb\na\n", "listed twice")],
)
def test_bad_split_files(tmp_path, text, message):
    path = tmp_path / "split.txt"
    path.write_text(text)
    with pytest.raises(DatasetError, match=message):
        read_split(path)


def test_missing_split_file_names_the_fix(tmp_path):
    with pytest.raises(DatasetError, match="one image stem per line"):
        read_split(tmp_path / "nope.txt")


def test_split_comments_and_blank_lines_are_skipped(tmp_path):
    path = tmp_path / "split.txt"
    path.write_text("# official\n a \n\nb\n")
    assert read_split(path) == ["a", "b"]


def test_carve_out_is_reproducible_disjoint_and_sized():
    stems = [f"s{i:03d}" for i in range(880)]
    train, val = carve_validation(stems, 0.1, seed=0)
    assert len(val) == 88 and len(train) == 792
    assert not set(train) & set(val) and set(train) | set(val) == set(stems)
    # Same inputs (in any order) -> same split; another seed -> another split.
    assert carve_validation(list(reversed(stems)), 0.1, seed=0) == (train, val)
    assert carve_validation(stems, 0.1, seed=1)[1] != val


def test_carve_out_refuses_to_empty_the_training_split():
    with pytest.raises(DatasetError, match="val_fraction"):
        carve_validation(["a"], 0.5, seed=0)


def test_prepare_splits_writes_files_and_reuses_them(folder, tmp_path):
    config = DataConfig(root=KVASIR, val_fraction=0.2, split_seed=3)
    first = prepare_splits(folder, config, tmp_path / "splits", reuse=False)
    assert (
        read_split(first.val_file) == first.val
        and read_split(first.train_file) == first.train
    )
    assert len(first.val) == 1 and len(first.train) == 5
    # A resumed run reads the files back even if the seed in the config changed.
    other = DataConfig(root=KVASIR, val_fraction=0.2, split_seed=99)
    again = prepare_splits(folder, other, tmp_path / "splits", reuse=True)
    assert (again.train, again.val) == (first.train, first.val)


def test_split_stems_missing_from_the_folder_are_reported(folder, tmp_path):
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "train.txt").write_text("a\nb\n")
    (tmp_path / "splits" / "val.txt").write_text("nope\n")
    with pytest.raises(DatasetError, match="no image or mask"):
        prepare_splits(folder, DataConfig(root=KVASIR), tmp_path / "splits", reuse=True)


def test_validation_items_are_the_runtime_input_exactly(folder):
    stem = folder.paired_stems[0]
    dataset = PolypDataset(folder, [stem], (64, 64))
    image, mask = dataset[0]
    pixels, truth = folder.load_pair(stem)
    assert torch.equal(image, network_input(upload(pixels), (64, 64))[0])
    assert image.shape == (3, 64, 64) and image.dtype == torch.float32
    assert mask.shape == (1, 64, 64) and set(mask.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(mask, resize_mask(truth, (64, 64)))


def test_mask_resize_keeps_a_centred_square_centred():
    mask = np.zeros((100, 100), np.uint8)
    mask[40:60, 40:60] = 1
    small = resize_mask(mask, (50, 50))[0]
    rows, cols = torch.nonzero(small, as_tuple=True)
    assert (
        rows.min().item(),
        rows.max().item(),
        cols.min().item(),
        cols.max().item(),
    ) == (20, 29, 20, 29)


def test_images_decode_to_rgb_also_on_opencv_without_imread_color_rgb(
    folder, monkeypatch
):
    import streamseg.evaluation.datasets as data

    stem = folder.paired_stems[0]
    direct = data.read_image(folder.images[stem])
    monkeypatch.setattr(data, "_IMREAD_RGB", None)  # OpenCV before 4.11
    fallback = data.read_image(folder.images[stem])
    bgr = cv2.imread(str(folder.images[stem]), cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(fallback, direct)
    np.testing.assert_array_equal(fallback, bgr[..., ::-1])
