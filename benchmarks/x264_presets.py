"""CPU time and size per frame of libx264 presets (crf 20), as the recorder encodes.

    python benchmarks/x264_presets.py CLIP.mp4 [CLIP.mp4 ...]

Decodes each clip into memory, then encodes it with veryfast, superfast and ultrafast
and prints process CPU time (user + system, which a busy machine inflates far less than
wall time), wall time and bytes per frame. Used for the video_preset default
(docs/benchmarks.md); the bench clips are in /tmp/streamseg-bench after
`streamseg bench`.
"""

import io
import resource
import sys
import time

import av


def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


for clip in sys.argv[1:]:
    with av.open(clip) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    h, w, _ = frames[0].shape
    for preset in ("veryfast", "superfast", "ultrafast"):
        buf = io.BytesIO()
        out = av.open(buf, "w", format="mp4")
        s = out.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"crf": "20", "preset": preset}
        c0, t0 = cpu(), time.perf_counter()
        for a in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(a, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
        out.close()
        n = len(frames)
        print(
            f"{w}x{h} {preset:9s} cpu {1000 * (cpu() - c0) / n:6.1f} ms/frame  "
            f"wall {1000 * (time.perf_counter() - t0) / n:6.1f} ms/frame  "
            f"size {len(buf.getvalue()) / n / 1024:6.1f} kB/frame"
        )
