"""The browser view's server: fixed routes, shared JPEG, slow viewers, buttons."""

from __future__ import annotations

import http.client
import itertools
import json
import logging
import socket
import threading
import time

import cv2
import numpy as np
import pytest
import torch
from live_helpers import FILL_OVER_DISC_RGB, get, get_json, post, wait_until
from stream_media import decode_video, disc_image

from streamseg.clips import ClipRecorder, JpegEncoder
from streamseg.findings import Findings
from streamseg.frames import Frame, Prediction
from streamseg.overlay import OverlayStyle, no_signal_image, render
from streamseg.sinks import OutputError, OutputSettings, parse_bind
from streamseg.web import FrameBroadcast, WebView, is_loopback

HW = (96, 128)
CENTER_YX, RADIUS = (48, 64), 24


def _prediction(index: int, hw=HW, noise: bool = False) -> tuple[Findings, np.ndarray]:
    """A disc frame whose mask is exactly the disc, and its rendered image."""
    pixels = disc_image(hw, CENTER_YX, RADIUS)
    if noise:  # incompressible: large JPEGs that fill socket buffers
        pixels = np.random.default_rng(index).integers(0, 256, (*hw, 3), np.uint8)
    yy, xx = np.mgrid[0 : hw[0], 0 : hw[1]]
    disc = (yy - CENTER_YX[0]) ** 2 + (xx - CENTER_YX[1]) ** 2 <= RADIUS**2
    prediction = Prediction(
        Frame(index, index / 25, pixels), torch.from_numpy(disc.astype(np.float32)), 0.5
    )
    findings = Findings.of(prediction)
    return findings, render(findings, OverlayStyle(hud=False, boxes=False))


@pytest.fixture
def view(tmp_path):
    jpeg = JpegEncoder(95)
    recorder = ClipRecorder(
        tmp_path / "recordings", jpeg=jpeg, auto=False, pre_roll_s=0.0
    )
    web = WebView(
        "127.0.0.1:0",
        jpeg=jpeg,
        recorder=recorder,
        status=lambda: {"fps": 25.0, "latency_ms": 12.5, "frames_dropped": 3},
    )
    yield web
    web.close()
    recorder.close()


def _feed(view: WebView, index: int) -> None:
    """Write a frame to the recorder and the view, as the app's Sinks do."""
    prediction, image = _prediction(index)
    view.recorder.write(prediction, image)
    view.write(prediction, image)


def _raw_get(view: WebView, path: str, host: str | None = None) -> int:
    connection = http.client.HTTPConnection(view.host, view.port, timeout=5)
    try:
        connection.putrequest("GET", path, skip_host=host is not None)
        if host is not None:
            connection.putheader("Host", host)
        connection.endheaders()
        return connection.getresponse().status
    finally:
        connection.close()


def test_broadcast_hands_the_newest_frame_to_a_slow_viewer_without_blocking():
    frames = FrameBroadcast()
    seen: list[int] = []

    def slow_viewer():
        sequence = 0
        while not frames.closed:
            newest = frames.wait_newer(sequence, 0.5)
            if newest is not None:
                sequence = newest[0]
                seen.append(sequence)
                time.sleep(0.02)  # a slow network

    thread = threading.Thread(target=slow_viewer)
    thread.start()
    slowest_s = 0.0
    for index in range(1, 201):
        start = time.perf_counter()
        frames.publish(b"%d" % index)
        slowest_s = max(slowest_s, time.perf_counter() - start)
        time.sleep(0.001)
    assert wait_until(lambda: seen and seen[-1] == 200, 2.0), "newest frame missed"
    frames.close()
    thread.join(2.0)
    assert not thread.is_alive()
    assert slowest_s < 0.05, f"publishing waited {slowest_s:.3f} s for a viewer"
    assert all(b > a for a, b in itertools.pairwise(seen))
    assert len(seen) < 200, "a slow viewer must skip frames, not queue them"


