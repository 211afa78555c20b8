"""The browser view in headless Chromium.

A live UDP stream shows with overlay and status, and the record button
produces a playable clip.

Chromium is driven through chromedriver's WebDriver HTTP API with urllib (no
selenium, nothing downloaded). Debian's ``chromium`` and ``chromium-driver``
are needed; ``make test`` installs them where it can (root with apt-get),
and this test is skipped, saying why, where they are missing.
"""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import socket
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from live_helpers import (
    FILL_OVER_DISC_RGB,
    RedDiscSegmenter,
    free_port,
    get_json,
    sender,
    wait_until,
)
from stream_media import decode_video
from stream_sender import DISC_CENTER_YX, DISC_RADIUS, SIZE_HW

from streamseg.app import StreamConfig, run
from streamseg.segmenter import ModelSettings
from streamseg.sinks import FrameList, OutputSettings
from streamseg.sources import SourceSettings

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="needs Debian's chromium and chromium-driver packages (make test installs "
    "them when run as root with apt-get: apt-get install chromium chromium-driver)",
)


class WebDriver:
    """The few WebDriver commands the test needs, over plain HTTP (W3C protocol)."""

    def __init__(self, base_url: str, session_id: str) -> None:
        self.base_url = base_url
        self.session_id = session_id

    @classmethod
    def start(cls, base_url: str, profile: Path, window_wh=(900, 700)) -> WebDriver:
        options = {
            "binary": CHROMIUM,
            "args": [
                "--headless=new",
                "--no-sandbox",  # root in a container
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-default-apps",
                "--disable-extensions",
                f"--user-data-dir={profile}",
                f"--window-size={window_wh[0]},{window_wh[1]}",
            ],
        }
        capabilities = {
            "browserName": "chrome",
            # The MJPEG <img> never finishes loading: do not wait for "load".
            "pageLoadStrategy": "eager",
            "goog:chromeOptions": options,
        }
        reply = _call(
            "POST",
            f"{base_url}/session",
            {"capabilities": {"alwaysMatch": capabilities}},
        )
        return cls(base_url, reply["sessionId"])

    def command(self, method: str, path: str, body: dict | None = None):
        url = f"{self.base_url}/session/{self.session_id}{path}"
        return _call(method, url, body)

    def open(self, url: str) -> None:
        self.command("POST", "/url", {"url": url})

    def script(self, source: str):
        return self.command("POST", "/execute/sync", {"script": source, "args": []})

    def text(self, css: str) -> str:
        return self.script(f"return document.querySelector({css!r}).textContent")

    def element(self, css: str) -> str:
        found = self.command(
            "POST", "/element", {"using": "css selector", "value": css}
        )
        return next(iter(found.values()))

    def click(self, css: str) -> None:
        self.command("POST", f"/element/{self.element(css)}/click", {})

    def screenshot(self, css: str) -> np.ndarray:
        """(H, W, 3) uint8 RGB picture of the element as the page renders it."""
        png = base64.b64decode(
            self.command("GET", f"/element/{self.element(css)}/screenshot")
        )
        bgr = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def quit(self) -> None:
        with contextlib.suppress(OSError):
            _call("DELETE", f"{self.base_url}/session/{self.session_id}")


