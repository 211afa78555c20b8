"""The browser view: the annotated stream as MJPEG over HTTP, a status panel, buttons.

``streamseg run SOURCE --view web [--bind 127.0.0.1:8080]`` serves:

=====================  ======  ==============================================
route                  method  what
=====================  ======  ==============================================
``/``                  GET     the page: live video, status panel, buttons
``/stream.mjpg``       GET     ``multipart/x-mixed-replace`` JPEG stream
``/frame.jpg``         GET     the newest frame, once
``/status``            GET     JSON: fps, progress/speed or latency, drops...
``/record/start``      POST    start a recording (MP4 + JSONL)
``/record/stop``       POST    stop it
``/snapshot``          POST    save the newest frame as PNG + one JSON line
=====================  ======  ==============================================

Design:

* Each frame is JPEG-encoded **once**, on the pipeline thread (the
  :class:`~streamseg.clips.JpegEncoder` shared with the clip recorder), and
  the bytes are shared by every viewer through a :class:`FrameBroadcast`.
  Publishing swaps one reference under a condition variable; each viewer's
  thread sends the newest frame when its socket is ready. A slow viewer gets
  fewer frames; it never slows the pipeline or the other viewers.
* Only the fixed routes above exist; no part of a request is ever used as a
  file path. POSTs need the ``X-Streamseg: 1`` header (which a page from
  another site cannot send without a CORS preflight, which is never granted),
  and on a loopback bind the ``Host`` header must name the loopback (so a
  DNS-rebinding page cannot reach the view either).
* The server binds to 127.0.0.1 unless told otherwise; a non-loopback bind is
  logged as a warning (there is no authentication).
"""

from __future__ import annotations

import contextlib
import datetime
import http.server
import ipaddress
import json
import logging
import socket
import threading
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import numpy as np

from streamseg.clips import ClipRecorder, JpegEncoder
from streamseg.events import StreamClock, describe
from streamseg.files import LineWriter, write_atomic
from streamseg.findings import Findings
from streamseg.sinks import OutputError, parse_bind

log = logging.getLogger(__name__)

BOUNDARY = b"frame"
# How often an idle viewer thread wakes to notice a shutdown.
_VIEWER_WAKE_S = 1.0
CSRF_HEADER = "X-Streamseg"
SOCKET_TIMEOUT_S = 60.0
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