def test_page_status_and_frame_routes(view):
    prediction, image = _prediction(7)
    view.write(prediction, image)

    status, page = get(view.url)
    assert status == 200 and b'src="/stream.mjpg"' in page
    for button in (b'id="record"', b'id="snapshot"'):
        assert button in page
    state = get_json(view.url + "status")
    assert state["signal"] is True and state["polyp_present"] is True
    assert state["frame_index"] == 7
    assert (state["fps"], state["latency_ms"], state["frames_dropped"]) == (25, 12.5, 3)
    assert state["recording"] is False and state["viewers"] == 0

    status, body = get(view.url + "frame.jpg")
    assert status == 200
    decoded = cv2.cvtColor(
        cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR),
        cv2.COLOR_BGR2RGB,
    )
    centre = decoded[40:56, 56:72].reshape(-1, 3).mean(axis=0)
    assert np.abs(centre - FILL_OVER_DISC_RGB).max() < 12, "RGB/BGR or overlay wrong"


@pytest.mark.parametrize(
    ("method", "path", "code"),
    [
        ("GET", "/../../etc/passwd", 404),
        ("GET", "/etc/passwd", 404),
        ("GET", "/static/../status", 404),
        ("GET", "//etc/passwd", 404),
        ("GET", "/%2e%2e/web.py", 404),
        ("GET", "/snapshot", 405),
        ("POST", "/status", 405),
        ("POST", "/../snapshot", 404),
    ],
)
def test_only_fixed_routes_exist(view, method, path, code):
    connection = http.client.HTTPConnection(view.host, view.port, timeout=5)
    try:
        connection.request(method, path, headers={"X-Streamseg": "1"})
        assert connection.getresponse().status == code
    finally:
        connection.close()


def test_posts_need_the_page_header_and_a_loopback_host(view):
    assert post(view.url + "snapshot", headers={})[0] == 403
    assert _raw_get(view, "/status", host="evil.example:80") == 403
    assert _raw_get(view, "/status", host=f"localhost:{view.port}") == 200


def test_mjpeg_stream_sends_the_shared_jpeg_of_each_new_frame(view):
    connection = http.client.HTTPConnection(view.host, view.port, timeout=5)
    connection.request("GET", "/stream.mjpg")
    reply = connection.getresponse()
    assert reply.status == 200
    assert reply.getheader("Content-Type") == (
        "multipart/x-mixed-replace; boundary=frame"
    )
    assert reply.readline() == b"--frame\r\n"
    assert wait_until(lambda: view.status()["viewers"] == 1, 2.0)
    parts = []
    for index in range(3):
        prediction, image = _prediction(index)
        view.write(prediction, image)
        headers = {}
        while (line := reply.readline()) != b"\r\n":
            key, _, value = line.decode().partition(":")
            headers[key.lower()] = value.strip()
        assert headers["content-type"] == "image/jpeg"
        parts.append(reply.read(int(headers["content-length"])))
        assert reply.readline() == b"\r\n" and reply.readline() == b"--frame\r\n"
    connection.close()
    # The bytes sent are the very JPEG the shared encoder made: encoded once.
    assert parts[-1] == view.frames.latest()[1]
    assert all(part[:2] == b"\xff\xd8" for part in parts)


def test_a_stalled_viewer_never_slows_the_pipeline_or_other_viewers(view):
    # One viewer connects and never reads: its socket buffers fill up.
    stalled = socket.create_connection((view.host, view.port))
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.sendall(
        f"GET /stream.mjpg HTTP/1.1\r\nHost: 127.0.0.1:{view.port}\r\n\r\n".encode()
    )
    received = []

    def reader():
        connection = http.client.HTTPConnection(view.host, view.port, timeout=10)
        connection.request("GET", "/stream.mjpg")
        reply = connection.getresponse()
        while len(received) < 1000:
            line = reply.readline()
            if not line:
                break
            if line.lower().startswith(b"content-length"):
                reply.readline()
                received.append(reply.read(int(line.split(b":")[1])))
        connection.close()

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    assert wait_until(lambda: view.status()["viewers"] == 2, 2.0)
    frames = [_prediction(i, hw=(240, 320), noise=True) for i in range(60)]
    slowest_s = 0.0
    start = time.perf_counter()
    for prediction, image in frames:  # ~150 kB per frame: the stalled socket fills
        began = time.perf_counter()
        view.write(prediction, image)
        slowest_s = max(slowest_s, time.perf_counter() - began)
        time.sleep(0.01)
    elapsed_s = time.perf_counter() - start
    assert wait_until(lambda: len(received) >= 10, 5.0)
    assert slowest_s < 0.25, f"a write waited {slowest_s:.2f} s"
    assert elapsed_s < 60 * 0.01 + 3.0
    assert view.status()["viewers"] == 2
    stalled.close()


