r"""Local engine vs Ray for ``streamseg batch`` on the same six clips: where time goes.

Makes six clips (four good, one truncated, one audio-only), then runs the real
command once per engine, and a second time (the good videos are skipped, the
bad ones tried again), each in a fresh process:

    streamseg batch CLIPS --out WORK/ENGINE --model MODEL --device cpu \
        [--ray auto --workers 1]

and reads the run table. Reported per engine: the command's wall time; the
start-up (command start to the first video's start: imports, model load, and
for Ray the local cluster and the actor); the per-video time inside the
worker; the per-video overhead between videos (the previous video's end to
the next one's start: dispatch, result hand-back, the run table write); the
rerun's wall time.

    python benchmarks/batch_engines.py --work /tmp/batch-bench \
        --json docs/data/bench/batch_engines.json

Default model: a tiny random Unet/resnet18 at 64x64, so the per-video times
are mostly the engine's own cost (pass --model FILE for a real one).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

FAST = ["model.precision=fp32", "model.channels_last=false", "model.threads=1"]


def make_clips(folder: Path, frames: int, size_wh: tuple[int, int]) -> None:
    import av

    shutil.rmtree(folder, ignore_errors=True)
    (folder / "sub").mkdir(parents=True)
    width, height = size_wh
    for name in ("a.mp4", "b.mp4", "sub/c.mp4", "sub/d.mkv"):
        with av.open(str(folder / name), "w") as container:
            stream = container.add_stream("libx264", rate=25)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            for index in range(frames):
                image = np.zeros((height, width, 3), np.uint8)
                x = int((width - 20) * index / max(frames - 1, 1))
                image[height // 2 - 10 : height // 2 + 10, x : x + 20] = (200, 60, 60)
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
    data = (folder / "a.mp4").read_bytes()
    (folder / "sub" / "corrupt.mp4").write_bytes(data[: len(data) // 2])
    with av.open(str(folder / "audio.mp4"), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for index in range(4):
            audio = av.AudioFrame.from_ndarray(
                np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
            )
            audio.sample_rate, audio.pts = 16000, index * 1024
            audio.time_base = Fraction(1, 16000)
            container.mux(stream.encode(audio))
        container.mux(stream.encode(None))


def tiny_model(path: Path) -> Path:
    import torch

    from streamseg.model import ModelSpec, build_network, save_model

    spec = ModelSpec(
        architecture="Unet",
        encoder_name="resnet18",
        input_hw=(64, 64),
        threshold=0.5,
        model_kwargs={"encoder_depth": 3, "decoder_channels": [32, 16, 8]},
        provenance={"dataset": "none (benchmark)"},
    )
    torch.manual_seed(0)
    return save_model(path, build_network(spec), spec)


def run_engine(clips: Path, out: Path, model: Path, extra: list[str]) -> dict:
    command = [
        sys.executable,
        "-m",
        "streamseg",
        "batch",
        str(clips),
        "--out",
        str(out),
        "--model",
        str(model),
        "--device",
        "cpu",
        *(a for key in FAST for a in ("--set", key)),
        *extra,
    ]
    shutil.rmtree(out, ignore_errors=True)
    start = time.time()
    first = subprocess.run(command, capture_output=True, text=True)
    end = time.time()
    rows = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    rows.sort(key=lambda r: r["started_at"])
    starts = [_epoch(r["started_at"]) for r in rows]
    walls = [r["wall_s"] for r in rows]
    gaps = [starts[i + 1] - (starts[i] + walls[i]) for i in range(len(rows) - 1)]
    again_start = time.time()
    second = subprocess.run(command, capture_output=True, text=True)
    again_s = time.time() - again_start
    return {
        "command": " ".join(["python", *command[1:]]),
        "exit_code": first.returncode,
        "rerun_exit_code": second.returncode,
        "wall_s": round(end - start, 2),
        "startup_s": round(starts[0] - start, 2),
        "video_s": [round(w, 3) for w in walls],
        "video_s_total": round(sum(walls), 2),
        "overhead_between_videos_s": round(sum(gaps) / len(gaps), 3) if gaps else None,
        "after_last_video_s": round(end - (starts[-1] + walls[-1]), 2),
        "statuses": {r["video"]: r["status"] for r in rows},
        "rerun_wall_s": round(again_s, 2),
        "rerun_stdout": second.stdout.strip().splitlines()[:1],
    }


def _epoch(iso: str) -> float:
    return datetime.datetime.fromisoformat(iso).timestamp()


def machine() -> dict:
    info = {"python": platform.python_version(), "cpus": os.cpu_count()}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        lscpu = ""
    for line in lscpu.splitlines():
        if line.startswith("Model name:"):
            info["cpu"] = line.split(":", 1)[1].strip()
        if line.startswith("Flags:"):
            flags = set(line.split(":", 1)[1].split())
            info["flags"] = sorted(
                flags & {"amx_bf16", "amx_tile", "avx512_bf16", "avx512_vnni"}
            )
    info["load_average"] = os.getloadavg()
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/batch-bench"))
    parser.add_argument("--model", type=Path, help="model file (default: tiny random)")
    parser.add_argument("--frames", type=int, default=100, help="frames per good clip")
    parser.add_argument("--size", default="128x96", help="clip size WxH")
    parser.add_argument("--json", type=Path, help="write the report here")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    args.work.mkdir(parents=True, exist_ok=True)
    clips = args.work / "clips"
    make_clips(clips, args.frames, (width, height))
    model = args.model or tiny_model(args.work / "tiny.safetensors")
    report = {
        "machine_before": machine(),
        "clips": f"4 good x {args.frames} frames at {width}x{height} 25 fps, "
        "1 truncated, 1 audio-only",
        "model": str(model if args.model else "tiny random Unet/resnet18 @64"),
        "local": run_engine(clips, args.work / "local", model, []),
        "ray": run_engine(
            clips, args.work / "ray", model, ["--ray", "auto", "--workers", "1"]
        ),
    }
    report["machine_after"] = machine()
    text = json.dumps(report, indent=1)
    print(text)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
