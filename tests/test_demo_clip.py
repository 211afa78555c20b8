"""The demo clip and its generator (samples/make_demo_clip.py).

(a) The committed clip decodes with the documented frame count, rate and size,
    and its masks and frame table agree with it.
(b) The warp functions keep an image and its mask aligned.
(c) The script renders a valid, seeded, aligned clip from tiny synthetic
    Kvasir-style images (no dependency on ../shared).
"""

from __future__ import annotations

import csv
import importlib.util
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import ModuleType

import av
import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"
KVASIR = ROOT.parent / "shared" / "data" / "kvasir-seg"

# What samples/README.md documents for the committed clip.
DEMO_FRAMES = 300
DEMO_FPS = 25
DEMO_SIZE_WH = (640, 480)


def _load_script() -> ModuleType:
    name = "make_demo_clip"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, SAMPLES / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while building
        spec.loader.exec_module(module)
    return sys.modules[name]


clip = _load_script()


@dataclass(frozen=True)
class Decoded:
    frames: list[np.ndarray]  # (H, W, 3) uint8 RGB each
    times_s: list[float]
    codec: str
    rate: Fraction
    size_wh: tuple[int, int]


def _decode(path: Path) -> Decoded:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames, times = [], []
        for frame in container.decode(stream):
            frames.append(frame.to_ndarray(format="rgb24"))
            times.append(float(frame.time))
        return Decoded(
            frames,
            times,
            stream.codec_context.name,
            stream.average_rate,
            (stream.codec_context.width, stream.codec_context.height),
        )


def _read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


# ----------------------------------------------------------------------------- (a)


def test_committed_clip_matches_its_documentation() -> None:
    video = SAMPLES / "demo.mp4"
    decoded = _decode(video)
    assert decoded.codec == "h264"
    assert decoded.rate == DEMO_FPS
    assert decoded.size_wh == DEMO_SIZE_WH
    assert len(decoded.frames) == DEMO_FRAMES
    times = decoded.times_s
    np.testing.assert_allclose(times, np.arange(DEMO_FRAMES) / DEMO_FPS, atol=1e-6)
    assert video.stat().st_size < 3_000_000

    masks = clip.load_masks(SAMPLES / "demo_masks.npz")
    assert masks.dtype == bool
    assert masks.shape == (DEMO_FRAMES, DEMO_SIZE_WH[1], DEMO_SIZE_WH[0])
    # Ground truth lies inside the scope's aperture, and most frames show a polyp.
    assert not np.any(masks & ~clip.aperture_mask(DEMO_SIZE_WH))
    assert np.mean(masks.any(axis=(1, 2))) > 0.9

    rows = _read_rows(SAMPLES / "demo_frames.csv")
    assert [int(row["index"]) for row in rows] == list(range(DEMO_FRAMES))
    np.testing.assert_allclose(
        [float(row["timestamp_s"]) for row in rows], times, atol=1e-4
    )
    np.testing.assert_allclose(
        [float(row["polyp_area_fraction"]) for row in rows],
        masks.mean(axis=(1, 2)),
        atol=1e-6,
    )
    stems = list(dict.fromkeys(row["source_image"] for row in rows))
    assert stems == list(clip.DEFAULT_STEMS)


def test_committed_clip_shows_only_test_split_images() -> None:
    if not (KVASIR / "splits" / "test.txt").is_file():
        pytest.skip(f"Kvasir-SEG splits not found at {KVASIR}")
    test = set((KVASIR / "splits" / "test.txt").read_text().split())
    train = set((KVASIR / "splits" / "train.txt").read_text().split())
    stems = {row["source_image"] for row in _read_rows(SAMPLES / "demo_frames.csv")}
    assert stems <= test
    assert not stems & train


# ----------------------------------------------------------------------------- (b)


def _shape_image() -> tuple[np.ndarray, np.ndarray]:
    """A 160x200 image with a white L-shaped polygon on black, and its mask."""
    polygon = np.array([[60, 40], [140, 40], [140, 70], [95, 70], [95, 130], [60, 130]])
    mask = np.zeros((160, 200), np.uint8)
    cv2.fillPoly(mask, [polygon], 1)
    image = np.repeat(mask[..., None] * 255, 3, axis=2).astype(np.uint8)
    return image, mask.astype(bool)


