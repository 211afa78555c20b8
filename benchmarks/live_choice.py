"""How long a live start takes with the model choice, against the default alone.

Prints the seconds from the ``model`` settings to a ready network in this
fresh process: for the bundled default alone (``Segmenter.from_settings``), or
with ``--choice`` for the live choice (:func:`streamseg.live_model.choose`: the
default, then the fallbacks, loaded, prepared and timed) with its log line.
Run each a few times, alternated (a second start in one process would reuse
what the first loaded):

    python benchmarks/live_choice.py --threads 2
    python benchmarks/live_choice.py --threads 2 --choice --fps 25
"""

from __future__ import annotations

import argparse
import time

from streamseg import live_model
from streamseg.cpu import cpu_info
from streamseg.segmenter import ModelSettings, Segmenter, prepare_device


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--choice", action="store_true", help="the live choice")
    parser.add_argument("--fps", type=float, default=25.0, help="the source's rate")
    args = parser.parse_args()
    settings = ModelSettings(threads=args.threads)
    device = prepare_device(settings)
    start_s = time.perf_counter()
    if args.choice:
        chosen = live_model.choose(
            settings,
            source_fps=args.fps,
            build=lambda s: Segmenter.from_settings(s, device, live=True),
        )
        line = chosen.describe()
    else:
        Segmenter.from_settings(settings, device, live=True)
        line = "the default alone"
    ready_s = time.perf_counter() - start_s
    print(f"{cpu_info().describe()}: ready in {ready_s:.1f} s | {line}")


if __name__ == "__main__":
    main()
