"""What an outline drawn on later frames costs: the every_frame live display, replayed.

With ``source.live_display: every_frame`` a live run shows every frame at once
with the newest finished outline, while the network segments the newest frame
whenever it is free. This replays that schedule on clips with per-frame truth:
the network's outputs (``evaluate-video``'s cached probabilities of the model,
through its smoothing) are taken only on every ``EVERY``-th frame, and each
segmentation is first drawn ``DELAY`` frames after its own frame (the network's
time), then held until the next one is ready. Each frame is scored against its
own truth (macro and micro Dice, flicker, as ``evaluate-video``), so the table
shows the accuracy lost to the outline's age. ``EVERY`` = ``DELAY`` = 1 would be
a network that keeps up with one frame of delay; ``0:0`` is the ``segmented``
display (each frame drawn with its own outline).

    python benchmarks/held_outline_dice.py --schedules 0:0,2:2,2:3,3:3,3:4 \
        --cvc ../shared/data/cvc-clinicdb-dev

A schedule ``EVERY:DELAY`` (frames at the clip's rate; 25 fps: 40 ms a frame).
CVC-ClinicDB's frames are in time order but not consecutive (docs/temporal.md):
there a frame of delay is a larger jump than 40 ms of video, so its losses are
an upper bound. The demo clip's motion is synthetic with exact truth.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from streamseg.config import load_config
from streamseg.evaluation.video_data import (
    CachedSequence,
    ModelRunner,
    default_cache_dir,
    load_dataset,
    open_cvc_dataset,
    open_video_dataset,
)
from streamseg.evaluation.video_metrics import VideoScorer, VideoScores
from streamseg.frames import Frame, Prediction
from streamseg.regions import scale_mask
from streamseg.smoothing import SmoothingSettings, TemporalSmoother

ROOT = Path(__file__).resolve().parents[1]


def replay(
    sequences: Sequence[CachedSequence],
    smoothing: SmoothingSettings,
    threshold: float,
    every: int,
    delay: int,
) -> VideoScores:
    """Score the held-outline schedule (``every`` = 0: each frame its own outline)."""
    scorer = VideoScorer()
    smoother = TemporalSmoother(smoothing, model_threshold=threshold)
    for sequence in sequences:
        scorer.start_sequence()
        smoother.reset()
        hw = sequence.eval_hw
        blank = np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (*hw, 3))
        times = sequence.timestamps_s
        step = max(every, 1)
        ready: dict[int, np.ndarray] = {}  # frame index it is first drawn -> mask
        for index in range(0, len(times), step):
            frame = Frame(index, float(times[index]), blank)
            probabilities = torch.from_numpy(sequence.probabilities[index]).float()
            out = smoother(Prediction(frame, probabilities, threshold))
            ready[index + (delay if every else 0)] = scale_mask(out.mask.numpy(), hw)
        shown = np.zeros(hw, bool)  # nothing drawn before the first outline
        for index in range(len(times)):
            shown = ready.get(index, shown)
            scorer.add(shown, sequence.truth[index], times[index])
    return scorer.summary()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--schedules",
        default="0:0,2:2,2:3,3:3,3:4",
        help="EVERY:DELAY in frames, comma-separated (0:0: each frame its own)",
    )
    parser.add_argument("--cvc", type=Path, help="CVC-ClinicDB folder (sequences.csv)")
    parser.add_argument("--config", type=Path, default=ROOT / "configs/stream.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    from streamseg.app import StreamConfig

    config = load_config(StreamConfig, args.config, args.set)
    model = ModelRunner(config.model)
    model.configure_backend()
    threshold = model.spec.threshold
    smoothing = config.smoothing
    datasets = [
        open_video_dataset(
            str(ROOT / "samples/demo.mp4"), ROOT / "samples/demo_masks.npz"
        )
    ]
    if args.cvc is not None:
        datasets.append(open_cvc_dataset(args.cvc))
    schedules = [
        tuple(int(part) for part in item.split(":"))
        for item in args.schedules.split(",")
    ]
    print(f"model {model.path.name} ({model.precision_name}), threshold {threshold}")
    print("dataset | EVERY:DELAY | macro Dice | micro Dice | flicker (truth)")
    for dataset in datasets:
        sequences = load_dataset(dataset, model, cache_dir=default_cache_dir())
        for every, delay in schedules:
            scores = replay(sequences, smoothing, threshold, every, delay)
            print(
                f"{dataset.name} | {every}:{delay} | {scores.dice_macro:.4f} | "
                f"{scores.dice_micro:.4f} | {scores.flicker_predicted:.4f} "
                f"({scores.flicker_truth:.4f})"
            )


if __name__ == "__main__":
    main()
