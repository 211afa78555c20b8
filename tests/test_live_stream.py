"""Live network sources: a clip streamed over UDP from a second process.

Checks the newest-frame policy (drops counted), NO SIGNAL when the sender
stops (and no stale overlay), reconnection when it comes back, and a clear
error when it does not. The building blocks (idle markers, the reconnect
loop) are also tested alone, with fake clocks.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import socket
import threading
import time

import cv2
import numpy as np
import pytest
import stream_sender
from live_helpers import RedDiscSegmenter, free_port, get, get_json, wait_until
from stream_media import moving_disc

from streamseg.app import StreamConfig, run
from streamseg.background import Stalled, WhenFull, in_background
from streamseg.frames import Frame
from streamseg.overlay import OverlayStyle
from streamseg.segmenter import ModelSettings
from streamseg.sinks import FrameList, OutputSettings
from streamseg.sources import SourceError, SourceSettings, reconnecting

STYLE = OverlayStyle()
CARD = ("no signal", None)


def _config(url: str, model_file, **source) -> StreamConfig:
    return StreamConfig(
        source=SourceSettings(uri=url, open_timeout_s=5.0, **source),
        model=ModelSettings(path=model_file, device="cpu", threads=1),
    )


class _Timeline(FrameList):
    """Records frames and NO SIGNAL cards in arrival order; stops when told."""

    name = "timeline"

    def __init__(self, delay_s: float = 0.0) -> None:
        super().__init__()
        self.delay_s = delay_s
        self.events: list[tuple[str, int | None]] = []
        self.times: list[float] = []  # time.time() of each event
        self.cards: list[np.ndarray] = []
        self.stopped_by_user = False

    def write(self, prediction, image) -> None:
        super().write(prediction, image)
        self.events.append(("frame", prediction.frame.index))
        self.times.append(time.time())
        if self.delay_s:
            time.sleep(self.delay_s)  # a slow consumer

    def show_no_signal(self, image) -> None:
        self.cards.append(image)
        self.events.append(CARD)
        self.times.append(time.time())


def _trailing_cards(sink: _Timeline, since: float = 0.0) -> int:
    """NO SIGNAL cards shown since the last frame (and since ``since``, time.time())."""
    count = 0
    for event, when in zip(sink.events[::-1], sink.times[::-1], strict=True):
        if event != CARD or when <= since:
            break
        count += 1
    return count


def _udp_url() -> str:
    return f"udp://127.0.0.1:{free_port(socket.SOCK_DGRAM)}"


@contextlib.contextmanager
def _sending(url: str, seconds: float, *, static: bool = False):
    """tests/stream_sender.py on a thread of this process: it starts sending at
    once (a second Python process can take seconds to start on a busy machine)."""
    thread = threading.Thread(
        target=stream_sender.send,
        args=(f"{url}?pkt_size=1316", seconds, 25.0, static, stream_sender.SIZE_HW),
        daemon=True,
    )
    thread.start()
    try:
        yield thread
    finally:
        thread.join(timeout=seconds + 30.0)


def _run_in_thread(config, sink):
    outcome: dict[str, object] = {}

    def target():
        try:
            outcome["stats"] = run(config, sinks=[sink])
        except BaseException as error:
            outcome["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, outcome


def _overlay_pixels(image: np.ndarray) -> int:
    """Pixels in the overlay's contour green (the fill is a blend, the edge is pure)."""
    return int(
        np.all(np.abs(image.astype(int) - STYLE.contour_rgb) < 40, axis=-1).sum()
    )


def test_a_udp_stream_keeps_the_newest_frame_and_counts_the_drops(model_file):
    url = _udp_url()
    sink = _Timeline(delay_s=0.08)  # ~12 fps against a 25 fps sender
    config = _config(url, model_file, max_frames=15)
    with _sending(url, 5.0):
        stats = run(config, sinks=[sink])
    indices = [p.frame.index for p in sink.predictions]
    assert stats.live and stats.stopped == "max frames" and len(indices) == 15
    assert all(b > a for a, b in itertools.pairwise(indices))
    assert stats.frames_dropped > 0
    assert stats.frames_dropped == indices[-1] - indices[0] + 1 - len(indices)
    kinds = [kind for kind, _ in sink.events]
    assert "no signal" not in kinds[kinds.index("frame") :], (
        "frames kept coming: no NO SIGNAL card after the first frame"
    )