@pytest.mark.parametrize(
    "pose",
    [
        clip.CameraPose((100.0, 85.0), 0.0, 1.0),
        clip.CameraPose((100.0, 85.0), 0.0, 1.7),
        clip.CameraPose((90.0, 80.0), 33.0, 1.0),
        clip.CameraPose((110.0, 90.0), -71.0, 0.8),
        clip.CameraPose((95.5, 83.25), 147.0, 2.3),
    ],
    ids=["identity", "zoom", "rotate", "rotate-shrink", "all"],
)
def test_warp_keeps_image_and_mask_aligned(pose) -> None:
    image, mask = _shape_image()
    output_wh = (300, 280)  # large enough that no pose clips the shape
    matrix = clip.pose_matrix(pose, output_wh)
    shown = clip.warp_image(image, matrix, output_wh)[..., 0] > 127
    truth = clip.warp_mask(mask, matrix, output_wh)
    assert truth.dtype == bool and truth.shape == (280, 300)

    # They differ only on the shape's one-pixel boundary (interpolation rounding).
    kernel = np.ones((3, 3), np.uint8)
    band = cv2.dilate(truth.astype(np.uint8), kernel) > cv2.erode(
        truth.astype(np.uint8), kernel
    )
    assert not np.any((shown != truth) & ~band)
    overlap = (shown & truth).sum() / (shown | truth).sum()
    assert overlap > 0.9

    # And both sit where the pose says: the source centroid maps to the
    # output centroid, and the area scales by scale**2.
    ys, xs = np.nonzero(mask)
    expected_xy = matrix @ [xs.mean(), ys.mean(), 1.0]
    out_ys, out_xs = np.nonzero(truth)
    assert truth.sum() == pytest.approx(mask.sum() * pose.scale**2, rel=0.08)
    np.testing.assert_allclose([out_xs.mean(), out_ys.mean()], expected_xy, atol=0.6)


def test_pose_matrix_convention() -> None:
    width_height = (64, 48)
    center = np.array([31.5, 23.5])  # output centre, pixel centres at integers
    matrix = clip.pose_matrix(clip.CameraPose((10.0, 20.0), 90.0, 2.0), width_height)
    np.testing.assert_allclose(matrix @ [10.0, 20.0, 1.0], center)
    # Counter-clockwise on screen (y down): a point right of the centre goes up.
    above = center.copy()
    above[1] -= 2.0
    np.testing.assert_allclose(matrix @ [11.0, 20.0, 1.0], above)


# ----------------------------------------------------------------------------- (c)

POLYP_RGB = (60, 60, 200)