class FrameBroadcast:
    """The newest encoded frame, handed to any number of viewer threads.

    ``publish`` never blocks on a viewer: it swaps a reference and wakes the
    waiting threads. Each viewer remembers the sequence number it last sent
    and waits for a newer one, so a slow viewer skips frames.

    Example:
        >>> frames = FrameBroadcast()
        >>> frames.publish(b"a"); frames.publish(b"b")
        >>> frames.wait_newer(0, timeout_s=0.1)
        (2, b'b')
        >>> frames.wait_newer(2, timeout_s=0.01) is None
        True
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._sequence = 0
        self._data = b""
        self.closed = False

    def publish(self, data: bytes) -> None:
        """Make ``data`` the newest frame and wake the viewers."""
        with self._condition:
            self._sequence += 1
            self._data = data
            self._condition.notify_all()

    def latest(self) -> tuple[int, bytes]:
        """(sequence number, bytes) of the newest frame; (0, b"") before any."""
        with self._condition:
            return self._sequence, self._data

    def wait_newer(self, sequence: int, timeout_s: float) -> tuple[int, bytes] | None:
        """The newest frame once newer than ``sequence``; None on timeout or close."""
        with self._condition:
            self._condition.wait_for(
                lambda: self._sequence > sequence or self.closed, timeout_s
            )
            if self.closed or self._sequence <= sequence:
                return None
            return self._sequence, self._data

    def close(self) -> None:
        """Wake every viewer for good (the server is stopping)."""
        with self._condition:
            self.closed = True
            self._condition.notify_all()


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class WebView:
    """A sink that serves the annotated video and a control page to browsers.

    Args:
        bind: ``host:port`` to listen on (port 0: a free port; see :attr:`url`).
        jpeg: The shared JPEG encoder (one is made if not given).
        recorder: Receives the record button's start/stop (``None``: the
            buttons answer 409).
        status: Run figures (fps, latency_ms, frames_dropped, ...) merged
            into ``/status``; called on the pipeline thread once per frame.
        snapshots: Folder for snapshots (default: the recorder's folder, else
            ``recordings``).
        clock: Stream and wall-clock times for the snapshots' JSON lines.

    Raises:
        OutputError: The address cannot be bound (in use, not local).
    """

    name = "web view"
    wants_image = True

    def __init__(
        self,
        bind: str = "127.0.0.1:8080",
        *,
        jpeg: JpegEncoder | None = None,
        recorder: ClipRecorder | None = None,
        status: Callable[[], Mapping[str, object]] | None = None,
        snapshots: str | Path | None = None,
        clock: StreamClock | None = None,
    ) -> None:
        host, port = parse_bind(bind)
        self.clock = clock
        self.frames = FrameBroadcast()
        self.recorder = recorder
        if snapshots is not None:
            self.snapshots = Path(snapshots)
        elif recorder is not None:
            self.snapshots = recorder.folder
        else:
            self.snapshots = Path("recordings")
        self.snapshots_taken = 0
        self._jpeg = jpeg or JpegEncoder()
        self._status_of_run = status
        self._lock = threading.Lock()
        self._latest: tuple[Findings, np.ndarray] | None = None
        self._status: dict[str, object] = {"signal": False, "polyp_present": False}
        self._viewers = 0
        self._polyps_seen: int | None = None
        self._last_snapshot: str | None = None
        self._server = _make_server(host, port, self)
        self.host = host
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="streamseg-web",
            daemon=True,
        )
        self._thread.start()
        self._closed = False
        if not is_loopback(host):
            log.warning(
                "the browser view listens on %s: anyone who can reach this machine "
                "can watch the video and start recordings (there is no login); "
                "bind 127.0.0.1 unless the network is trusted",
                bind,
            )
        log.info("browser view at %s", self.url)

    @property
    def url(self) -> str:
        """The page's address, e.g. ``http://127.0.0.1:8080/``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        if host in ("0.0.0.0", "[::]"):
            host = "127.0.0.1" if host == "0.0.0.0" else "[::1]"
        return f"http://{host}:{self.port}/"

    # --- the pipeline thread ----------------------------------------------------

    def write(self, findings: Findings, image: np.ndarray) -> None:
        self.frames.publish(self._jpeg(image))
        figures = dict(self._status_of_run()) if self._status_of_run else {}
        tracks = findings.tracks
        if tracks is not None:
            self._polyps_seen = tracks.polyps_seen
            figures["polyps_seen"] = tracks.polyps_seen
            figures["tracks"] = [
                {
                    "id": view.track_id,
                    "on_screen_s": round(view.on_screen_s, 1),
                    "detected": view.detected,
                }
                for view in tracks.tracks
            ]
        with self._lock:
            self._latest = (findings, image)
            self._status = {
                **figures,
                "signal": True,
                "polyp_present": findings.present,
                "frame_index": findings.frame.index,
            }

    def show_no_signal(self, image: np.ndarray) -> None:
        """Show the NO SIGNAL card; snapshots are refused until frames return."""
        self.frames.publish(self._jpeg(image))
        figures = dict(self._status_of_run()) if self._status_of_run else {}
        with self._lock:
            self._latest = None
            self._status = {
                **figures,
                "polyps_seen": self._polyps_seen,  # the count survives the silence
                "tracks": [],
                "fps": None,  # the figures describe the last frames, not the silence
                "latency_ms": None,
                "outline_ms": None,
                "signal": False,
                "polyp_present": False,
            }

    def close(self) -> None:
        """Stop serving (viewers' streams end)."""
        if self._closed:
            return
        self._closed = True
        self.frames.close()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=2.0)

    # --- request threads ----------------------------------------------------------

    def status(self) -> dict[str, object]:
        """Everything the status panel shows (JSON-ready)."""
        with self._lock:
            state = dict(self._status)
            state["viewers"] = self._viewers
            state["snapshots"] = self.snapshots_taken
            state["last_snapshot"] = self._last_snapshot
        if self.recorder is not None:
            state.update(self.recorder.status())
        else:
            state["recording"] = False
        return state

    @contextlib.contextmanager
    def viewer(self) -> Iterator[None]:
        """Count a connected video viewer while the block runs."""
        with self._lock:
            self._viewers += 1
        try:
            yield
        finally:
            with self._lock:
                self._viewers -= 1

    def snapshot(self) -> dict[str, object]:
        """Save the newest frame as ``snapshot_<time>.png`` + a line of snapshots.jsonl.

        Returns:
            The JSON line written (the frame's findings, the file name, the
            wall-clock time).

        Raises:
            LookupError: No frame to save (none yet, or no signal).
            OutputError: The snapshot cannot be written.
        """
        import cv2

        with self._lock:
            latest = self._latest
        if latest is None:
            raise LookupError("no live frame to save (no signal yet)")
        findings, image = latest
        now = datetime.datetime.now()
        stamp = now.strftime("%Y%m%dT%H%M%S_%f")[:-3]
        try:
            self.snapshots.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OutputError(
                f"{self.snapshots}: cannot create the snapshot folder "
                f"({error.strerror}); pick a writable folder"
            ) from error
        path = self.snapshots / f"snapshot_{stamp}.png"
        ok, png = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        line = json.loads(describe(findings, self.clock).to_json())
        line["image"] = path.name
        line["wall_time"] = now.isoformat(timespec="milliseconds")
        try:  # a kill leaves the whole image or none, and whole lines
            if not ok:
                raise OSError("cannot encode the image")
            write_atomic(path, png.tobytes())
            with LineWriter(self.snapshots / "snapshots.jsonl", append=True) as lines:
                lines.write(json.dumps(line))
        except OSError as error:
            raise OutputError(
                f"{path}: cannot write the snapshot ({error.strerror or error}); "
                "check free space and permissions"
            ) from error
        with self._lock:
            self.snapshots_taken += 1
            self._last_snapshot = path.name
        log.info("snapshot %s", path)
        return line


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    view: WebView
    allowed_hosts: frozenset[str] | None