def test_snapshot_writes_the_frame_as_png_and_a_json_line(view, tmp_path):
    assert post(view.url + "snapshot")[0] == 409  # no frame yet
    prediction, image = _prediction(11)
    view.write(prediction, image)
    code, line = post(view.url + "snapshot")
    assert code == 200
    folder = tmp_path / "recordings"
    png = cv2.imread(str(folder / line["image"]), cv2.IMREAD_COLOR)
    assert np.array_equal(cv2.cvtColor(png, cv2.COLOR_BGR2RGB), image)
    (saved,) = [
        json.loads(text)
        for text in (folder / "snapshots.jsonl").read_text().splitlines()
    ]
    assert saved == line
    assert saved["index"] == 11 and saved["polyp_present"] is True
    assert saved["boxes_xywh"] == [[40, 24, 49, 49]]
    assert get_json(view.url + "status")["snapshots"] == 1


def test_record_buttons_write_a_playable_mp4_with_its_jsonl(view, tmp_path):
    code, state = post(view.url + "record/start")
    assert code == 200 and state["recording"] and state["recording_manual"]
    for index in range(12):
        _feed(view, index)
    state = get_json(view.url + "status")
    assert state["recording_frames"] == 12
    assert state["recording_file"].startswith("rec_")
    assert post(view.url + "record/stop")[0] == 200
    _feed(view, 12)  # the recorder closes the clip at the next frame
    assert wait_until(lambda: get_json(view.url + "status")["clips_saved"] == 1, 5.0)
    (clip,) = (tmp_path / "recordings").glob("rec_*.mp4")
    images, times = decode_video(clip)
    assert len(images) == 12
    assert times == pytest.approx([i / 25 for i in range(12)], abs=1e-3)
    centre = images[5][40:56, 56:72].reshape(-1, 3).mean(axis=0)
    assert np.abs(centre - FILL_OVER_DISC_RGB).max() < 15
    events = clip.with_suffix(".jsonl").read_text().splitlines()
    assert [json.loads(e)["index"] for e in events] == list(range(12))


def test_no_signal_shows_the_card_and_refuses_snapshots(view):
    view.write(*_prediction(0))
    card = no_signal_image(HW, OverlayStyle(), 2.0)
    view.show_no_signal(card)
    state = get_json(view.url + "status")
    assert state["signal"] is False and state["polyp_present"] is False
    assert state["fps"] is None
    _, body = get(view.url + "frame.jpg")
    shown = cv2.cvtColor(
        cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR),
        cv2.COLOR_BGR2RGB,
    )
    assert np.abs(shown.astype(int) - card).mean() < 3
    assert post(view.url + "snapshot")[0] == 409


def test_default_bind_is_loopback_and_another_one_is_warned(caplog):
    assert parse_bind(OutputSettings().bind) == ("127.0.0.1", 8080)
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
    with caplog.at_level(logging.WARNING, logger="streamseg.web"):
        WebView("127.0.0.1:0").close()
        assert not caplog.records
        exposed = WebView("0.0.0.0:0")
        exposed.close()
    (record,) = caplog.records
    assert "0.0.0.0:0" in record.getMessage() and "no login" in record.getMessage()


