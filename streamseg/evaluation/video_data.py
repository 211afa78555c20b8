"""What evaluate-video scores: frames with per-frame truth, and cached probabilities.

* Ground truth: mask images (grey level > 127 is polyp) or an ``.npz`` of
  masks, one per frame (:func:`open_truth`).
* Datasets: a video or frame folder with its masks, or the CVC-ClinicDB
  layout (``sequences.csv``) (:func:`open_video_dataset`,
  :func:`open_cvc_dataset`).
* Probabilities: the network runs once per frame (the runtime's
  :class:`~streamseg.segmenter.Segmenter`); the results, downscaled to the
  evaluation size and stored as float16, are cached in an ``.npz`` keyed by
  the model file's and the frames' contents (:func:`load_dataset`).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import itertools
import json
import logging
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from streamseg.config import ConfigError
from streamseg.device import Precision
from streamseg.evaluation import DEFAULT_FPS, DEFAULT_LONG_SIDE_PX
from streamseg.evaluation.datasets import DatasetError, read_mask
from streamseg.frames import Frame
from streamseg.model import ModelSpec, file_sha256, read_spec
from streamseg.segmenter import ModelSettings, Segmenter, prepare_device
from streamseg.sources import (
    SourceError,
    guess_kind,
    list_images,
    probe_video,
    read_images,
    read_video,
)

log = logging.getLogger(__name__)

CACHE_FORMAT = "streamseg-video-eval-cache/2"
ProgressCallback = Callable[[int, int | None], None]


class TruthError(SourceError):
    """Ground-truth masks are missing, unreadable or do not match the frames."""


# --- ground truth --------------------------------------------------------------


def read_mask_image(path: Path) -> np.ndarray:
    """(H, W) bool mask from an image file: grey level > 127 is polyp.

    Raises:
        TruthError: The file cannot be decoded.
    """
    try:
        return read_mask(path)
    except DatasetError as error:
        raise TruthError(
            f"{path}: cannot decode this mask image; convert it to PNG or remove it"
        ) from error


def load_mask_array(path: Path) -> np.ndarray:
    """All masks of an ``.npz`` file as an (N, H, W) bool array.

    Two layouts are read: ``samples/demo_masks.npz`` (``masks`` = np.packbits
    of the bool masks along the width, and ``width``), or a plain ``masks``
    array (N, H, W) of bool/uint8 (non-zero = polyp).

    Raises:
        TruthError: No ``masks`` array, or not three-dimensional.
    """
    try:
        with np.load(path) as data:
            if "masks" not in data:
                raise TruthError(
                    f"{path}: holds no 'masks' array (found {sorted(data.files)}); "
                    "write the masks as np.savez(path, masks=(N, H, W) bool array)"
                )
            masks = data["masks"]
            if "width" in data:
                masks = np.unpackbits(masks, axis=-1, count=int(data["width"]))
    except (OSError, ValueError) as error:
        raise TruthError(f"{path}: not a readable .npz file ({error})") from error
    if masks.ndim != 3:
        raise TruthError(
            f"{path}: expected masks of shape (frames, height, width), "
            f"got {masks.shape}"
        )
    return masks.astype(bool, copy=False)


@dataclass(frozen=True)
class TruthMasks:
    """Per-frame ground truth: how many masks there are and how to read them."""

    name: str
    count: int
    read: Callable[[], Iterator[np.ndarray]] = field(repr=False)


def open_truth(path: Path) -> TruthMasks:
    """Open per-frame truth masks: a folder (or glob) of images, or an ``.npz``.

    Image folders are read in natural name order (``2.png`` before
    ``10.png``), the order :func:`streamseg.sources.list_images` gives frames.

    Raises:
        TruthError: Missing path, no masks in it, or an unsupported file type.
    """
    text = str(path)
    if any(char in text for char in "*?[") or path.is_dir():
        try:
            paths = list_images(text)
        except SourceError as error:
            raise TruthError(f"truth masks: {error}") from error
        return TruthMasks(text, len(paths), lambda: map(read_mask_image, paths))
    if not path.exists():
        raise TruthError(
            f"{path}: no such file or folder; pass --truth with a folder of mask "
            "images or an .npz of masks (see samples/README.md)"
        )
    if path.suffix.lower() != ".npz":
        raise TruthError(
            f"{path}: expected a folder of mask images or an .npz file "
            f"(samples/demo_masks.npz layout), got a {path.suffix or 'plain'} file"
        )
    masks = load_mask_array(path)
    return TruthMasks(text, len(masks), lambda: iter(masks))


# --- what to evaluate ----------------------------------------------------------


@dataclass(frozen=True)
class SequenceSource:
    """One independent sequence: frames in time order and a mask per frame.

    Attributes:
        name: How reports refer to it.
        frames: Yields the frames, in order, with their timestamps.
        frame_count: Number of frames if known before decoding.
        truth: The masks.
        fingerprint: Identity of the frames' contents (for the cache key).
        restamp_fps: If set, timestamps are ``index / fps`` (folders, CVC, or
            a video with a stated rate); otherwise the decoded timestamps.
    """

    name: str
    frames: Callable[[], Iterator[Frame]] = field(repr=False)
    frame_count: int | None
    truth: TruthMasks
    fingerprint: str
    restamp_fps: float | None = None


@dataclass(frozen=True)
class EvalDataset:
    """A named set of independent sequences, and how their time was set."""

    name: str
    sequences: tuple[SequenceSource, ...]
    timing: str
    # Per sequence, per frame: which polyp the truth shows (None: unknown);
    # only the track measures use it (streamseg.evaluation.track_metrics).
    polyp_ids: tuple[tuple[int, ...] | None, ...] | None = None


def open_video_dataset(
    source: str, truth: Path | None, *, fps: float | None = None
) -> EvalDataset:
    """A video file or an ordered frame folder with per-frame truth masks.

    Args:
        source: Video file (any FFmpeg format) or folder/glob of frame images.
            A folder holding ``sequences.csv`` is read as the CVC-ClinicDB
            layout (:func:`open_cvc_dataset`; ``truth`` must then be None).
        truth: Folder of mask images or ``.npz`` (see :func:`open_truth`).
        fps: Frame rate for folders (default 25); for a video file, replaces
            the container's timestamps with ``index / fps`` if given.

    Raises:
        SourceError: The source cannot be read.
        TruthError: Missing truth, or a known frame count that differs.
    """
    if Path(source).is_dir() and (Path(source) / "sequences.csv").is_file():
        if truth is not None:
            raise TruthError(
                f"{source}: is a CVC-ClinicDB folder with its own masks; drop --truth"
            )
        return open_cvc_dataset(Path(source), fps=fps or DEFAULT_FPS)
    if truth is None:
        raise TruthError(
            f"{source}: no ground truth given; pass --truth MASKS (a folder of mask "
            "images or an .npz, one mask per frame)"
        )
    masks = open_truth(truth)
    kind = guess_kind(source)
    if kind == "file":
        _, count = probe_video(source)
        timing = f"stated {fps:g} fps (index / fps)" if fps else "container timestamps"
        sequence = SequenceSource(
            Path(source).name,
            lambda: read_video(source),
            count,
            masks,
            file_sha256(Path(source)),
            restamp_fps=fps,
        )
    elif kind == "folder":
        paths = list_images(source)
        rate = fps or DEFAULT_FPS
        timing = f"stated {rate:g} fps (index / fps)"
        sequence = SequenceSource(
            Path(source.rstrip("/")).name or source,
            lambda: read_images(paths, rate),
            len(paths),
            masks,
            _files_digest(paths),
            restamp_fps=rate,
        )
    else:
        raise SourceError(
            f"{source}: evaluate-video reads video files and frame folders, not live "
            f"{kind} sources; record the stream to a file first"
        )
    if sequence.frame_count is not None and sequence.frame_count != masks.count:
        raise TruthError(_count_mismatch(source, sequence.frame_count, masks))
    return EvalDataset(sequence.name, (sequence,), timing)


def open_cvc_dataset(root: Path, *, fps: float = DEFAULT_FPS) -> EvalDataset:
    """CVC-ClinicDB frames as independent sequences in time order.

    ``sequences.csv`` (frame, sequence, index_in_sequence, image, mask) gives
    the sequences and the order within each; frames are played at ``fps``
    (timestamps ``index_in_sequence / fps``).

    Raises:
        SourceError: No ``sequences.csv`` or a listed file is missing.
    """
    table = root / "sequences.csv"
    if not table.is_file():
        raise SourceError(
            f"{root}: no sequences.csv; pass the CVC-ClinicDB folder (with "
            "images/, masks/ and sequences.csv)"
        )
    with table.open(newline="") as file:
        rows = list(csv.DictReader(file))
    required = {"sequence", "index_in_sequence", "image", "mask"}
    if not rows or not required <= set(rows[0]):
        raise SourceError(
            f"{table}: expected columns {sorted(required)}, "
            f"got {sorted(rows[0]) if rows else 'no rows'}"
        )
    by_sequence: dict[int, list[dict[str, str]]] = {}
    for row in rows:
        by_sequence.setdefault(int(row["sequence"]), []).append(row)
    sequences = []
    for number in sorted(by_sequence):
        ordered = sorted(by_sequence[number], key=lambda r: int(r["index_in_sequence"]))
        images = [root / r["image"] for r in ordered]
        masks = [root / r["mask"] for r in ordered]
        for path in (*images, *masks):
            if not path.is_file():
                raise SourceError(f"{path}: listed in {table} but missing")
        truth = TruthMasks(
            f"{root.name} sequence {number} masks",
            len(masks),
            lambda masks=masks: map(read_mask_image, masks),
        )
        sequences.append(
            SequenceSource(
                f"sequence {number}",
                lambda images=images: read_images(images, fps),
                len(images),
                truth,
                _files_digest(images),
                restamp_fps=fps,
            )
        )
    return EvalDataset(
        root.name, tuple(sequences), f"stated {fps:g} fps (index_in_sequence / fps)"
    )


def _count_mismatch(source: str, frames: int, masks: TruthMasks) -> str:
    return (
        f"{source}: {frames} frames but {masks.count} truth masks in {masks.name}; "
        "pass one mask per frame, in frame order"
    )


def _files_digest(paths: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode())
        digest.update(file_sha256(path).encode())
    return digest.hexdigest()


# --- probabilities, computed once and cached -----------------------------------


@dataclass(frozen=True)
class CachedSequence:
    """One sequence ready for scoring, at the evaluation size.

    Attributes:
        name: The sequence's name.
        timestamps_s: (N,) float64 presentation times in seconds.
        probabilities: (N, h, w) float16 foreground probabilities as the
            segmenter makes them (at the network's input size, covering the
            frame).
        truth: (N, H, W) bool truth masks at the evaluation size.
        frame_hw: (height, width) of the original frames.
    """

    name: str
    timestamps_s: np.ndarray
    probabilities: np.ndarray
    truth: np.ndarray
    frame_hw: tuple[int, int]

    @property
    def eval_hw(self) -> tuple[int, int]:
        return int(self.truth.shape[1]), int(self.truth.shape[2])


def eval_size(frame_hw: tuple[int, int], long_side_px: int) -> tuple[int, int]:
    """The frame size scaled so its long side is at most ``long_side_px`` (0: as is).

    Example:
        >>> eval_size((480, 640), 256)
        (192, 256)
    """
    height, width = frame_hw
    if long_side_px <= 0 or max(height, width) <= long_side_px:
        return height, width
    scale = long_side_px / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def downscale_mask(mask: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """(H, W) bool mask at ``size_hw``: area coverage > 0.5 is polyp."""
    import cv2

    if mask.shape == tuple(size_hw):
        return mask
    area = cv2.resize(
        mask.astype(np.float32),
        (size_hw[1], size_hw[0]),
        interpolation=cv2.INTER_AREA,
    )
    return area > 0.5


class ModelRunner:
    """The model file, its spec, and (loaded on first use) a Segmenter.

    Args:
        settings: The ``model`` section of the stream config.
    """

    def __init__(self, settings: ModelSettings) -> None:
        self.settings = settings
        self.path = settings.model_path()
        spec = read_spec(self.path)
        if settings.threshold is not None:
            spec = dataclasses.replace(spec, threshold=settings.threshold)
        self.spec: ModelSpec = spec
        self.digest = file_sha256(self.path)
        self._device: torch.device | None = None
        self._segmenter: Segmenter | None = None

    def configure_backend(self) -> None:
        """Pick the device and set the process-wide backend flags (threads) once.

        Called by :func:`~streamseg.evaluation.video_eval.evaluate_video`
        before anything runs, as ``app.run`` does: replaying the cache is also
        torch work, and on a busy CPU one thread is several times faster than
        two (measured: 0.7 s vs 1.8 s per variant on CVC with the load at 9 on
        2 cores).

        Raises:
            ConfigError: Unknown device or unsupported precision.
        """
        self._device = prepare_device(self.settings)
        self._precision()  # an impossible precision fails here, before any work

    @property
    def device(self) -> torch.device:
        if self._device is None:
            self.configure_backend()
        return self._device  # type: ignore[return-value]

    @property
    def segmenter(self) -> Segmenter:
        """The runtime's segmenter for these settings, loaded on first use."""
        if self._segmenter is None:
            self._segmenter = Segmenter.from_settings(self.settings, self.device)
        return self._segmenter

    def _precision(self) -> Precision:
        try:
            return self.settings.resolved_precision(self.device)
        except ValueError as error:
            raise ConfigError(f"model: {error}") from error

    @property
    def precision_name(self) -> str:
        """What the cache key records about numerics (device kind, precision,
        the backend ``auto`` resolves to, INT8, test-time augmentation).

        Raises:
            ConfigError: A precision this device cannot run.
        """
        name = f"{self.device.type}/{self._precision().name}"
        resolved, _ = self.settings.resolve_backend(self.device)
        if resolved.backend != "torch":
            name += f"/{resolved.backend}"
        if resolved.quantized:
            name += "/int8"
        if self.settings.tta != "none":
            name += f"/tta-{self.settings.tta}"
        return name


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/streamseg/video-eval`` (``~/.cache/...`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "streamseg" / "video-eval"


def cache_key(model: ModelRunner, dataset: EvalDataset, long_side_px: int) -> str:
    """Hex key of everything the cached probabilities depend on."""
    identity = {
        "format": CACHE_FORMAT,
        "model_sha256": model.digest,
        "numerics": model.precision_name,
        "long_side_px": long_side_px,
        "sequences": [s.fingerprint for s in dataset.sequences],
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def load_dataset(
    dataset: EvalDataset,
    model: ModelRunner,
    *,
    long_side_px: int = DEFAULT_LONG_SIDE_PX,
    cache_dir: Path | None = None,
    on_progress: ProgressCallback | None = None,
) -> list[CachedSequence]:
    """Probabilities and truth of every sequence, from the cache or the network.

    The network runs once per frame (batches of ``model.batch_size``); the
    probabilities are kept as the segmenter makes them (at the network's
    input size), as float16; the truth is downscaled to the evaluation size.
    With ``cache_dir``, they are read from / written to
    ``cache_dir/<dataset>-<key>.npz`` (key: :func:`cache_key`).

    Raises:
        TruthError: Frame and mask counts or sizes differ.
        SourceError: A frame cannot be read.
        ModelFileError: The model file is invalid.
    """
    key = cache_key(model, dataset, long_side_px)
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"{_slug(dataset.name)}-{key[:16]}.npz"
    cached = _read_cache(path, key) if path is not None else None
    total = sum(s.frame_count or s.truth.count for s in dataset.sequences)
    done = 0
    sequences = []
    for index, source in enumerate(dataset.sequences):
        truth = list(source.truth.read())
        if cached is not None:
            probabilities = cached[f"probabilities_{index}"]
            timestamps_s = cached[f"timestamps_{index}"]
            frame_hw = tuple(int(v) for v in cached[f"frame_hw_{index}"])
            if len(probabilities) != len(truth):
                raise TruthError(
                    _count_mismatch(source.name, len(probabilities), source.truth)
                )
        else:
            probabilities, timestamps_s, frame_hw = _predict(
                source, model, len(truth), done, total, on_progress
            )
        done += len(truth)
        if on_progress is not None:
            on_progress(done, total)
        _check_truth_sizes(source, truth, frame_hw)
        hw = eval_size(frame_hw, long_side_px)
        truth_small = np.stack([downscale_mask(m, hw) for m in truth])
        if source.restamp_fps:
            timestamps_s = np.arange(len(truth), dtype=np.float64) / source.restamp_fps
        sequences.append(
            CachedSequence(
                source.name,
                np.asarray(timestamps_s, np.float64),
                probabilities,
                truth_small,
                frame_hw,
            )
        )
    if path is not None and cached is None:
        _write_cache(path, key, sequences)
    return sequences


def _predict(
    source: SequenceSource,
    model: ModelRunner,
    expected: int,
    done: int,
    total: int,
    on_progress: ProgressCallback | None,
) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    segmenter = model.segmenter
    batch_size = model.settings.batch_size
    chunks: list[np.ndarray] = []
    timestamps: list[float] = []
    frame_hw: tuple[int, int] | None = None
    count = 0
    frames = source.frames()
    while True:
        batch = list(itertools.islice(frames, batch_size))
        if not batch:
            break
        for frame in batch:
            if frame_hw is None:
                frame_hw = frame.hw
            elif frame.hw != frame_hw:
                raise SourceError(
                    f"{source.name}: frame {frame.index} is {frame.hw}, earlier frames "
                    f"{frame_hw}; a sequence must keep one frame size"
                )
        count += len(batch)
        if count > expected:
            raise TruthError(
                f"{source.name}: more frames than the {expected} truth masks in "
                f"{source.truth.name}; pass one mask per frame, in frame order"
            )
        with torch.inference_mode():
            predictions = segmenter.segment(batch)
            stacked = torch.stack([p.probabilities for p in predictions])
        chunks.append(stacked.clamp(0, 1).to("cpu", torch.float16).numpy())
        timestamps.extend(frame.timestamp_s for frame in batch)
        if on_progress is not None:
            on_progress(done + count, total)
    if count != expected or frame_hw is None:
        raise TruthError(_count_mismatch(source.name, count, source.truth))
    log.info("%s: %d frames through the network", source.name, count)
    return np.concatenate(chunks), np.asarray(timestamps, np.float64), frame_hw


def _check_truth_sizes(
    source: SequenceSource, truth: list[np.ndarray], frame_hw: tuple[int, int]
) -> None:
    for index, mask in enumerate(truth):
        if mask.shape != tuple(frame_hw):
            raise TruthError(
                f"{source.truth.name}: mask {index} is {mask.shape[0]}x{mask.shape[1]} "
                f"(HxW) but the frames of {source.name} are "
                f"{frame_hw[0]}x{frame_hw[1]}; masks must have the frames' size"
            )


def _read_cache(path: Path, key: str) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path) as data:
            if str(data["key"]) != key:
                return None
            log.info("probabilities from the cache %s", path)
            return {name: data[name] for name in data.files}
    except (OSError, ValueError, KeyError) as error:
        log.warning("ignoring an unreadable cache file %s (%s)", path, error)
        return None


def _write_cache(path: Path, key: str, sequences: list[CachedSequence]) -> None:
    arrays: dict[str, np.ndarray] = {"key": np.array(key)}
    for index, sequence in enumerate(sequences):
        arrays[f"probabilities_{index}"] = sequence.probabilities
        arrays[f"timestamps_{index}"] = sequence.timestamps_s
        arrays[f"frame_hw_{index}"] = np.array(sequence.frame_hw)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(buffer.getvalue())
    os.replace(temporary, path)  # atomic: a reader never sees half a file
    log.info("cached probabilities in %s", path)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "dataset"