def test_no_signal_without_a_stale_overlay_then_reconnect_when_the_sender_returns(
    model_file, caplog
):
    caplog.set_level(logging.WARNING, logger="streamseg.sources")
    url = _udp_url()
    web_port = free_port()
    config = _config(
        url,
        model_file,
        stall_timeout_s=0.8,
        no_signal_s=0.4,
        reconnect_timeout_s=10.0,
        reconnect_backoff_s=0.2,
    )
    config = StreamConfig(
        source=config.source,
        model=config.model,
        output=OutputSettings(view="web", bind=f"127.0.0.1:{web_port}"),
    )
    web = f"http://127.0.0.1:{web_port}"
    sink = _Timeline()
    thread, outcome = _run_in_thread(config, sink)
    try:
        with _sending(url, 3.0):
            assert wait_until(lambda: len(sink.predictions) >= 5, 10.0), outcome
        # The sender is gone: the live view shows NO SIGNAL, not the last frame.
        # (The MPEG-TS demuxer hands over the last frame or two only when the
        # read times out: wait for that, then for cards after it.)
        assert wait_until(lambda: "reconnecting" in caplog.text, 5.0), outcome
        (failure,) = [r for r in caplog.records if "reconnecting" in r.getMessage()]
        assert wait_until(lambda: _trailing_cards(sink, failure.created) >= 2, 5.0)
        assert get_json(web + "/status")["signal"] is False
        _, body = get(web + "/frame.jpg")
        shown = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
        assert _overlay_pixels(shown[..., ::-1]) == 0
        resumed_at = len(sink.events)
        last_index = sink.predictions[-1].frame.index
        with _sending(url, 2.0):
            assert wait_until(
                lambda: sink.predictions[-1].frame.index > last_index + 5, 15.0
            ), outcome
        assert get_json(web + "/status")["signal"] is True
    finally:
        sink.stopped_by_user = True
        thread.join(timeout=15.0)
    assert "error" not in outcome, outcome.get("error")
    assert outcome["stats"].stopped == "closed by user"

    indices = [p.frame.index for p in sink.predictions]
    assert all(b > a for a, b in itertools.pairwise(indices)), "indices continue"
    after = sink.events[resumed_at:]
    assert after[0] == CARD, "NO SIGNAL until the sender is back"
    assert all(index > last_index for kind, index in after if kind == "frame"), (
        "only new frames after the outage, never a stale one again"
    )
    last_frame = sink.images[-1]
    before_first_frame = sink.events.index(("frame", indices[0]))  # while connecting
    for number, card in enumerate(sink.cards):
        if number >= before_first_frame:
            assert card.shape == last_frame.shape  # the size of the last frame
        assert _overlay_pixels(card) == 0, "no stale mask on the NO SIGNAL card"
        assert (card == STYLE.alert_rgb).all(axis=-1).any(), "the NO SIGNAL band"


def test_reconnection_gives_up_after_reconnect_timeout_s_with_a_clear_error(
    model_file,
):
    url = _udp_url()
    config = _config(
        url,
        model_file,
        stall_timeout_s=0.4,
        no_signal_s=0.2,
        reconnect_timeout_s=1.0,
        reconnect_backoff_s=0.2,
    )
    sink = _Timeline()
    start = time.monotonic()
    with _sending(url, 1.5), pytest.raises(SourceError) as error:
        run(config, sinks=[sink])
    assert "could not reconnect within 1 s" in str(error.value)
    assert "raise source.reconnect_timeout_s" in str(error.value)
    assert sink.predictions and sink.cards
    assert time.monotonic() - start < 12.0