@pytest.mark.parametrize("bind", ["8080", "localhost", "host:port", ":80", "a:70000"])
def test_a_malformed_bind_is_rejected(bind):
    with pytest.raises(ValueError, match="expected host:port"):
        OutputSettings(view="web", bind=bind)


def test_a_port_in_use_fails_clearly():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OutputError, match=rf"cannot listen on 127.0.0.1:{port}"):
            WebView(f"127.0.0.1:{port}")


def test_cli_serves_the_browser_view_while_it_runs(tmp_path, tiny_spec, caplog):
    from stream_media import moving_disc, tiny_model_file, write_video

    from streamseg.cli import main

    clip = write_video(tmp_path / "clip.mp4", [f.pixels for f in moving_disc(5)])
    model = tiny_model_file(tiny_spec, tmp_path)
    arguments = ["run", str(clip), "--model", str(model), "--device", "cpu"]
    with caplog.at_level(logging.INFO, logger="streamseg"):
        code = main([*arguments, "--view", "web", "--bind", "127.0.0.1:0"])
    assert code == 0
    assert "browser view at http://127.0.0.1:" in caplog.text


def test_cli_rejects_a_malformed_bind(tmp_path, capsys):
    from streamseg.cli import EXIT_USAGE, main

    code = main(["run", "clip.mp4", "--view", "web", "--bind", "nonsense"])
    assert code == EXIT_USAGE
    assert "expected host:port" in capsys.readouterr().err


def test_each_frame_is_jpeg_encoded_once_for_the_view_and_the_clips(
    tmp_path, tiny_spec, monkeypatch
):
    from stream_media import moving_disc, tiny_model_file, write_video

    import streamseg.clips
    from streamseg.app import StreamConfig, run
    from streamseg.clips import ClipSettings
    from streamseg.segmenter import ModelSettings
    from streamseg.sinks import FrameList
    from streamseg.sources import SourceSettings

    calls = []
    encode = streamseg.clips.encode_jpeg
    monkeypatch.setattr(
        streamseg.clips,
        "encode_jpeg",
        lambda image, quality: calls.append(1) or encode(image, quality),
    )
    clip = write_video(tmp_path / "clip.mp4", [f.pixels for f in moving_disc(8)])
    config = StreamConfig(
        source=SourceSettings(uri=str(clip)),
        model=ModelSettings(path=tiny_model_file(tiny_spec, tmp_path), device="cpu"),
        output=OutputSettings(view="web", bind="127.0.0.1:0"),
        clips=ClipSettings(folder=tmp_path / "clips", pre_roll_s=1.0),
    )
    frames = FrameList()
    stats = run(config, sinks=[frames])
    assert stats.frames_out == 8
    assert len(calls) == 8, "one JPEG per frame, shared by the view and the clips"


def test_a_web_run_creates_no_folder_until_something_is_written_there(
    tmp_path, tiny_spec, monkeypatch
):
    from live_helpers import RedDiscSegmenter
    from stream_media import write_video

    from streamseg.app import StreamConfig, run
    from streamseg.clips import ClipSettings
    from streamseg.segmenter import ModelSettings
    from streamseg.sources import SourceSettings

    empty = np.full((*HW, 3), (40, 20, 10), np.uint8)  # no polyp: no event clip
    clip = write_video(tmp_path / "clip.mp4", [empty] * 3)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for clips in (ClipSettings(), ClipSettings(folder=work / "clips" / "today")):
        config = StreamConfig(
            source=SourceSettings(uri=str(clip), max_frames=2),
            model=ModelSettings(device="cpu"),
            output=OutputSettings(view="web", bind="127.0.0.1:0"),
            clips=clips,
        )
        assert run(config, segmenter=RedDiscSegmenter(tiny_spec)).frames_out == 2
        assert list(work.iterdir()) == [], "nothing recorded: no recordings/ folder"


def test_a_clips_folder_that_cannot_be_created_still_fails_before_the_run(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OutputError, match="cannot create the clips folder"):
        ClipRecorder(blocker / "clips", jpeg=JpegEncoder())
    assert not (tmp_path / "file").is_dir()
