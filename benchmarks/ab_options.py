"""Options and clips shared by the A/B pipeline benchmarks (run as scripts)."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from streamseg.evaluation.bench_inputs import bench_clips


def ab_parser(doc: str) -> argparse.ArgumentParser:
    """A parser with ``--threads``, ``--frames``, ``--repeats`` and ``--config``."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--config", default="configs/stream.yaml")
    return parser


def ab_clips(args: argparse.Namespace) -> dict[str, Path]:
    """Set torch's threads and make (once) the bench's 720p and 1080p clips."""
    torch.set_num_threads(args.threads)
    return bench_clips(args.frames)