def _kvasir_like(root: Path) -> list[str]:
    """Write a tiny Kvasir-SEG-style folder: 3 images (2 test, 1 train)."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "splits").mkdir()
    rng = np.random.default_rng(0)
    height, width = 170, 200
    stems = ["synthetic_a", "synthetic_b", "synthetic_train"]
    for number, stem in enumerate(stems):
        # Reddish mucosa with smooth texture.
        noise = cv2.GaussianBlur(rng.normal(0, 1, (height, width)), (0, 0), 4)
        noise = noise / np.abs(noise).max()
        tissue = np.stack(
            [220 + 20 * noise, 125 + 15 * noise, 105 + 15 * noise], axis=-1
        )
        image = np.clip(tissue, 0, 255).astype(np.uint8)
        mask = np.zeros((height, width), np.uint8)
        cv2.circle(mask, (125 + 10 * number, 85), 22, 255, -1)
        image[mask > 0] = POLYP_RGB
        # Frame furniture: black octagon corners, white text, teal box.
        corners = np.array([[0, 0], [40, 0], [0, 40]])
        for flip_x in (False, True):
            for flip_y in (False, True):
                pts = corners.copy()
                if flip_x:
                    pts[:, 0] = width - 1 - pts[:, 0]
                if flip_y:
                    pts[:, 1] = height - 1 - pts[:, 1]
                cv2.fillPoly(image, [pts], (0, 0, 0))
        cv2.putText(image, "12/03", (4, 70), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255,) * 3)
        image[120:, :45] = (0, 160, 130)
        cv2.imwrite(str(root / "images" / f"{stem}.jpg"), image[..., ::-1])
        cv2.imwrite(str(root / "masks" / f"{stem}.jpg"), mask)
    (root / "splits" / "test.txt").write_text("synthetic_a\nsynthetic_b\n")
    (root / "splits" / "train.txt").write_text("synthetic_train\n")
    return stems[:2]


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> tuple[Path, Path]:
    data = tmp_path_factory.mktemp("kvasir")
    stems = _kvasir_like(data)
    out = tmp_path_factory.mktemp("clip")
    status = clip.main(
        [
            "--data", str(data), "--out", str(out), "--stems", *stems,
            "--seconds-per-segment", "0.2", "--size", "128x96", "--seed", "7",
        ]
    )  # fmt: skip
    assert status == 0
    return data, out


def test_script_writes_a_valid_clip(tiny_clip) -> None:
    _, out = tiny_clip
    decoded = _decode(out / "demo.mp4")
    assert decoded.codec == "h264"
    assert decoded.rate == 25
    assert len(decoded.frames) == 10
    assert decoded.size_wh == (128, 96)
    masks = clip.load_masks(out / "demo_masks.npz")
    assert masks.shape == (10, 96, 128) and masks.dtype == bool
    rows = _read_rows(out / "demo_frames.csv")
    assert [row["source_image"] for row in rows] == ["synthetic_a"] * 5 + [
        "synthetic_b"
    ] * 5
    np.testing.assert_allclose([float(r["timestamp_s"]) for r in rows], decoded.times_s)
    # The camera starts each segment off the polyp and finds it.
    assert masks.any(axis=(1, 2)).sum() >= 8


def test_script_frames_align_with_masks_and_show_only_tissue(tiny_clip) -> None:
    _, out = tiny_clip
    frames = _decode(out / "demo.mp4").frames
    masks = clip.load_masks(out / "demo_masks.npz")
    rows = _read_rows(out / "demo_frames.csv")
    aperture = clip.aperture_mask((128, 96))
    inner = cv2.erode(aperture.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    outer = cv2.dilate(aperture.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    checked = 0
    for pixels, mask, row in zip(frames, masks, rows, strict=True):
        red, green, blue = (pixels[..., c].astype(int) for c in range(3))
        # Blur smears edges by half its length each way; chroma subsampling and
        # compression by ~2 px more.
        margin = int(np.ceil(float(row["blur_px"]) / 2)) + 3
        kernel = np.ones((2 * margin + 1, 2 * margin + 1), np.uint8)
        polyp_core = cv2.erode(mask.astype(np.uint8), kernel) > 0
        tissue_core = inner & ~(cv2.dilate(mask.astype(np.uint8), kernel) > 0)
        if polyp_core.any():
            assert np.all(blue[polyp_core] > red[polyp_core]), row
            checked += 1
        assert np.all(red[tissue_core] > blue[tissue_core]), row
        # Never the black border, the white text or the teal box.
        gray = cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)
        assert gray[inner].min() >= 8, row
        assert not np.any((pixels.min(axis=-1) > 200) & inner), row
        assert not np.any((green > red + 30) & (blue > red + 30) & tissue_core), row
        # Black around the octagon (up to compression ringing at its edge).
        assert pixels[~outer].max() <= 24, row
    assert checked >= 5


def test_script_is_deterministic_for_a_seed(tiny_clip, tmp_path) -> None:
    # Bit-exact video needs frames >= 128 px wide: on tinier frames x264's
    # macroblock-tree lookahead reads uninitialised memory (seen at 96x80).
    data, out = tiny_clip
    again = clip.make_clip(
        data,
        tmp_path,
        stems=["synthetic_a", "synthetic_b"],
        seconds_per_segment=0.2,
        size_wh=(128, 96),
        seed=7,
    )
    np.testing.assert_array_equal(
        clip.load_masks(again.masks_path), clip.load_masks(out / "demo_masks.npz")
    )
    assert again.frames_path.read_text() == (out / "demo_frames.csv").read_text()
    first = _decode(out / "demo.mp4").frames
    second = _decode(again.video_path).frames
    np.testing.assert_array_equal(np.stack(first), np.stack(second))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"stems": ["synthetic_train"]}, "not in"),
        ({"stems": ["synthetic_a", "unknown"]}, "not in"),
        ({"stems": []}, "at least one stem"),
        ({"size_wh": (127, 96)}, "even width"),
        ({"seconds_per_segment": 0.01}, "at least 2 frames"),
    ],
    ids=["train-stem", "unknown-stem", "no-stems", "odd-size", "too-short"],
)
def test_script_rejects_bad_requests(tiny_clip, tmp_path, kwargs, message) -> None:
    data, _ = tiny_clip
    arguments = {"stems": ["synthetic_a"], "size_wh": (128, 96), **kwargs}
    with pytest.raises(ValueError, match=message):
        clip.make_clip(data, tmp_path, **arguments)
    assert not (tmp_path / "demo.mp4").exists()