def _make_server(host: str, port: int, view: WebView) -> _Server:
    server_class = type(
        "_Server",
        (_Server,),
        {"address_family": socket.AF_INET6 if ":" in host else socket.AF_INET},
    )
    try:
        server = server_class((host, port), _Handler)
    except OSError as error:
        raise OutputError(
            f"browser view: cannot listen on {host}:{port} "
            f"({error.strerror or error}); pick another port with --bind, "
            "e.g. --bind 127.0.0.1:8081"
        ) from error
    server.view = view
    server.allowed_hosts = (
        LOOPBACK_NAMES | {host.lower()} if is_loopback(host) else None
    )
    return server


class _Handler(http.server.BaseHTTPRequestHandler):
    """Fixed routes only; the request path is matched, never used as a file name."""

    server: _Server
    server_version = "streamseg"
    protocol_version = "HTTP/1.1"
    # Idle keep-alive connections, and viewers whose socket accepts nothing
    # for this long, are closed (their threads end).
    timeout = SOCKET_TIMEOUT_S

    def do_GET(self) -> None:
        route = self._route()
        if route is None:
            return
        handler = {
            "/": self._page,
            "/index.html": self._page,
            "/stream.mjpg": self._stream,
            "/frame.jpg": self._frame,
            "/status": self._status,
        }.get(route)
        if handler is None:
            self._reply_json(
                405 if route in _POST_ROUTES else 404, {"error": "not found"}
            )
            return
        handler()

    def do_POST(self) -> None:
        route = self._route()
        if route is None:
            return
        action = _POST_ROUTES.get(route)
        if action is None:
            self._reply_json(405 if route in _GET_ROUTES else 404, {"error": "no"})
            return
        if self.headers.get(CSRF_HEADER) != "1":
            self._reply_json(
                403, {"error": f"missing header {CSRF_HEADER}: 1 (use the page)"}
            )
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(min(length, 4096))  # a body is not used; drain it
        view = self.server.view
        try:
            if action == "snapshot":
                self._reply_json(200, view.snapshot())
                return
            if view.recorder is None:
                self._reply_json(409, {"error": "recording is not available"})
                return
            if action == "start":
                view.recorder.start_manual()
            else:
                view.recorder.stop_manual()
            self._reply_json(200, view.status())
        except LookupError as error:
            self._reply_json(409, {"error": str(error)})
        except OutputError as error:
            log.error("%s", error)
            self._reply_json(500, {"error": str(error)})

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    # --- routes -------------------------------------------------------------------

    def _route(self) -> str | None:
        """The request's path if its Host is acceptable; else reply 403 and None."""
        allowed = self.server.allowed_hosts
        if allowed is not None:
            host = urllib.parse.urlsplit(f"//{self.headers.get('Host', '')}").hostname
            if (host or "").lower() not in allowed:
                self._reply_json(403, {"error": "unexpected Host header"})
                return None
        return self.path.partition("?")[0]  # matched exactly, never normalized

    def _page(self) -> None:
        self._reply(200, "text/html; charset=utf-8", PAGE.encode("utf-8"))

    def _frame(self) -> None:
        sequence, data = self.server.view.frames.latest()
        if sequence == 0:
            self._reply_json(503, {"error": "no frame yet"})
            return
        self._reply(200, "image/jpeg", data)

    def _status(self) -> None:
        self._reply_json(200, self.server.view.status())

    def _stream(self) -> None:
        view = self.server.view
        self.send_response(200)
        self.send_header(
            "Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY.decode()}"
        )
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        sequence = 0
        try:
            self.wfile.write(b"--" + BOUNDARY + b"\r\n")
            with view.viewer():
                while not view.frames.closed:
                    newest = view.frames.wait_newer(sequence, _VIEWER_WAKE_S)
                    if newest is None:
                        continue
                    sequence, data = newest
                    # The closing boundary goes out with the part: browsers
                    # show a part once its boundary arrives, not a frame later.
                    self.wfile.write(
                        b"Content-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                        % len(data)
                        + data
                        + b"\r\n--"
                        + BOUNDARY
                        + b"\r\n"
                    )
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass  # the viewer went away

    def _reply_json(self, code: int, body: Mapping[str, object]) -> None:
        self._reply(code, "application/json", json.dumps(body).encode("utf-8"))

    def _reply(self, code: int, content_type: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(body)


_GET_ROUTES = frozenset({"/", "/index.html", "/stream.mjpg", "/frame.jpg", "/status"})
_POST_ROUTES = {
    "/record/start": "start",
    "/record/stop": "stop",
    "/snapshot": "snapshot",
}


PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>streamseg live</title>
<style>
  body { margin: 0; background: #111; color: #ddd; font: 14px system-ui, sans-serif;
         display: flex; flex-wrap: wrap; align-items: flex-start; gap: 12px;
         padding: 12px; }
  #video { max-width: calc(100vw - 300px); max-height: calc(100vh - 24px);
           min-width: 320px; background: #000; object-fit: contain; }
  #panel { width: 250px; display: flex; flex-direction: column; gap: 8px; }
  table { border-collapse: collapse; }
  td { padding: 2px 6px; } td:first-child { color: #999; }
  #polyp { padding: 8px; text-align: center; font-weight: bold; border-radius: 4px;
           background: #333; }
  #polyp.on { background: #d22; color: #fff; }
  #signal.off { color: #f55; font-weight: bold; }
  button { padding: 8px; font-size: 14px; cursor: pointer; }
  button.recording { background: #d22; color: #fff; }
  #message { min-height: 2em; color: #aaa; word-break: break-all; }
  #tracks { list-style: none; margin: 0; padding: 0; }
  #tracks li { padding: 3px 6px; margin: 2px 0; background: #2a2a2a;
               border-radius: 3px; }
  #tracks li.held { color: #999; }
</style>
</head>
<body>
<img id="video" src="/stream.mjpg" alt="live video">
<div id="panel">
  <div id="polyp">no polyp</div>
  <table>
    <tr><td>signal</td><td id="signal">-</td></tr>
    <tr><td>model</td><td id="model">-</td></tr>
    <tr><td>fps</td><td id="fps">-</td></tr>
    <tr id="progress-row"><td>frames</td><td id="progress">-</td></tr>
    <tr id="speed-row"><td>speed</td><td id="speed">-</td></tr>
    <tr id="latency-row"><td>latency</td><td id="latency">-</td></tr>
    <tr id="outline-row" hidden><td>outline age</td><td id="outline">-</td></tr>
    <tr><td>dropped</td><td id="dropped">-</td></tr>
    <tr><td>recording</td><td id="recording">-</td></tr>
    <tr><td>clips saved</td><td id="saved">-</td></tr>
    <tr><td>viewers</td><td id="viewers">-</td></tr>
    <tr><td>polyps seen</td><td id="polyps">-</td></tr>
  </table>
  <ul id="tracks"></ul>
  <button id="record">Start recording</button>
  <button id="snapshot">Snapshot</button>
  <button id="sound" hidden>Sound on</button>
  <div id="message"></div>
</div>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
let state = {}, alerts = null, audio = null;
function show(s) {
  state = s;
  $("polyp").textContent = s.polyp_present ? "POLYP" : "no polyp";
  $("polyp").className = s.polyp_present ? "on" : "";
  $("signal").textContent = s.signal ? "ok" : "NO SIGNAL";
  $("signal").className = s.signal ? "" : "off";
  $("model").textContent = s.model == null ? "-" : s.model;
  $("fps").textContent = s.fps == null ? "-" : s.fps.toFixed(1);
  $("latency").textContent =
    s.latency_ms == null ? "-" : s.latency_ms.toFixed(0) + " ms";
  $("progress").textContent = s.frames_done == null ? "-"
    : s.frames_done + (s.frames_total == null ? "" : " / " + s.frames_total);
  $("speed").textContent =
    s.speed_x == null ? "-" : s.speed_x.toFixed(2) + "x real time";
  // Files: progress and speed; live sources: latency (grab -> overlay).
  $("progress-row").hidden = $("speed-row").hidden = s.live === true;
  $("latency-row").hidden = s.live === false;
  // Live, every_frame display: how old the outline drawn on the frame is.
  $("outline-row").hidden = s.outline_ms == null;
  $("outline").textContent =
    s.outline_ms == null ? "-" : s.outline_ms.toFixed(0) + " ms";
  $("dropped").textContent = s.frames_dropped == null ? "-" : s.frames_dropped;
  $("recording").textContent = s.recording
    ? (s.recording_file || "starting") + " (" + (s.recording_frames || 0) + ")" : "off";
  $("saved").textContent = s.clips_saved == null ? "-" : s.clips_saved;
  $("viewers").textContent = s.viewers;
  $("polyps").textContent = s.polyps_seen == null ? "-" : s.polyps_seen;
  const list = $("tracks");
  list.replaceChildren(...(s.tracks || []).map((t) => {
    const item = document.createElement("li");
    item.textContent = "#" + t.id + "  " + t.on_screen_s.toFixed(1) + " s"
      + (t.detected ? "" : " (held)");
    item.className = t.detected ? "" : "held";
    return item;
  }));
  const rec = $("record");
  rec.textContent = s.recording_manual ? "Stop recording" : "Start recording";
  rec.className = s.recording_manual ? "recording" : "";
  $("sound").hidden = !s.sound;
  if (alerts !== null && s.alerts > alerts) beep();
  alerts = s.alerts == null ? 0 : s.alerts;
}
function beep() {
  if (!audio) return;
  const tone = audio.createOscillator(), gain = audio.createGain();
  tone.frequency.value = 880; gain.gain.value = 0.2;
  tone.connect(gain).connect(audio.destination);
  tone.start(); tone.stop(audio.currentTime + 0.2);
}
async function poll() {
  try {
    const reply = await fetch("/status", {cache: "no-store"});
    show(await reply.json());
  } catch (e) { $("signal").textContent = "server gone"; }
}
async function post(route) {
  const reply = await fetch(route, {method: "POST", headers: {"X-Streamseg": "1"}});
  const body = await reply.json();
  $("message").textContent = reply.ok
    ? (body.image ? "saved " + body.image : "") : body.error;
  poll();
}
$("record").onclick =
  () => post(state.recording_manual ? "/record/stop" : "/record/start");
$("snapshot").onclick = () => post("/snapshot");
$("sound").onclick = () => {
  audio = audio || new AudioContext(); audio.resume();
  $("sound").textContent = "Sound is on"; beep();
};
$("video").onerror = () => setTimeout(() => {
  $("video").src = "/stream.mjpg?" + Date.now();
}, 1000);
setInterval(poll, 500);
poll();
</script>
</body>
</html>
"""