# --- the parts, alone ----------------------------------------------------------


class _FakeClock:
    def __init__(self) -> None:
        self.now_s = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now_s

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 3))
        self.now_s += seconds


def _connection(frames: int, fails: bool = True):
    """A source that delivers ``frames`` frames and then fails (or ends)."""

    def open_frames(open_timeout_s: float):
        yield from moving_disc(frames)
        if fails:
            raise SourceError("lost")

    return open_frames


def test_reconnecting_continues_the_indices_and_backs_off_between_attempts():
    clock = _FakeClock()
    attempts = iter([_connection(3), *[_connection(0)] * 3, _connection(2, False)])
    timeouts = []

    def open_frames(open_timeout_s: float):
        timeouts.append(open_timeout_s)
        return next(attempts)(open_timeout_s)

    frames = list(
        reconnecting(
            open_frames,
            name="cam",
            open_timeout_s=2.0,
            reconnect_timeout_s=30.0,
            backoff_s=0.5,
            clock=clock,
            sleep=clock.sleep,
        )
    )
    assert [f.index for f in frames] == [0, 1, 2, 3, 4]
    assert clock.sleeps == [0.5, 1.0, 2.0, 4.0]
    assert timeouts == [2.0] * 5


def test_reconnecting_fails_at_once_when_the_first_connection_fails():
    clock = _FakeClock()
    with pytest.raises(SourceError, match="lost"):
        next(
            reconnecting(
                _connection(0),
                name="cam",
                open_timeout_s=2.0,
                reconnect_timeout_s=30.0,
                backoff_s=0.5,
                clock=clock,
                sleep=clock.sleep,
            )
        )
    assert clock.sleeps == []


def test_reconnecting_gives_up_after_the_timeout_and_shortens_the_last_attempt():
    clock = _FakeClock()
    timeouts = []

    def open_frames(open_timeout_s: float):
        timeouts.append(open_timeout_s)
        first = len(timeouts) == 1
        return _connection(2 if first else 0)(open_timeout_s)

    frames = reconnecting(
        open_frames,
        name="cam",
        open_timeout_s=5.0,
        reconnect_timeout_s=3.0,
        backoff_s=1.0,
        clock=clock,
        sleep=clock.sleep,
    )
    assert [next(frames).index, next(frames).index] == [0, 1]
    with pytest.raises(SourceError, match=r"cam: .*could not reconnect within 3 s"):
        next(frames)
    assert clock.sleeps == [1.0, 2.0]
    assert timeouts == [5.0, 2.0, 0.1]  # never past the deadline (0.1 s at least)


@pytest.mark.parametrize(
    ("kind", "reconnect", "expected"),
    [
        ("stream", None, True),
        ("device", None, False),
        ("device", True, True),
        ("stream", False, False),
        ("file", True, False),
    ],
)
def test_which_sources_reconnect(kind, reconnect, expected):
    assert SourceSettings(reconnect=reconnect).reconnects(kind) is expected


def test_in_background_yields_idle_markers_while_silent_and_still_stalls():
    release = threading.Event()

    def silent_after_one():
        yield Frame(0, 0.0, np.zeros((2, 2, 3), np.uint8))
        release.wait(5.0)

    marker = object()
    items = in_background(
        silent_after_one(),
        maxsize=1,
        when_full=WhenFull.DROP_OLDEST,
        timeout_s=0.5,
        idle_s=0.1,
        idle_item=marker,
    )
    try:
        assert next(items).index == 0
        start = time.monotonic()
        seen = []
        with pytest.raises(Stalled):
            for item in items:
                seen.append((item, time.monotonic() - start))
        assert [item for item, _ in seen] == [marker] * 4
        assert [round(t, 1) for _, t in seen] == pytest.approx(
            [0.1, 0.2, 0.3, 0.4], abs=0.06
        )
        assert 0.45 < time.monotonic() - start < 1.0
    finally:
        release.set()
        items.close()


# --- opening early, stopping fast ------------------------------------------------