def _call(method: str, url: str, body: dict | None = None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return json.loads(reply.read())["value"]
    except urllib.error.HTTPError as error:
        raise RuntimeError(
            f"WebDriver {method} {url}: {error.read()[:500]!r}"
        ) from None


@contextlib.contextmanager
def chromium(tmp_path: Path) -> Iterator[WebDriver]:
    port = free_port()
    driver = subprocess.Popen(
        [CHROMEDRIVER, f"--port={port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:

        def ready():
            with contextlib.suppress(OSError):
                return _call("GET", f"{base_url}/status")["ready"]

        assert wait_until(ready, 20.0), "chromedriver did not start"
        browser = WebDriver.start(base_url, tmp_path / "chromium-profile")
        try:
            yield browser
        finally:
            browser.quit()
    finally:
        driver.terminate()
        driver.wait(timeout=10)


class _Stopper(FrameList):
    """Keeps nothing; ends the run when told to."""

    name = "stopper"

    def __init__(self) -> None:
        super().__init__()
        self.stopped_by_user = False

    def write(self, prediction, image) -> None:
        pass


@pytest.fixture
def live_web_view(tmp_path, tiny_spec, monkeypatch):
    """A static-disc clip streamed over UDP from a second process -> run(--view web)."""
    udp_port, web_port = free_port(socket.SOCK_DGRAM), free_port()
    config = StreamConfig(
        source=SourceSettings(
            uri=f"udp://127.0.0.1:{udp_port}", open_timeout_s=10.0, stall_timeout_s=5.0
        ),
        model=ModelSettings(device="cpu"),
        output=OutputSettings(
            view="web",
            bind=f"127.0.0.1:{web_port}",
            recordings=tmp_path / "recordings",
            jpeg_quality=95,
        ),
    )
    stopper = _Stopper()
    outcome: dict[str, object] = {}

    def serve() -> None:
        try:
            outcome["stats"] = run(
                config, segmenter=RedDiscSegmenter(tiny_spec), sinks=[stopper]
            )
        except BaseException as error:
            outcome["error"] = error

    with sender(f"udp://127.0.0.1:{udp_port}", 60.0, static=True):
        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{web_port}"
        try:
            assert wait_until(
                lambda: "error" in outcome or _frames_out(url) >= 3, 20.0
            ), outcome.get("error", "no frame reached the browser view")
            yield url, tmp_path / "recordings"
        finally:
            stopper.stopped_by_user = True
            thread.join(timeout=20)
    assert "error" not in outcome, outcome["error"]
    assert outcome["stats"].stopped == "closed by user"


def _frames_out(url: str) -> int:
    with contextlib.suppress(OSError):
        return get_json(f"{url}/status").get("frames_out", 0)
    return 0


def _disc_patch(image: np.ndarray) -> np.ndarray:
    """Mean RGB of a patch at the disc's centre, wherever the image is scaled."""
    scale_y, scale_x = image.shape[0] / SIZE_HW[0], image.shape[1] / SIZE_HW[1]
    y, x = round(DISC_CENTER_YX[0] * scale_y), round(DISC_CENTER_YX[1] * scale_x)
    half = max(round(DISC_RADIUS * 0.3 * scale_y), 1)
    return image[y - half : y + half, x - half : x + half].reshape(-1, 3).mean(axis=0)


def test_chromium_shows_the_live_stream_with_overlay_status_and_records_a_clip(
    live_web_view, tmp_path
):
    url, recordings = live_web_view
    with chromium(tmp_path) as browser:
        browser.open(url + "/")
        # The status panel is filled by the page's own polling of /status.
        assert wait_until(lambda: browser.text("#signal") == "ok", 10.0), (
            "the page's status panel never showed the signal"
        )
        assert wait_until(lambda: browser.text("#polyp") == "POLYP", 5.0)
        assert wait_until(lambda: browser.text("#fps") not in ("", "-"), 5.0)
        assert wait_until(
            lambda: (
                browser.script(
                    "const v = document.querySelector('#video');"
                    "return v.complete && v.naturalWidth"
                )
                == SIZE_HW[1]
            ),
            10.0,
        ), "the video element never showed a frame"
        picture = browser.screenshot("#video")
        # The overlay's fill over the disc, as Chromium renders it.
        colour = _disc_patch(picture)
        assert np.abs(colour - FILL_OVER_DISC_RGB).max() < 30, (
            f"expected the overlay colour {FILL_OVER_DISC_RGB} inside the polyp, "
            f"got {colour.round()}"
        )
        corner = picture[-8:, -8:].reshape(-1, 3).mean(axis=0)
        assert corner[1] < 60, f"no overlay outside the polyp, got {corner.round()}"

        browser.click("#record")
        assert wait_until(lambda: browser.text("#record") == "Stop recording", 5.0)
        assert wait_until(
            lambda: get_json(f"{url}/status")["recording_frames"] >= 15, 10.0
        ), "the recording did not start"
        browser.click("#record")
        assert wait_until(lambda: get_json(f"{url}/status")["clips_saved"] == 1, 10.0)
        assert wait_until(lambda: browser.text("#record") == "Start recording", 5.0)

    (clip,) = recordings.glob("rec_*.mp4")
    images, times = decode_video(clip)
    assert len(images) >= 15
    assert np.all(np.diff(times) > 0)
    assert np.abs(_disc_patch(images[-1]) - FILL_OVER_DISC_RGB).max() < 30
    lines = clip.with_suffix(".jsonl").read_text().splitlines()
    assert len(lines) == len(images)
    assert all(json.loads(line)["polyp_present"] for line in lines)
