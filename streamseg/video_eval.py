"""Video-time evaluation of temporal smoothing against per-frame ground truth.

The job: say how steady and how late the overlay is, with and without
smoothing, on videos whose every frame has a truth mask, and find smoothing
settings that make it steady without making it late.

Pipeline::

    EvalDataset (video + masks | frame folder + masks | CVC-ClinicDB layout)
      -> network once per frame (the runtime's Segmenter)
      -> probabilities at <= long_side_px, float16, cached in an .npz
         keyed by the model file's and the frames' contents
      -> every smoothing variant replayed from the cache through the
         runtime's own TemporalSmoother
      -> VideoScorer (streamseg.video_metrics) -> report, sweep, plot

Conventions (also written into every report):

* Scores are computed at the evaluation size (the frame scaled so its long
  side is at most ``long_side_px``; truth masks downscaled by area, > 0.5).
* Sequences are independent: the smoother is reset at each one and no
  flicker pair, toggle or episode spans two sequences.
* Lead-in: before each sequence the smoother sees one all-background frame
  (probability 0), one frame period earlier, as when the scope moves onto a
  polyp from normal mucosa. Without it a smoother that starts on the first
  frame of a sequence could never add detection delay, and the delay target
  would be vacuous. The per-frame output is unaffected.
* Excess flicker = predicted flicker - truth flicker (the truth's flicker is
  real motion). "Flicker halved" means the excess is at most half the
  per-frame output's. It is judged only on datasets where the per-frame
  excess exceeds both 0.005 and a tenth of the truth's flicker
  (:meth:`Target.judges_flicker`): below that the per-frame output is as
  steady as the motion allows and there is nothing to halve; such a dataset
  still guards Dice and delay.
* Added delay: mean over polyp episodes detected both with and without
  smoothing of (smoothed delay - per-frame delay); an episode that only the
  per-frame output detects is counted as newly missed.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import itertools
import json
import logging
import math
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from streamseg.frames import Frame, Prediction
from streamseg.model import ModelFileError, ModelSpec, default_model_path, read_spec
from streamseg.smoothing import SmoothingSettings, TemporalSmoother
from streamseg.sources import (
    SourceError,
    guess_kind,
    list_images,
    probe_video,
    read_images,
    read_video,
)
from streamseg.track_metrics import TrackScores, score_tracking
from streamseg.tracking import TrackingSettings
from streamseg.video_metrics import Episode, VideoScorer, VideoScores

if TYPE_CHECKING:
    from streamseg.app import ModelSettings

log = logging.getLogger(__name__)

CACHE_FORMAT = "streamseg-video-eval-cache/1"
DEFAULT_LONG_SIDE_PX = 256
DEFAULT_FPS = 25.0
# Defaults are chosen among sweep variants with on - off <= this (see choose()).
CHOICE_MAX_HYSTERESIS_GAP = 0.2
PER_FRAME = "per-frame"
SMOOTHED = "smoothed"

ProgressCallback = Callable[[int, int | None], None]


class TruthError(SourceError):
    """Ground-truth masks are missing, unreadable or do not match the frames."""


# --- ground truth --------------------------------------------------------------


def read_mask_image(path: Path) -> np.ndarray:
    """(H, W) bool mask from an image file: grey level > 127 is polyp.

    Raises:
        TruthError: The file cannot be decoded.
    """
    import cv2

    grey = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if grey is None:
        raise TruthError(
            f"{path}: cannot decode this mask image; convert it to PNG or remove it"
        )
    return grey > 127


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
    # only the track measures use it (streamseg.track_metrics).
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
            _file_digest(Path(source)),
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


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _files_digest(paths: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode())
        digest.update(_file_digest(path).encode())
    return digest.hexdigest()


# --- probabilities, computed once and cached -----------------------------------


@dataclass(frozen=True)
class CachedSequence:
    """One sequence ready for scoring, at the evaluation size.

    Attributes:
        name: The sequence's name.
        timestamps_s: (N,) float64 presentation times in seconds.
        probabilities: (N, h, w) float16 foreground probabilities.
        truth: (N, h, w) bool truth masks.
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
        path = settings.path if settings.path is not None else default_model_path()
        if path is None:
            from streamseg.app import NO_DEFAULT_MODEL

            raise ModelFileError(NO_DEFAULT_MODEL)
        self.path = Path(path)
        spec = read_spec(self.path)
        if settings.threshold is not None:
            spec = dataclasses.replace(spec, threshold=settings.threshold)
        self.spec: ModelSpec = spec
        self.digest = _file_digest(self.path)
        self._segmenter: Any = None

    def configure_backend(self) -> None:
        """Pick the device and set the process-wide backend flags (threads) once.

        Called by :func:`evaluate_video` before anything runs, as ``app.run``
        does: replaying the cache is also torch work, and on a busy CPU one
        thread is several times faster than two (measured: 0.7 s vs 1.8 s per
        variant on CVC with the load at 9 on 2 cores).

        Raises:
            ConfigError: Unknown device or unsupported precision.
        """
        from streamseg.device import configure_backend

        configure_backend(
            self._device_and_precision()[0], threads=self.settings.threads
        )

    def _device_and_precision(self) -> tuple[Any, Any]:
        from streamseg.config import ConfigError
        from streamseg.device import select_device

        try:
            device = select_device(self.settings.device)
            return device, self.settings.resolved_precision(device)
        except ValueError as error:
            raise ConfigError(f"model: {error}") from error

    @property
    def segmenter(self) -> Any:
        """The :class:`~streamseg.segmenter.Segmenter`, loaded on first use."""
        if self._segmenter is None:
            from streamseg.segmenter import Segmenter

            device, precision = self._device_and_precision()
            self._segmenter = Segmenter.from_file(
                self.path,
                device,
                precision,
                threshold=self.settings.threshold,
                channels_last=self.settings.channels_last,
            )
        return self._segmenter

    @property
    def precision_name(self) -> str:
        """What the cache key records about numerics (device kind and precision)."""
        device, precision = self._device_and_precision()
        return f"{device.type}/{precision.name}"


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
    probabilities are downscaled to the evaluation size and kept as float16.
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
                source, model, long_side_px, len(truth), done, total, on_progress
            )
        done += len(truth)
        if on_progress is not None:
            on_progress(done, total)
        _check_truth_sizes(source, truth, frame_hw)
        hw = probabilities.shape[1:]
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
    long_side_px: int,
    expected: int,
    done: int,
    total: int,
    on_progress: ProgressCallback | None,
) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    from streamseg.transforms import resize

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
            stacked = torch.stack([p.probabilities for p in predictions])[:, None]
            small = resize(stacked, eval_size(frame_hw, long_side_px))[:, 0]
        chunks.append(small.clamp(0, 1).to("cpu", torch.float16).numpy())
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


# --- scoring one smoothing variant ---------------------------------------------


@dataclass(frozen=True)
class VariantResult:
    """Scores of one output (per-frame or a smoothing variant) on one dataset."""

    scores: VideoScores
    episodes: tuple[Episode, ...]

    @property
    def flicker_excess(self) -> float:
        """Predicted flicker minus truth flicker (what real motion does not explain)."""
        return self.scores.flicker_predicted - self.scores.flicker_truth