def _run_timed(config, sink, segmenter=None):
    """Run in a thread; ``outcome["done_s"]`` is when run() returned (monotonic)."""
    outcome: dict[str, object] = {}

    def target():
        try:
            outcome["stats"] = run(config, segmenter=segmenter, sinks=[sink])
        except BaseException as error:
            outcome["error"] = error
        outcome["done_s"] = time.monotonic()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, outcome


@pytest.mark.slow
def test_a_live_source_opens_before_the_model_loads_and_counts_warm_up_drops(
    tiny_spec, monkeypatch, caplog
):
    caplog.set_level(logging.INFO, logger="streamseg")
    loaded = threading.Event()

    def slow_load(cls, settings, device=None, **_):  # a model that takes 2 s to load
        time.sleep(2.0)
        loaded.set()
        return RedDiscSegmenter(tiny_spec)

    monkeypatch.setattr(
        "streamseg.segmenter.Segmenter.from_settings", classmethod(slow_load)
    )
    url = _udp_url()
    config = StreamConfig(
        source=SourceSettings(
            uri=url, open_timeout_s=10.0, stall_timeout_s=3.0, no_signal_s=0.3
        ),
        # The one (stand-in) model loads; no live model choice to time it.
        model=ModelSettings(device="cpu", live_fallback=False),
    )
    sink = _Timeline()
    thread, outcome = _run_timed(config, sink)
    try:
        time.sleep(0.5)  # the run has started; the model is loading
        assert not loaded.is_set()
        with _sending(url, 3.0, static=True):  # 75 frames
            assert wait_until(lambda: sink.predictions, 10.0), outcome
    finally:
        sink.stopped_by_user = True
        thread.join(timeout=15.0)
    assert "error" not in outcome, outcome.get("error")
    stats = outcome["stats"]
    first = sink.predictions[0].frame.index
    # Frames sent while the model loaded were received and dropped (the newest
    # frame wins), not lost before the source opened: they count as drops.
    assert first >= 20, first
    assert stats.frames_dropped >= first
    assert stats.frames_in + stats.frames_dropped >= 60  # of the 75 sent
    assert f"{first} frames arrived while the model was loading" in caplog.text


class _Interrupting(_Timeline):
    """Ctrl-C arrives (in the main loop) at the next NO SIGNAL card once armed."""

    def __init__(self) -> None:
        super().__init__()
        self.armed_s: float | None = None

    def show_no_signal(self, image) -> None:
        super().show_no_signal(image)
        if self.armed_s is not None:
            raise KeyboardInterrupt


@pytest.mark.slow
@pytest.mark.parametrize("backoff_s", [2.0, 0.1], ids=["backing-off", "reopening"])
def test_stopping_while_a_live_source_reconnects_takes_under_a_second(
    model_file, tiny_spec, caplog, backoff_s
):
    caplog.set_level(logging.WARNING, logger="streamseg")
    url = _udp_url()
    config = _config(
        url,
        model_file,
        stall_timeout_s=0.5,
        no_signal_s=0.1,
        reconnect_timeout_s=30.0,
        reconnect_backoff_s=backoff_s,  # 2.0: asleep between attempts; 0.1:
    )  # mostly inside an attempt to open the stream (open_timeout_s 5 s)
    sink = _Interrupting()
    thread, outcome = _run_timed(config, sink, RedDiscSegmenter(tiny_spec))
    try:
        with _sending(url, 2.0):
            assert wait_until(lambda: sink.predictions, 10.0), outcome
        assert wait_until(lambda: "reconnecting" in caplog.text, 5.0), outcome
        time.sleep(0.5)
        sink.armed_s = time.monotonic()
        thread.join(timeout=15.0)
    finally:
        sink.stopped_by_user = True
    assert "error" not in outcome, outcome.get("error")
    assert outcome["stats"].stopped == "interrupted"
    assert outcome["done_s"] - sink.armed_s < 1.0
    assert "did not stop" not in caplog.text
