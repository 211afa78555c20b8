"""in_background / to_background: queue policies, error hand-over, clean shutdown."""

from __future__ import annotations

import contextlib
import itertools
import threading
import time

import pytest

from streamseg.background import Stalled, WhenFull, in_background, to_background


def _alive(name: str) -> bool:
    return any(
        thread.name == name and thread.is_alive() for thread in threading.enumerate()
    )


def _wait_until_gone(name: str, timeout_s: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while _alive(name) and time.monotonic() < deadline:
        time.sleep(0.01)
    return not _alive(name)


def test_block_loses_nothing_with_a_slow_consumer():
    received = []
    for item in in_background(iter(range(200)), maxsize=2, when_full=WhenFull.BLOCK):
        if item % 50 == 0:
            time.sleep(0.01)  # the producer must wait, not drop
        received.append(item)
    assert received == list(range(200))


def test_drop_oldest_serves_the_newest_item_and_the_last_one():
    def fast_producer():
        for index in range(300):
            time.sleep(0.0005)
            yield index

    received = []
    for item in in_background(
        fast_producer(), maxsize=1, when_full=WhenFull.DROP_OLDEST
    ):
        received.append(item)
        time.sleep(0.01)  # a consumer ~20x slower than the producer
    assert all(b > a for a, b in itertools.pairwise(received)), (
        "indices must strictly increase"
    )
    assert received[-1] == 299, "the last item must be delivered"
    assert len(received) < 150, "a slow consumer must see drops"


def test_producer_exception_is_reraised_in_the_consumer():
    def failing():
        yield 1
        raise OSError("camera unplugged")

    frames = in_background(failing(), maxsize=2, when_full=WhenFull.BLOCK)
    assert next(frames) == 1
    with pytest.raises(OSError, match="camera unplugged"):
        next(frames)


def test_closing_stops_and_joins_the_worker_and_closes_the_source():
    closed = threading.Event()

    def endless():
        try:
            index = 0
            while True:
                yield index
                index += 1
        finally:
            closed.set()

    name = "test-endless-producer"
    with contextlib.closing(
        in_background(endless(), maxsize=4, when_full=WhenFull.BLOCK, name=name)
    ) as items:
        for item in items:
            if item == 10:
                break
        assert _alive(name)
    assert not _alive(name), "close must join the worker"
    assert closed.wait(1.0), "the source generator must be closed (on its own thread)"


def test_a_silent_producer_stalls_after_the_timeout():
    stop = threading.Event()

    def silent():
        yield 0
        stop.wait(5.0)  # a device that stops delivering
        yield 1

    items = in_background(
        silent(), maxsize=1, when_full=WhenFull.DROP_OLDEST, timeout_s=0.2
    )
    assert next(items) == 0
    start = time.monotonic()
    with pytest.raises(Stalled, match=r"0\.2 s"):
        next(items)
    assert 0.15 < time.monotonic() - start < 2.0
    stop.set()


def test_to_background_consumes_everything_in_order_before_close_returns():
    seen = []

    def consume(items):
        for item in items:
            time.sleep(0.001)
            seen.append(item)
        seen.append("flushed")

    with to_background(consume, maxsize=2, name="test-consumer") as inbox:
        for item in range(50):
            inbox.put(item)
    assert seen == [*range(50), "flushed"]
    assert _wait_until_gone("test-consumer")


def test_to_background_reraises_a_consumer_error_on_put_or_close():
    def consume(items):
        for item in items:
            if item == 3:
                raise ValueError("encoder failed at 3")

    inbox = to_background(consume, maxsize=1, name="test-failing-consumer")
    with pytest.raises(ValueError, match="encoder failed at 3"):
        for item in range(1000):
            inbox.put(item)
        inbox.close()
    inbox.close()  # already reported: closing again is quiet
    assert _wait_until_gone("test-failing-consumer")


@pytest.mark.parametrize("maxsize", [0, -1])
def test_queue_must_be_bounded(maxsize):
    with pytest.raises(ValueError, match="maxsize"):
        next(in_background(iter([1]), maxsize=maxsize, when_full=WhenFull.BLOCK))


def test_a_stage_reading_another_stage_ends_when_the_first_is_stopped():
    """Inference reads the source on its own thread: setting the source's stop
    event ends that read, so the second stage closes at once, and closing the
    first afterwards is safe."""
    stop = threading.Event()
    release = threading.Event()

    def silent():
        yield 0
        release.wait(10.0)  # a camera that delivers nothing more
        yield 1

    source = in_background(  # a live source: a short join, as the app does
        silent(), maxsize=1, when_full=WhenFull.BLOCK, stop=stop, join_timeout_s=0.2
    )
    doubled = in_background(
        (2 * item for item in source), maxsize=1, when_full=WhenFull.BLOCK
    )
    try:
        assert next(doubled) == 0
        start = time.monotonic()
        stop.set()  # the source stops; the second stage's read of it ends
        assert list(doubled) == []
        doubled.close()
        assert time.monotonic() - start < 2.0
    finally:
        release.set()
        source.close()