def score_variant(
    sequences: Sequence[CachedSequence],
    settings: SmoothingSettings,
    model_threshold: float,
    *,
    lead_in: bool = True,
    min_detection_iou: float = 0.0,
) -> VariantResult:
    """Replay the cached probabilities through a TemporalSmoother and score them.

    Args:
        sequences: From :func:`load_dataset`.
        settings: The smoothing to evaluate (``enabled: false``: per-frame
            output, ``probabilities >= model_threshold``).
        model_threshold: The model's threshold.
        lead_in: Prime the smoother with one all-background frame one frame
            period before each sequence (see the module docstring).
        min_detection_iou: IoU with the truth at which a frame detects.
    """
    scorer = VideoScorer(min_detection_iou=min_detection_iou)
    smoother = TemporalSmoother(settings, model_threshold=model_threshold)
    for sequence in sequences:
        scorer.start_sequence()
        smoother.reset()
        hw = sequence.eval_hw
        blank = np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (*hw, 3))
        times = sequence.timestamps_s
        if lead_in and settings.enabled:
            period_s = float(np.median(np.diff(times))) if len(times) > 1 else 0.04
            frame = Frame(0, float(times[0]) - period_s, blank)
            smoother(Prediction(frame, torch.zeros(hw), model_threshold))
        for index in range(len(times)):
            frame = Frame(index, float(times[index]), blank)
            current = torch.from_numpy(sequence.probabilities[index]).float()
            out = smoother(Prediction(frame, current, model_threshold))
            scorer.add(out.mask.numpy(), sequence.truth[index], times[index])
    return VariantResult(scorer.summary(), tuple(scorer.episodes()))


# --- comparison against the per-frame output and the target --------------------


@dataclass(frozen=True)
class Target:
    """What smoothing must achieve against the per-frame output.

    Attributes:
        flicker_ratio: Excess flicker at most this share of the per-frame one.
        max_dice_loss: Macro Dice may drop by at most this much.
        max_added_delay_ms: Mean added first-detection delay at most this.
        min_excess_flicker: The flicker target is judged on a dataset only
            where the per-frame excess flicker exceeds this ...
        min_excess_share: ... and this share of the truth's flicker. Below
            both, the per-frame output is as steady as the truth allows and
            there is no instability to halve (the dataset still guards Dice
            and delay).
    """

    flicker_ratio: float = 0.5
    max_dice_loss: float = 0.005
    max_added_delay_ms: float = 100.0
    min_excess_flicker: float = 0.005
    min_excess_share: float = 0.1

    def judges_flicker(self, per_frame: VariantResult) -> bool:
        """Whether the per-frame output has excess flicker worth halving."""
        floor = max(
            self.min_excess_flicker,
            self.min_excess_share * per_frame.scores.flicker_truth,
        )
        return per_frame.flicker_excess > floor


@dataclass(frozen=True)
class Comparison:
    """A variant against the per-frame output on the same dataset.

    Attributes:
        dice_macro_change: Variant minus per-frame macro Dice.
        flicker_judged: Whether the flicker target applies on this dataset
            (:meth:`Target.judges_flicker`).
        flicker_ratio: Variant excess flicker / per-frame excess flicker
            (NaN when the per-frame excess is not positive).
        added_delay_ms_mean: Mean over episodes detected by both.
        added_delay_ms_max: The largest of those.
        added_delay_frames_mean: The same in frames.
        newly_missed_episodes: Episodes only the per-frame output detects.
    """

    dice_macro_change: float
    flicker_judged: bool
    flicker_ratio: float
    added_delay_ms_mean: float
    added_delay_ms_max: float
    added_delay_frames_mean: float
    newly_missed_episodes: int

    def shortfalls(self, target: Target) -> dict[str, float]:
        """By how much each unmet target is missed (empty: all met)."""
        misses = {
            "flicker_ratio": self.flicker_ratio - target.flicker_ratio
            if self.flicker_judged
            else 0.0,
            "dice_loss": -self.dice_macro_change - target.max_dice_loss,
            "added_delay_ms": self.added_delay_ms_mean - target.max_added_delay_ms,
            "newly_missed_episodes": float(self.newly_missed_episodes),
        }
        return {name: value for name, value in misses.items() if value > 1e-12}

    def violation(self, target: Target) -> float:
        """Sum of shortfalls, each relative to its target (0: target met)."""
        scale = {
            "flicker_ratio": target.flicker_ratio,
            "dice_loss": target.max_dice_loss,
            "added_delay_ms": target.max_added_delay_ms,
            "newly_missed_episodes": 1.0,
        }
        return sum(v / scale[k] for k, v in self.shortfalls(target).items())


def compare(
    baseline: VariantResult, variant: VariantResult, target: Target = Target()
) -> Comparison:
    """How a variant differs from the per-frame output (same truth, same episodes)."""
    base, new = baseline.scores, variant.scores
    ratio = (
        variant.flicker_excess / baseline.flicker_excess
        if baseline.flicker_excess > 0
        else math.nan
    )
    added_ms, added_frames, newly_missed = [], [], 0
    for before, after in zip(baseline.episodes, variant.episodes, strict=True):
        if before.delay_frames is None:
            continue
        if after.delay_frames is None:
            newly_missed += 1
            continue
        added_frames.append(after.delay_frames - before.delay_frames)
        added_ms.append(1000 * (after.delay_s - before.delay_s))
    return Comparison(
        dice_macro_change=new.dice_macro - base.dice_macro,
        flicker_judged=target.judges_flicker(baseline),
        flicker_ratio=ratio,
        added_delay_ms_mean=float(np.mean(added_ms)) if added_ms else 0.0,
        added_delay_ms_max=float(np.max(added_ms)) if added_ms else 0.0,
        added_delay_frames_mean=float(np.mean(added_frames)) if added_frames else 0.0,
        newly_missed_episodes=newly_missed,
    )


# --- the sweep -----------------------------------------------------------------


@dataclass(frozen=True)
class SweepGrid:
    """The smoothing settings a sweep tries (every combination).

    Attributes:
        time_constants_s: EMA time constants; 0 = no averaging (thresholds
            and area filter only).
        modes: ``ema`` and/or ``uncertainty``.
        confidence_powers: k values for the ``uncertainty`` mode.
        on_offsets: On threshold = model threshold + offset.
        hysteresis_gaps: on - off (0: one threshold, no hysteresis).
        min_area_fractions: Area filter.
    """

    time_constants_s: tuple[float, ...] = (0.0, 0.02, 0.04, 0.08, 0.12, 0.16, 0.32)
    modes: tuple[str, ...] = ("ema", "uncertainty")
    confidence_powers: tuple[float, ...] = (1.0, 2.0, 4.0)
    on_offsets: tuple[float, ...] = (0.0, 0.1)
    hysteresis_gaps: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4)
    min_area_fractions: tuple[float, ...] = (0.0, 0.002, 0.005, 0.01)

    @classmethod
    def from_overrides(cls, overrides: Sequence[str]) -> SweepGrid:
        """A grid from ``name=v1,v2,...`` strings (the defaults for the rest).

        Example:
            >>> SweepGrid.from_overrides(["modes=ema", "time_constants_s=0,0.1"]).modes
            ('ema',)

        Raises:
            ValueError: Unknown name or a value that is not a number (modes:
                ``ema`` / ``uncertainty``).
        """
        names = [f.name for f in dataclasses.fields(cls)]
        changes: dict[str, tuple[Any, ...]] = {}
        for override in overrides:
            name, sep, raw = override.partition("=")
            name = name.strip()
            if not sep or name not in names:
                raise ValueError(
                    f"--grid {override!r}: expected NAME=V1,V2,... with NAME one of "
                    f"{', '.join(names)}"
                )
            items = [item.strip() for item in raw.split(",") if item.strip()]
            if not items:
                raise ValueError(f"--grid {override!r}: no values after '='")
            if name == "modes":
                bad = sorted(set(items) - {"ema", "uncertainty"})
                if bad:
                    raise ValueError(
                        f"--grid modes: expected ema and/or uncertainty, got {bad}"
                    )
                changes[name] = tuple(items)
                continue
            try:
                changes[name] = tuple(float(item) for item in items)
            except ValueError:
                raise ValueError(
                    f"--grid {name}: expected numbers separated by commas, got {raw!r}"
                ) from None
        return cls(**changes)

    def variants(
        self, model_threshold: float, base: SmoothingSettings
    ) -> list[SmoothingSettings]:
        """Every distinct combination, as settings derived from ``base``."""
        variants = []
        for tau, mode, on_offset, gap, area in itertools.product(
            self.time_constants_s,
            self.modes,
            self.on_offsets,
            self.hysteresis_gaps,
            self.min_area_fractions,
        ):
            if tau == 0 and mode != self.modes[0]:
                continue  # without averaging the modes are identical
            on = min(max(model_threshold + on_offset, 0.01), 0.99)
            powers = (
                self.confidence_powers
                if mode == "uncertainty" and tau > 0
                else (base.confidence_power,)
            )
            for power in powers:
                variants.append(
                    dataclasses.replace(
                        base,
                        enabled=True,
                        time_constant_s=tau,
                        mode="ema" if tau == 0 else mode,
                        confidence_power=power,
                        on_threshold=round(on, 4),
                        off_threshold=None,
                        hysteresis_gap=min(gap, round(on - 0.01, 4)),
                        min_area_fraction=area,
                    )
                )
        return variants


def family(settings: SmoothingSettings) -> str:
    """``per-frame``, ``threshold`` (no averaging), ``ema`` or ``uncertainty k=K``."""
    if not settings.enabled:
        return PER_FRAME
    if settings.time_constant_s == 0:
        return "threshold"
    if settings.mode == "uncertainty":
        return f"uncertainty k={settings.confidence_power:g}"
    return "ema"


def describe(settings: SmoothingSettings, model_threshold: float) -> str:
    """One-line label, e.g. ``ema tau=0.12 on=0.50 off=0.40 area=0.005``."""
    if not settings.enabled:
        return f"per-frame (threshold {model_threshold:.2f})"
    on, off = settings.thresholds(model_threshold)
    return (
        f"{family(settings)} tau={settings.time_constant_s:g} on={on:.2f} "
        f"off={off:.2f} area={settings.min_area_fraction:g}"
    )


@dataclass(frozen=True)
class SweepRow:
    """One variant of the sweep, scored on every dataset."""

    settings: SmoothingSettings
    label: str
    results: dict[str, VariantResult]
    comparisons: dict[str, Comparison]

    def violation(self, target: Target) -> float:
        return sum(c.violation(target) for c in self.comparisons.values())

    def meets(self, target: Target) -> bool:
        return all(not c.shortfalls(target) for c in self.comparisons.values())

    def worst_flicker_ratio(self) -> float:
        """Largest excess-flicker ratio where the flicker target applies (else 0)."""
        judged = [
            c.flicker_ratio for c in self.comparisons.values() if c.flicker_judged
        ]
        return max(judged, default=0.0)

    def mean_dice_change(self) -> float:
        return float(np.mean([c.dice_macro_change for c in self.comparisons.values()]))

    def margin(self, target: Target) -> float:
        """The smallest slack to the target, each relative to its limit.

        Over every dataset: ``(limit - value) / limit`` for the flicker ratio
        (where judged), the Dice loss and the added delay. Positive: met with
        that much to spare; 0: on the limit; negative: missed.
        """
        slacks = []
        for c in self.comparisons.values():
            if c.flicker_judged:
                slacks.append(
                    (target.flicker_ratio - c.flicker_ratio) / target.flicker_ratio
                )
            slacks.append(
                (target.max_dice_loss + c.dice_macro_change) / target.max_dice_loss
            )
            slacks.append(
                (target.max_added_delay_ms - c.added_delay_ms_mean)
                / target.max_added_delay_ms
            )
        return min(slacks, default=0.0)

    def rank_key(self, target: Target) -> tuple[float, float, float, float]:
        """Feasible first (violation 0), then the largest margin to the target
        (a default must survive the next model and video), then steadier, then
        more accurate."""
        return (
            round(self.violation(target), 9),
            -round(self.margin(target), 9),
            round(self.worst_flicker_ratio(), 9),
            -self.mean_dice_change(),
        )


def run_sweep(
    datasets: dict[str, list[CachedSequence]],
    baselines: dict[str, VariantResult],
    variants: Sequence[SmoothingSettings],
    model_threshold: float,
    *,
    lead_in: bool = True,
    min_detection_iou: float = 0.0,
    target: Target = Target(),
    on_progress: ProgressCallback | None = None,
) -> list[SweepRow]:
    """Score every variant on every dataset (from the cached probabilities)."""
    rows = []
    for done, settings in enumerate(variants, start=1):
        results = {
            name: score_variant(
                sequences,
                settings,
                model_threshold,
                lead_in=lead_in,
                min_detection_iou=min_detection_iou,
            )
            for name, sequences in datasets.items()
        }
        rows.append(
            SweepRow(
                settings,
                describe(settings, model_threshold),
                results,
                {
                    name: compare(baselines[name], r, target)
                    for name, r in results.items()
                },
            )
        )
        if on_progress is not None:
            on_progress(done, len(variants))
        if done % max(1, len(variants) // 10) == 0:
            log.info("sweep: %d of %d variants scored", done, len(variants))
    return rows


def choose(
    rows: Sequence[SweepRow],
    target: Target,
    *,
    max_hysteresis_gap: float | None = None,
) -> SweepRow:
    """The variant to use as default.

    Among the variants that meet the target on every dataset, the one with
    the largest margin (:meth:`SweepRow.margin`: the smallest relative slack
    over datasets and targets), then the steadiest, then the most accurate.
    A variant that only just meets the target on one dataset is a poor
    default for the next model. When none meets it, the one that misses it
    by the least (sum of relative shortfalls).

    Args:
        rows: The scored sweep.
        target: What the smoothing must achieve.
        max_hysteresis_gap: Only variants with ``on - off`` at most this are
            candidates (None: all; if none qualifies, all). A low off
            threshold holds a mask after the model stops seeing it: on data
            with a polyp in nearly every frame that is rewarded and never
            penalised (a mask that lingers after the polyp has gone, or a
            false positive that is held, needs polyp-free frames to show), so
            the sweep alone would drive the gap to the edge of the grid.
    """
    if not rows:
        raise ValueError("no sweep rows to choose from; the grid is empty")
    candidates = within_gap(rows, max_hysteresis_gap)
    return min(candidates or rows, key=lambda row: row.rank_key(target))


def within_gap(
    rows: Sequence[SweepRow], max_hysteresis_gap: float | None
) -> list[SweepRow]:
    """The rows whose ``on - off`` is at most ``max_hysteresis_gap`` (None: all)."""
    if max_hysteresis_gap is None:
        return list(rows)
    return [r for r in rows if _gap(r.settings) <= max_hysteresis_gap + 1e-9]


def _gap(settings: SmoothingSettings) -> float:
    """``on - off`` of the settings (``hysteresis_gap`` unless both are given)."""
    if settings.on_threshold is not None and settings.off_threshold is not None:
        return settings.on_threshold - settings.off_threshold
    return settings.hysteresis_gap


def best_per_group(rows: Sequence[SweepRow], target: Target) -> list[SweepRow]:
    """The best row (by :meth:`SweepRow.rank_key`) for each (family, time constant)."""
    groups: dict[tuple[str, float], SweepRow] = {}
    for row in rows:
        key = (family(row.settings), row.settings.time_constant_s)
        if key not in groups or row.rank_key(target) < groups[key].rank_key(target):
            groups[key] = row
    return sorted(
        groups.values(), key=lambda r: (family(r.settings), r.settings.time_constant_s)
    )


def variant_key(
    settings: SmoothingSettings, model_threshold: float
) -> tuple[str, float, float, float, float]:
    """What a variant is, independent of the model's threshold.

    (family, time constant, on - model threshold, on - off, area), so the same
    grid point can be matched across sweeps of models with other thresholds.
    """
    on, off = settings.thresholds(model_threshold)
    return (
        family(settings),
        round(settings.time_constant_s, 6),
        round(on - model_threshold, 3),
        round(on - off, 3),
        round(settings.min_area_fraction, 6),
    )


def load_joint_sweep(
    path: Path,
) -> tuple[str, dict[tuple[str, float, float, float, float], dict[str, Comparison]]]:
    """The comparisons of an earlier sweep (its ``report.json``), keyed by variant.

    Used to choose defaults that meet the target for several models: the
    earlier sweep's comparisons are added to the matching rows of this one,
    named ``<folder>:<dataset>`` (the folder holding the report, e.g.
    ``lite2:demo.mp4`` for ``--joint-with runs/temporal/lite2``).

    Raises:
        ConfigError: No such report, or it holds no sweep.
    """
    from streamseg.config import ConfigError

    report = path / "report.json" if path.is_dir() else path
    try:
        data = json.loads(report.read_text())
        threshold = float(data["evaluation"]["model_threshold"])
        label = report.parent.resolve().name
        rows = data["sweep"]["rows"]
    except OSError as error:
        raise ConfigError(
            f"--joint-with {report}: cannot read it ({error.strerror or error}); pass "
            "the --out folder of an earlier evaluate-video --sweep"
        ) from error
    except (ValueError, KeyError, TypeError) as error:
        raise ConfigError(
            f"--joint-with {report}: not an evaluate-video --sweep report ({error!r}); "
            "rerun that sweep with --out"
        ) from error
    fields = [f.name for f in dataclasses.fields(Comparison)]
    table = {}
    for row in rows:
        settings = SmoothingSettings(**row["settings"])
        table[variant_key(settings, threshold)] = {
            f"{label}:{name}": Comparison(
                **{k: math.nan if values[k] is None else values[k] for k in fields}
            )
            for name, values in row["datasets"].items()
        }
    return label, table


def join_sweeps(
    rows: Sequence[SweepRow], model_threshold: float, joint_path: Path
) -> list[SweepRow]:
    """This sweep's rows with the matching comparisons of another model's sweep.

    Rows that the other sweep lacks are dropped (logged): they could not be
    checked on that model.
    """
    label, table = load_joint_sweep(joint_path)
    joined = []
    for row in rows:
        extra = table.get(variant_key(row.settings, model_threshold))
        if extra is not None:
            joined.append(
                dataclasses.replace(row, comparisons={**row.comparisons, **extra})
            )
    if not joined:
        from streamseg.config import ConfigError

        raise ConfigError(
            f"--joint-with {joint_path}: none of this sweep's variants is in that "
            "sweep; run both with the same --grid"
        )
    if len(joined) < len(rows):
        log.warning(
            "%d of %d variants are not in the sweep of %s and were dropped",
            len(rows) - len(joined),
            len(rows),
            label,
        )
    return joined


# --- the whole evaluation ------------------------------------------------------


@dataclass(frozen=True)
class DatasetReport:
    """Per-frame and smoothed results on one dataset."""

    name: str
    timing: str
    sequences: int
    frames: int
    frame_hw: tuple[int, int]
    eval_hw: tuple[int, int]
    per_frame: VariantResult
    smoothed: VariantResult
    comparison: Comparison
    tracks: TrackScores | None = None


@dataclass(frozen=True)
class VideoEvaluation:
    """Everything ``streamseg evaluate-video`` reports."""

    model: dict[str, Any]
    smoothing: SmoothingSettings
    model_threshold: float
    long_side_px: int
    lead_in: bool
    min_detection_iou: float
    target: Target
    datasets: tuple[DatasetReport, ...]
    sweep: tuple[SweepRow, ...] = ()
    choice_max_hysteresis_gap: float | None = None
    tracking: TrackingSettings | None = None

    @property
    def chosen(self) -> SweepRow | None:
        """The sweep's choice (:func:`choose`), None without a sweep."""
        if not self.sweep:
            return None
        return choose(
            self.sweep, self.target, max_hysteresis_gap=self.choice_max_hysteresis_gap
        )

    @property
    def steadiest(self) -> SweepRow | None:
        """The choice without the hysteresis-gap bound (for comparison)."""
        return choose(self.sweep, self.target) if self.sweep else None

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (NaN becomes None)."""
        chosen = self.chosen
        data: dict[str, Any] = {
            "model": self.model,
            "evaluation": {
                "long_side_px": self.long_side_px,
                "lead_in": self.lead_in,
                "min_detection_iou": self.min_detection_iou,
                "model_threshold": self.model_threshold,
                "target": dataclasses.asdict(self.target),
                "conventions": CONVENTIONS,
            },
            "smoothing": {
                "settings": dataclasses.asdict(self.smoothing),
                "label": describe(self.smoothing, self.model_threshold),
            },
            "tracking": None
            if self.tracking is None
            else dataclasses.asdict(self.tracking),
            "datasets": [
                {
                    "name": d.name,
                    "timing": d.timing,
                    "sequences": d.sequences,
                    "frames": d.frames,
                    "frame_hw": list(d.frame_hw),
                    "eval_hw": list(d.eval_hw),
                    PER_FRAME: _result_dict(d.per_frame),
                    SMOOTHED: _result_dict(d.smoothed),
                    "smoothed_vs_per_frame": dataclasses.asdict(d.comparison),
                    "smoothed_shortfalls": d.comparison.shortfalls(self.target),
                    "tracks": None if d.tracks is None else d.tracks.as_dict(),
                }
                for d in self.datasets
            ],
        }
        if self.sweep:
            data["sweep"] = {
                "variants": len(self.sweep),
                "meeting_target": sum(r.meets(self.target) for r in self.sweep),
                "choice_max_hysteresis_gap": self.choice_max_hysteresis_gap,
                "chosen": _row_dict(chosen, self.target) if chosen else None,
                "steadiest_unbounded": _row_dict(self.steadiest, self.target)
                if self.steadiest
                else None,
                "rows": [_row_dict(r, self.target) for r in self.sweep],
            }
        return _plain(data)


CONVENTIONS = (
    "Scores at the evaluation size (long side <= long_side_px; truth downscaled by "
    "area > 0.5). Sequences are independent (smoother reset, no flicker pair, toggle "
    "or episode across sequences). Lead-in: one all-background frame before each "
    "sequence primes the smoother. micro: pixels pooled over frames; macro: mean of "
    "per-frame scores (empty truth and empty prediction = 1). Flicker: mean 1-IoU of "
    "consecutive masks; excess = predicted - truth; the flicker target is judged where "
    "the per-frame excess > max(0.005, 0.1 x truth flicker). Detection: any overlap "
    "with IoU >= "
    "min_detection_iou; added delay: mean over episodes detected with and without "
    "smoothing."
)


def evaluate_video(
    datasets: Sequence[EvalDataset],
    model_settings: ModelSettings,
    smoothing: SmoothingSettings,
    *,
    long_side_px: int = DEFAULT_LONG_SIDE_PX,
    cache_dir: Path | None = None,
    lead_in: bool = True,
    min_detection_iou: float = 0.0,
    target: Target = Target(),
    sweep: SweepGrid | None = None,
    choice_max_hysteresis_gap: float | None = CHOICE_MAX_HYSTERESIS_GAP,
    joint_sweeps: Sequence[Path] = (),
    on_progress: ProgressCallback | None = None,
    on_sweep_progress: ProgressCallback | None = None,
    tracking: TrackingSettings | None = None,
) -> VideoEvaluation:
    """Evaluate per-frame vs smoothed output (and optionally sweep) on datasets.

    Args:
        datasets: From :func:`open_video_dataset` / :func:`open_cvc_dataset`.
        model_settings: Model file, device, precision, threshold override.
        smoothing: The smoothing to report beside the per-frame output.
        long_side_px: Evaluation size (0: the frames' own size).
        cache_dir: Where probabilities are cached (None: no cache).
        lead_in: See the module docstring.
        min_detection_iou: IoU with the truth at which a frame detects.
        target: What the smoothing must achieve.
        sweep: A grid to sweep (None: no sweep).
        choice_max_hysteresis_gap: Bound on ``on - off`` of the chosen
            default (see :func:`choose`; None: unbounded).
        joint_sweeps: ``--out`` folders (or ``report.json``) of sweeps of
            other models on the same grid: the choice must also meet the
            target there (:func:`join_sweeps`).
        on_progress: Called with (frames done, frames total) during inference.
        on_sweep_progress: Called with (variants done, variants total).
        tracking: Also score the polyp tracks behind ``smoothing``
            (:func:`streamseg.track_metrics.score_tracking`; None or
            ``enabled: false``: no track scores).

    Raises:
        TruthError, SourceError, ModelFileError, ConfigError.

    Example:
        >>> from streamseg.app import ModelSettings
        >>> data = open_video_dataset(
        ...     "samples/demo.mp4", Path("samples/demo_masks.npz")
        ... )  # doctest: +SKIP
        >>> report = evaluate_video(
        ...     [data], ModelSettings(path=Path("m.safetensors")), SmoothingSettings()
        ... )  # doctest: +SKIP
        >>> report.datasets[0].comparison.flicker_ratio  # doctest: +SKIP
        0.41
    """
    if not datasets:
        raise ValueError("no dataset to evaluate; pass SOURCE --truth MASKS or --cvc")
    names = [d.name for d in datasets]
    if len(set(names)) != len(names):
        raise ValueError(f"dataset names must differ, got {names}")
    model = ModelRunner(model_settings)
    model.configure_backend()
    threshold = model.spec.threshold
    per_frame_settings = dataclasses.replace(smoothing, enabled=False)
    try:  # fail fast on thresholds that do not fit the model's
        TemporalSmoother(smoothing, model_threshold=threshold)
    except ValueError as error:
        from streamseg.config import ConfigError

        raise ConfigError(str(error)) from error
    loaded = {
        d.name: load_dataset(
            d,
            model,
            long_side_px=long_side_px,
            cache_dir=cache_dir,
            on_progress=on_progress,
        )
        for d in datasets
    }
    options = {"lead_in": lead_in, "min_detection_iou": min_detection_iou}
    reports, baselines = [], {}
    for dataset in datasets:
        sequences = loaded[dataset.name]
        baseline = score_variant(sequences, per_frame_settings, threshold, **options)
        smoothed = score_variant(sequences, smoothing, threshold, **options)
        baselines[dataset.name] = baseline
        reports.append(
            DatasetReport(
                name=dataset.name,
                timing=dataset.timing,
                sequences=len(sequences),
                frames=sum(len(s.timestamps_s) for s in sequences),
                frame_hw=sequences[0].frame_hw,
                eval_hw=sequences[0].eval_hw,
                per_frame=baseline,
                smoothed=smoothed,
                comparison=compare(baseline, smoothed, target),
                tracks=score_tracking(
                    sequences,
                    smoothing,
                    tracking,
                    threshold,
                    polyp_ids=dataset.polyp_ids,
                    frames=[source.frames for source in dataset.sequences],
                    **options,
                )
                if tracking is not None and tracking.enabled
                else None,
            )
        )
    rows: list[SweepRow] = []
    if sweep is not None:
        variants = sweep.variants(threshold, smoothing)
        log.info("sweeping %d smoothing variants", len(variants))
        rows = run_sweep(
            loaded,
            baselines,
            variants,
            threshold,
            target=target,
            on_progress=on_sweep_progress,
            **options,
        )
        for path in joint_sweeps:
            rows = join_sweeps(rows, threshold, Path(path))
    return VideoEvaluation(
        model=_model_dict(model),
        smoothing=smoothing,
        model_threshold=threshold,
        long_side_px=long_side_px,
        lead_in=lead_in,
        min_detection_iou=min_detection_iou,
        target=target,
        datasets=tuple(reports),
        sweep=tuple(rows),
        choice_max_hysteresis_gap=choice_max_hysteresis_gap,
        tracking=tracking,
    )


def _model_dict(model: ModelRunner) -> dict[str, Any]:
    spec = model.spec
    return {
        "path": str(model.path),
        "sha256": model.digest,
        "architecture": spec.architecture,
        "encoder_name": spec.encoder_name,
        "input_hw": list(spec.input_hw),
        "threshold": spec.threshold,
        "provenance": dict(spec.provenance),
    }


def _result_dict(result: VariantResult) -> dict[str, Any]:
    data = result.scores.as_dict()
    data.pop("conventions", None)
    data["flicker_excess"] = result.flicker_excess
    data["episode_delays_ms"] = [
        None if e.delay_s is None else 1000 * e.delay_s for e in result.episodes
    ]
    return data


def _row_dict(row: SweepRow, target: Target) -> dict[str, Any]:
    return {
        "label": row.label,
        "family": family(row.settings),
        "settings": dataclasses.asdict(row.settings),
        "meets_target": row.meets(target),
        "violation": row.violation(target),
        "datasets": {
            name: {
                "dice_macro": r.scores.dice_macro,
                "dice_micro": r.scores.dice_micro,
                "iou_macro": r.scores.iou_macro,
                "flicker_predicted": r.scores.flicker_predicted,
                "flicker_excess": r.flicker_excess,
                "false_positive_frames": r.scores.false_positive_frames,
                "toggles_per_minute": r.scores.toggles_per_minute,
                "mean_delay_ms": r.scores.mean_delay_ms,
                **dataclasses.asdict(row.comparisons[name]),
            }
            for name, r in row.results.items()
        },
        "joint": {
            name: dataclasses.asdict(c)
            for name, c in row.comparisons.items()
            if name not in row.results
        },
    }


def _plain(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return _plain(value.item())
    return value


# --- output files --------------------------------------------------------------


def write_outputs(
    evaluation: VideoEvaluation, out_dir: Path, *, plot_path: Path | None = None
) -> list[Path]:
    """Write ``report.json`` (and with a sweep: ``sweep.csv``, ``sweep.md`` and
    the Dice-vs-flicker plot, ``plot_path`` or ``out_dir/dice_flicker.png``).

    Returns:
        The files written.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / "report.json"]
    written[0].write_text(json.dumps(evaluation.as_dict(), indent=2) + "\n")
    if evaluation.sweep:
        csv_path = out_dir / "sweep.csv"
        csv_path.write_text(sweep_csv(evaluation))
        md_path = out_dir / "sweep.md"
        md_path.write_text(sweep_markdown(evaluation))
        png_path = plot_path or out_dir / "dice_flicker.png"
        plot_dice_flicker(evaluation, png_path)
        written += [csv_path, md_path, png_path]
    return written


def sweep_csv(evaluation: VideoEvaluation) -> str:
    """Every sweep row: settings, then per dataset the scores and comparisons."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    names = [d.name for d in evaluation.datasets]
    metrics = [
        "dice_macro",
        "dice_change",
        "flicker_predicted",
        "flicker_excess",
        "flicker_ratio",
        "false_positive_frames",
        "toggles_per_minute",
        "added_delay_ms_mean",
        "added_delay_ms_max",
        "newly_missed_episodes",
    ]
    writer.writerow(
        [
            "family",
            "time_constant_s",
            "confidence_power",
            "on_threshold",
            "off_threshold",
            "min_area_fraction",
            "meets_target",
            "violation",
            *[f"{n}:{m}" for n in names for m in metrics],
        ]
    )
    for row in evaluation.sweep:
        s = row.settings
        on, off = s.thresholds(evaluation.model_threshold)
        cells: list[Any] = [
            family(s),
            s.time_constant_s,
            s.confidence_power if s.mode == "uncertainty" else "",
            on,
            off,
            s.min_area_fraction,
            row.meets(evaluation.target),
            f"{row.violation(evaluation.target):.4f}",
        ]
        for name in names:
            r, c = row.results[name], row.comparisons[name]
            cells += [
                f"{r.scores.dice_macro:.4f}",
                f"{c.dice_macro_change:+.4f}",
                f"{r.scores.flicker_predicted:.4f}",
                f"{r.flicker_excess:.4f}",
                f"{c.flicker_ratio:.3f}",
                r.scores.false_positive_frames,
                f"{r.scores.toggles_per_minute:.1f}",
                f"{c.added_delay_ms_mean:.1f}",
                f"{c.added_delay_ms_max:.1f}",
                c.newly_missed_episodes,
            ]
        writer.writerow(cells)
    return buffer.getvalue()


def sweep_markdown(evaluation: VideoEvaluation) -> str:
    """Markdown: per-frame baselines, the best variant per (family, tau), the choice."""
    target = evaluation.target
    names = list(evaluation.sweep[0].comparisons) if evaluation.sweep else []
    lines = [
        "| variant | "
        + " | ".join(f"{n}: Dice Δ / excess-flicker ratio / +delay ms" for n in names)
        + " | meets target |",
        "| --- | " + " | ".join("---" for _ in names) + " | --- |",
    ]
    chosen = evaluation.chosen

    def cells(comparisons: dict[str, Comparison]) -> str:
        texts = []
        for name in names:
            c = comparisons.get(name)
            if c is None:  # the configured settings were not run on that model
                texts.append("-")
                continue
            missed = (
                f", {c.newly_missed_episodes} missed" if c.newly_missed_episodes else ""
            )
            texts.append(
                f"{c.dice_macro_change:+.4f} / {_ratio(c)} / "
                f"{c.added_delay_ms_mean:+.0f}{missed}"
            )
        return " | ".join(texts)

    configured = {d.name: d.comparison for d in evaluation.datasets}
    meets = all(not c.shortfalls(target) for c in configured.values())
    lines.append(
        f"| configured: {describe(evaluation.smoothing, evaluation.model_threshold)} "
        f"| {cells(configured)} | {'yes' if meets else 'no'} |"
    )
    candidates = within_gap(evaluation.sweep, evaluation.choice_max_hysteresis_gap)
    for row in best_per_group(candidates or evaluation.sweep, target):
        mark = " **(chosen)**" if row is chosen else ""
        lines.append(
            f"| {row.label}{mark} | {cells(row.comparisons)} "
            f"| {'yes' if row.meets(target) else 'no'} |"
        )
    baseline_lines = [
        "| dataset | output | Dice macro / micro | IoU macro / micro | flicker "
        "predicted / truth / excess | FP frames | toggles/min | first-detection "
        "delay frames / ms (episodes) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for d in evaluation.datasets:
        outputs = [(PER_FRAME, d.per_frame), ("configured", d.smoothed)]
        if chosen is not None:
            outputs.append(("chosen", chosen.results[d.name]))
        for label, result in outputs:
            r = result.scores
            baseline_lines.append(
                f"| {d.name} | {label} | {r.dice_macro:.4f} / {r.dice_micro:.4f} | "
                f"{r.iou_macro:.4f} / {r.iou_micro:.4f} | "
                f"{r.flicker_predicted:.4f} / {r.flicker_truth:.4f} / "
                f"{result.flicker_excess:+.4f} | "
                f"{r.false_positive_frames} of {r.frames_without_polyp} | "
                f"{r.toggles_per_minute:.1f} | {r.mean_delay_frames:.2f} / "
                f"{r.mean_delay_ms:.1f} ({r.episodes - r.missed_episodes} of "
                f"{r.episodes} found) |"
            )
    judged = [n for n, c in evaluation.sweep[0].comparisons.items() if c.flicker_judged]
    lines.append(
        "\nRatios in parentheses: the flicker target is not judged on that dataset "
        f"(judged on: {', '.join(judged) or 'none'})."
    )
    text = "\n".join(baseline_lines) + "\n\n" + "\n".join(lines) + "\n"
    if chosen is not None:
        bound = evaluation.choice_max_hysteresis_gap
        steadiest = evaluation.steadiest
        if bound is not None:
            text += f"\nChosen among variants with on - off <= {bound:g}."
            if steadiest is not None and steadiest is not chosen:
                text += f" Without that bound: `{steadiest.label}`."
            text += "\n"
        text += f"\nChosen: `{chosen.label}`"
        if not chosen.meets(target):
            misses = {
                name: c.shortfalls(target) for name, c in chosen.comparisons.items()
            }
            text += f" (target missed: {misses})"
        text += "\n"
    return text


# --- the plot (Pillow: a runtime dependency already, no matplotlib needed) ------

_COLORS = {
    "threshold": (150, 150, 150),
    "ema": (31, 119, 180),
    "uncertainty k=1": (255, 187, 120),
    "uncertainty k=2": (255, 127, 14),
    "uncertainty k=4": (196, 78, 0),
}


def plot_dice_flicker(evaluation: VideoEvaluation, path: Path) -> Path:
    """PNG: macro Dice against excess flicker, one panel per dataset.

    Every sweep variant is a dot coloured by family; the per-frame output is a
    black square, the configured smoothing a green diamond, the chosen
    variant a red ring; the shaded box is where the target is met on that
    dataset (flicker and Dice; delay is not drawn).
    """
    from PIL import Image, ImageDraw, ImageFont

    panel_w, panel_h = 560, 440
    left, right, top, bottom = 70, 20, 56, 60
    legend_h = 60
    count = len(evaluation.datasets)
    image = Image.new("RGB", (panel_w * count, panel_h + legend_h), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=13)
    title_font = ImageFont.load_default(size=15)
    chosen = evaluation.chosen
    target = evaluation.target
    for p, dataset in enumerate(evaluation.datasets):
        x0 = p * panel_w
        name = dataset.name
        base = dataset.per_frame
        points = [
            (r.results[name].flicker_excess, r.results[name].scores.dice_macro, r)
            for r in evaluation.sweep
        ]
        xs = [x for x, _, _ in points] + [
            base.flicker_excess,
            dataset.smoothed.flicker_excess,
        ]
        ys = [y for _, y, _ in points] + [
            base.scores.dice_macro,
            dataset.smoothed.scores.dice_macro,
        ]
        x_lo, x_hi = _padded(min(xs), max(xs))
        y_lo, y_hi = _padded(min(ys), max(ys))

        def to_px(
            x: float, y: float, x0=x0, x_lo=x_lo, x_hi=x_hi, y_lo=y_lo, y_hi=y_hi
        ):
            px = x0 + left + (x - x_lo) / (x_hi - x_lo) * (panel_w - left - right)
            py = top + (y_hi - y) / (y_hi - y_lo) * (panel_h - top - bottom)
            return px, py

        # Target region: Dice loss met, and the flicker ratio where judged.
        x_max = (
            target.flicker_ratio * base.flicker_excess
            if dataset.comparison.flicker_judged
            else x_hi
        )
        a = to_px(x_lo, y_hi)
        b = to_px(
            min(x_max, x_hi), max(base.scores.dice_macro - target.max_dice_loss, y_lo)
        )
        if b[0] > a[0] and b[1] > a[1]:
            draw.rectangle([a, b], fill=(225, 245, 225))
        # Axes, ticks, grid.
        ax0, ay0 = to_px(x_lo, y_lo)
        ax1, ay1 = to_px(x_hi, y_hi)
        for tick in _ticks(x_lo, x_hi):
            px, _ = to_px(tick, y_lo)
            draw.line([(px, ay1), (px, ay0)], fill=(235, 235, 235))
            draw.text(
                (px, ay0 + 4), f"{tick:.3g}", fill="black", font=font, anchor="ma"
            )
        for tick in _ticks(y_lo, y_hi):
            _, py = to_px(x_lo, tick)
            draw.line([(ax0, py), (ax1, py)], fill=(235, 235, 235))
            draw.text(
                (ax0 - 4, py), f"{tick:.3f}", fill="black", font=font, anchor="rm"
            )
        draw.rectangle([(ax0, ay1), (ax1, ay0)], outline="black")
        draw.text(
            ((ax0 + ax1) / 2, ay0 + 22),
            "excess flicker (predicted - truth, mean 1-IoU of consecutive masks)",
            fill="black",
            font=font,
            anchor="ma",
        )
        draw.text((ax0, ay1 - 6), "macro Dice", fill="black", font=font, anchor="ld")
        draw.text(
            ((ax0 + ax1) / 2, 4),
            f"{name}: {dataset.frames} frames",
            fill="black",
            font=title_font,
            anchor="ma",
        )
        draw.text(
            ((ax0 + ax1) / 2, 22),
            dataset.timing
            + ("" if dataset.comparison.flicker_judged else "; flicker not judged"),
            fill=(80, 80, 80),
            font=font,
            anchor="ma",
        )
        for x, y, row in points:
            cx, cy = to_px(x, y)
            color = _COLORS.get(family(row.settings), (120, 120, 120))
            draw.ellipse([cx - 2.5, cy - 2.5, cx + 2.5, cy + 2.5], fill=color)
        cx, cy = to_px(base.flicker_excess, base.scores.dice_macro)
        draw.rectangle([cx - 5, cy - 5, cx + 5, cy + 5], fill="black")
        cx, cy = to_px(
            dataset.smoothed.flicker_excess, dataset.smoothed.scores.dice_macro
        )
        draw.polygon(
            [(cx, cy - 7), (cx + 7, cy), (cx, cy + 7), (cx - 7, cy)], fill=(0, 160, 0)
        )
        if chosen is not None:
            result = chosen.results[name]
            cx, cy = to_px(result.flicker_excess, result.scores.dice_macro)
            draw.ellipse([cx - 8, cy - 8, cx + 8, cy + 8], outline=(220, 0, 0), width=3)
    # Legend.
    entries: list[tuple[str, Any]] = [(k, v) for k, v in _COLORS.items()]
    legend_y = panel_h + 10
    x = 20
    for label, color in entries:
        draw.ellipse([x, legend_y + 4, x + 8, legend_y + 12], fill=color)
        draw.text((x + 12, legend_y), label, fill="black", font=font)
        x += 24 + draw.textlength(label, font=font)
    y2 = legend_y + 24
    draw.rectangle([20, y2 + 2, 30, y2 + 12], fill="black")
    draw.text((36, y2), "per-frame", fill="black", font=font)
    draw.polygon(
        [(125, y2 + 1), (131, y2 + 7), (125, y2 + 13), (119, y2 + 7)], fill=(0, 160, 0)
    )
    draw.text((137, y2), "configured smoothing", fill="black", font=font)
    draw.ellipse([290, y2, 304, y2 + 14], outline=(220, 0, 0), width=3)
    draw.text((310, y2), "chosen", fill="black", font=font)
    draw.rectangle([380, y2 + 2, 394, y2 + 12], fill=(225, 245, 225))
    draw.text((400, y2), "target met (flicker, Dice)", fill="black", font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def _padded(lo: float, hi: float) -> tuple[float, float]:
    span = hi - lo if hi > lo else max(abs(hi), 1e-3)
    return lo - 0.06 * span, hi + 0.06 * span


def _ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    raw = (hi - lo) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step) + 1)]


# --- tables for the terminal (rich renderables; the CLI prints them) -----------


def report_tables(evaluation: VideoEvaluation, *, top: int = 12) -> list[Any]:
    """Rich tables: per dataset per-frame vs smoothed; with a sweep, its best rows."""
    from rich.table import Table

    tables: list[Any] = []
    label = describe(evaluation.smoothing, evaluation.model_threshold)
    for d in evaluation.datasets:
        table = Table(
            title=(
                f"{d.name}: {d.frames} frames in {d.sequences} sequence(s), "
                f"{d.timing}; scored at {d.eval_hw[1]}x{d.eval_hw[0]} px"
                f"{', lead-in' if evaluation.lead_in else ''}"
            ),
            title_justify="left",
            caption=f"smoothed = {label}",
            caption_justify="left",
        )
        table.add_column("metric")
        table.add_column(PER_FRAME, justify="right")
        table.add_column(SMOOTHED, justify="right")
        table.add_column("change", justify="right")
        base, new = d.per_frame.scores, d.smoothed.scores
        rows: list[tuple[str, float, float, str]] = [
            ("Dice macro", base.dice_macro, new.dice_macro, "{:.4f}"),
            ("Dice micro", base.dice_micro, new.dice_micro, "{:.4f}"),
            ("IoU macro", base.iou_macro, new.iou_macro, "{:.4f}"),
            ("IoU micro", base.iou_micro, new.iou_micro, "{:.4f}"),
            (
                "flicker predicted",
                base.flicker_predicted,
                new.flicker_predicted,
                "{:.4f}",
            ),
            (
                "flicker truth (real motion)",
                base.flicker_truth,
                new.flicker_truth,
                "{:.4f}",
            ),
            (
                "excess flicker",
                d.per_frame.flicker_excess,
                d.smoothed.flicker_excess,
                "{:.4f}",
            ),
            (
                f"false-positive frames (of {base.frames_without_polyp})",
                base.false_positive_frames,
                new.false_positive_frames,
                "{:.0f}",
            ),
            (
                "toggles / min",
                base.toggles_per_minute,
                new.toggles_per_minute,
                "{:.1f}",
            ),
            (
                f"first-detection delay, frames (of {base.episodes} episodes)",
                base.mean_delay_frames,
                new.mean_delay_frames,
                "{:.2f}",
            ),
            (
                "first-detection delay, ms",
                base.mean_delay_ms,
                new.mean_delay_ms,
                "{:.1f}",
            ),
            ("missed episodes", base.missed_episodes, new.missed_episodes, "{:.0f}"),
        ]
        for name, before, after, fmt in rows:
            change = after - before
            table.add_row(
                name,
                _fmt(fmt, before),
                _fmt(fmt, after),
                ""
                if math.isnan(change)
                else ("+" if change >= 0 else "") + _fmt(fmt, change),
            )
        c = d.comparison
        misses = c.shortfalls(evaluation.target)
        table.add_row(
            "vs target",
            "",
            f"excess flicker x{c.flicker_ratio:.2f}"
            f"{'' if c.flicker_judged else ' (not judged)'}, "
            f"+{c.added_delay_ms_mean:.0f} ms",
            "met"
            if not misses
            else "missed: " + ", ".join(f"{k} by {v:.3g}" for k, v in misses.items()),
        )
        tables.append(table)
    tables.extend(track_tables(evaluation))
    if evaluation.sweep:
        target = evaluation.target
        candidates = within_gap(
            evaluation.sweep, evaluation.choice_max_hysteresis_gap
        ) or list(evaluation.sweep)
        ranked = sorted(candidates, key=lambda r: r.rank_key(target))[:top]
        meeting = sum(r.meets(target) for r in evaluation.sweep)
        table = Table(
            title=(
                f"sweep: {len(evaluation.sweep)} variants, {meeting} meet the target "
                f"(flicker x<={target.flicker_ratio:g}, Dice loss <= "
                f"{target.max_dice_loss:g}, "
                f"+delay <= {target.max_added_delay_ms:g} ms); "
                f"best {len(ranked)}"
                + (
                    ""
                    if evaluation.choice_max_hysteresis_gap is None
                    else f" with on - off <= {evaluation.choice_max_hysteresis_gap:g}"
                )
            ),
            title_justify="left",
        )
        table.add_column("variant")
        names = list(evaluation.sweep[0].comparisons)
        for name in names:
            table.add_column(f"{name}\nDice Δ / flicker x / +ms", justify="right")
        table.add_column("target")
        for row in ranked:
            cells = [
                f"{c.dice_macro_change:+.4f} / {_ratio(c)} / "
                f"{c.added_delay_ms_mean:+.0f}"
                + (
                    f" / {c.newly_missed_episodes} missed"
                    if c.newly_missed_episodes
                    else ""
                )
                for c in (row.comparisons[name] for name in names)
            ]
            table.add_row(row.label, *cells, "met" if row.meets(target) else "missed")
        tables.append(table)
    return tables


def _ratio(comparison: Comparison) -> str:
    """The excess-flicker ratio; in parentheses where the target does not judge it."""
    text = f"{comparison.flicker_ratio:.2f}"
    return text if comparison.flicker_judged else f"({text})"


def _fmt(fmt: str, value: float) -> str:
    return (
        "-"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else fmt.format(value)
    )


def track_tables(evaluation: VideoEvaluation) -> list[Any]:
    """Rich table per dataset: presence toggles, ids, delay, Dice of the tracks."""
    from rich.table import Table

    if evaluation.tracking is None:
        return []
    t = evaluation.tracking
    tables = []
    for d in evaluation.datasets:
        if d.tracks is None:
            continue
        k = d.tracks
        table = Table(
            title=f"{d.name}: polyp tracks",
            title_justify="left",
            caption=(
                f"tracks = smoothed + tracking min_on_s={t.min_on_s:g} "
                f"keep_s={t.keep_s:g} max_gap_s={t.max_gap_s:g} "
                f"match_iou={t.match_iou:g}"
            ),
            caption_justify="left",
        )
        table.add_column("metric")
        table.add_column(PER_FRAME, justify="right")
        table.add_column(SMOOTHED, justify="right")
        table.add_column("tracks", justify="right")
        base, smooth = d.per_frame.scores, d.smoothed.scores
        table.add_row(
            "presence toggles / min (after the first detection)",
            _fmt("{:.1f}", k.per_frame_toggles_per_minute),
            _fmt("{:.1f}", k.smoothed_toggles_per_minute),
            _fmt("{:.1f}", k.toggles_per_minute)
            + (
                f" (x{k.toggles_per_minute / k.per_frame_toggles_per_minute:.2f})"
                if k.per_frame_toggles_per_minute
                else ""
            ),
        )
        table.add_row(
            "Dice macro",
            _fmt("{:.4f}", base.dice_macro),
            _fmt("{:.4f}", smooth.dice_macro),
            _fmt("{:.4f}", k.dice_macro) + f" ({k.dice_macro - base.dice_macro:+.4f})",
        )
        table.add_row(
            f"first-detection delay, ms (of {k.episodes} true episodes)",
            "",
            "",
            _fmt("{:.1f}", k.mean_delay_ms)
            + f" (+{k.added_delay_ms_mean:.0f} vs per-frame)",
        )
        table.add_row(
            "missed episodes",
            "",
            "",
            f"{k.missed_episodes} ({k.newly_missed_episodes} newly)",
        )
        table.add_row(
            "ID switches (per true episode)",
            "",
            "",
            f"{k.id_switches} ({_fmt('{:.2f}', k.id_switches_per_episode)})",
        )
        table.add_row(
            "polyps shown / true polyps (ids covering 2+ polyps)",
            "",
            "",
            f"{k.polyps_shown} / {k.true_polyps} ({k.merged_ids})",
        )
        tables.append(table)
    return tables
