"""Move work onto a thread behind a bounded queue, with an explicit policy when full.

This is the pipeline's one concurrency mechanism: a bounded *handover* queue,
a stop event, a join on close, and errors re-raised on the other side. It is
used in two directions:

* :func:`in_background` runs an iterator (a frame source) on a worker thread
  and lets the caller iterate its items: decoding overlaps inference.
* :func:`to_background` runs a consumer function (a video encoder) on a
  worker thread and lets the caller ``put`` items into it: encoding overlaps
  inference.

Policies (:class:`WhenFull`), stated once and chosen by source kind:

* ``BLOCK``: lossless; the producer waits for room (video files, recording).
* ``DROP_OLDEST``: real time; the newest item wins and the stale one is
  discarded (live cameras and streams). Items are never invented or repeated.

Example:
    >>> frames = in_background(iter(range(5)), maxsize=2, when_full=WhenFull.BLOCK)
    >>> list(frames)
    [0, 1, 2, 3, 4]
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

# How long a join waits for a worker before giving up on it (it is a daemon
# thread, so a producer stuck in a driver call cannot keep the process alive).
JOIN_TIMEOUT_S = 5.0
# After a stall the producer is known to be stuck; do not wait long for it.
STALLED_JOIN_TIMEOUT_S = 0.2
# How often a producer waiting on a full BLOCK queue, or a consumer waiting on
# an empty queue, checks the stop event (a put or get wakes the waiter at once).
_STOP_CHECK_S = 0.05


class WhenFull(Enum):
    """What a producer does when the handover queue is full."""

    BLOCK = "block"
    DROP_OLDEST = "drop_oldest"


class Stalled(TimeoutError):
    """No item arrived from the background producer within the timeout."""


@dataclass(frozen=True, slots=True)
class _Failed:
    error: BaseException


_END = object()


class _Handover:
    """A bounded queue between two threads, with a stop event and a policy."""

    def __init__(
        self, maxsize: int, when_full: WhenFull, stop: threading.Event | None = None
    ) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize: expected >= 1, got {maxsize}")
        self.items: queue.Queue[object] = queue.Queue(maxsize=maxsize)
        self.when_full = when_full
        self.stop = stop if stop is not None else threading.Event()
        self.dropped = 0

    def offer(self, item: object, *, always: bool = False) -> bool:
        """Put ``item``; False if stopped first. ``always``: never drop it."""
        drop_oldest = self.when_full is WhenFull.DROP_OLDEST and not always
        while not self.stop.is_set():
            try:
                if drop_oldest:
                    self.items.put_nowait(item)
                else:
                    self.items.put(item, timeout=_STOP_CHECK_S)
                return True
            except queue.Full:
                if drop_oldest:
                    with contextlib.suppress(queue.Empty):
                        self.items.get_nowait()
                        self.dropped += 1
        return False

    def drain(self) -> None:
        """Empty the queue so that a producer blocked on it notices the stop event."""
        with contextlib.suppress(queue.Empty):
            while True:
                self.items.get_nowait()


class Background(Iterator[T]):
    """The consumer's end of :func:`in_background`: iterate it, then close it.

    ``close()`` sets the stop event, closes the producer's iterable (on its
    own thread) and joins the worker, whether or not anything was taken.
    """

    def __init__(self, items: Generator[T, None, None], finish: Callable[[], None]):
        self._items = items
        self._finish = finish

    def __next__(self) -> T:
        return next(self._items)

    def close(self) -> None:
        """Stop the worker and wait for it (up to the join timeout)."""
        try:
            self._items.close()
        except ValueError:
            # Being iterated on another thread (a later stage's worker that
            # did not stop in time): stopping the producer ends that too.
            pass
        self._finish()


def in_background(
    items: Iterable[T],
    *,
    maxsize: int,
    when_full: WhenFull,
    timeout_s: float | None = None,
    first_timeout_s: float | None = None,
    idle_s: float | None = None,
    idle_item: object = None,
    name: str = "streamseg-producer",
    stop: threading.Event | None = None,
    join_timeout_s: float = JOIN_TIMEOUT_S,
) -> Background[T]:
    """Iterate ``items`` on a worker thread and hand them over through a bounded queue.

    The worker starts at once: a live source starts grabbing while the
    caller is still getting ready (loading a model), its newest frame wins
    meanwhile and the frames it replaced show up as index gaps. A producer
    exception is re-raised here, in the consumer. Closing the returned
    iterator (or leaving a ``with contextlib.closing(...)`` block) sets the
    stop event, closes ``items`` (on the worker thread that iterated it) and
    joins the worker.

    Args:
        items: Any iterable; a generator is closed on the worker thread, so
            it can release a capture device in its ``finally``.
        maxsize: Queue capacity (1 for live sources: the newest frame only).
        when_full: BLOCK (lossless) or DROP_OLDEST (newest item wins).
        timeout_s: Raise :class:`Stalled` when no item arrives for this long
            (``None``: wait forever).
        first_timeout_s: Timeout for the first item (opening a camera or a
            network stream takes longer); defaults to ``timeout_s``.
        idle_s: While no item arrives, yield ``idle_item`` every ``idle_s``
            seconds instead of waiting silently (a live view can show "NO
            SIGNAL"); the stall timeout still counts from the last real item.
        idle_item: The marker yielded when idle (never an item of ``items``).
        name: Worker thread name (shows in debuggers and thread dumps).
        stop: The stop event to set on close (``None``: a new one). Pass one
            that the producer also watches, so that it can stop while it
            waits for something other than the queue (a reconnection).
        join_timeout_s: How long close waits for the worker. A producer
            blocked in a call only its own timeout ends (opening a network
            stream) is left to end by itself: it is a daemon thread and stops
            at its next look at the stop event.

    Yields:
        The items, in order (minus the ones DROP_OLDEST discarded).

    Raises:
        Stalled: No item within the timeout.
        BaseException: Whatever the producer raised.
    """
    handover = _Handover(maxsize, when_full, stop)

    def produce() -> None:
        iterator = iter(items)
        try:
            for item in iterator:
                if not handover.offer(item):
                    return
            handover.offer(_END, always=True)
        except BaseException as error:  # handed to the consumer, never swallowed
            handover.offer(_Failed(error), always=True)
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:
                    log.exception("closing the background producer %s failed", name)

    worker = threading.Thread(target=produce, name=name, daemon=True)
    worker.start()
    joined = [False]

    def finish(timeout_s: float = join_timeout_s) -> None:
        if joined[0]:
            return
        joined[0] = True
        handover.stop.set()
        handover.drain()
        # A short join asked for by the caller leaves the worker behind on
        # purpose; only an unexpected hang is worth a warning.
        _join(worker, timeout_s, expected=timeout_s == join_timeout_s < JOIN_TIMEOUT_S)

    return Background(
        _consume(handover, timeout_s, first_timeout_s, idle_s, idle_item, name, finish),
        finish,
    )


def _consume(
    handover: _Handover,
    timeout_s: float | None,
    first_timeout_s: float | None,
    idle_s: float | None,
    idle_item: object,
    name: str,
    finish: Callable[..., None],
) -> Generator[T, None, None]:
    """The consumer side of :func:`in_background` (runs on the caller's thread)."""
    timeout = first_timeout_s if first_timeout_s is not None else timeout_s
    deadline_s = None if timeout is None else time.monotonic() + timeout
    join_timeout_s: float | None = None
    try:
        while True:
            wait_s = None if deadline_s is None else deadline_s - time.monotonic()
            idle = idle_s is not None and (wait_s is None or idle_s < wait_s)
            if idle:
                wait_s = idle_s
            elif wait_s is not None:
                wait_s = max(wait_s, 0.0)
            try:
                item = _take(handover, wait_s)
            except queue.Empty:
                if idle:
                    yield idle_item  # type: ignore[misc]
                    continue
                # The producer is stuck (in a driver call?): do not wait for it.
                join_timeout_s = STALLED_JOIN_TIMEOUT_S
                raise Stalled(f"no item from {name} for {timeout:g} s") from None
            timeout = timeout_s
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item  # type: ignore[misc]
            # As before idle markers existed: each wait counts from when the
            # consumer asks again, so a slow consumer never looks like a stall.
            deadline_s = None if timeout is None else time.monotonic() + timeout
    finally:
        if join_timeout_s is None:
            finish()
        else:
            finish(join_timeout_s)


def _take(handover: _Handover, wait_s: float | None) -> object:
    """The next item, waiting up to ``wait_s`` (``None``: no limit).

    Once the stop event is set (the producer stops offering) whatever is
    still queued comes out, then the end: a consumer iterating on another
    stage's thread ends with its producer instead of waiting on it.

    Raises:
        queue.Empty: Nothing within ``wait_s``.
    """
    deadline_s = None if wait_s is None else time.monotonic() + wait_s
    while True:
        if handover.stop.is_set():
            try:
                return handover.items.get_nowait()
            except queue.Empty:
                return _END
        step_s = _STOP_CHECK_S
        if deadline_s is not None:
            step_s = min(step_s, deadline_s - time.monotonic())
            if step_s <= 0:
                raise queue.Empty
        with contextlib.suppress(queue.Empty):
            return handover.items.get(timeout=step_s)


class Inbox(Generic[T]):
    """The caller's end of :func:`to_background`: put items, then close.

    ``put`` blocks while the queue is full (BLOCK policy: nothing is lost).
    An exception raised by the worker is re-raised by the next ``put`` or by
    ``close``. Use it as a context manager, so the worker is always joined.
    """

    def __init__(
        self, consume: Callable[[Iterator[T]], None], *, maxsize: int, name: str
    ) -> None:
        self._handover = _Handover(maxsize, WhenFull.BLOCK)
        self._failure: BaseException | None = None
        self._closed = False
        self._consume = consume
        self._worker = threading.Thread(target=self._work, name=name, daemon=True)
        self._worker.start()

    def put(self, item: T) -> None:
        """Hand ``item`` to the worker, waiting for room; re-raise a worker error."""
        if self._closed:
            raise ValueError("put on a closed Inbox")
        self._raise_failure()
        if not self._handover.offer(item):
            self._raise_failure()  # the worker stopped because it failed
            raise ValueError("put on a stopped Inbox")

    def close(self) -> None:
        """Signal the end, wait for the worker to finish, re-raise its error."""
        if self._closed:
            return
        self._closed = True
        self._handover.offer(_END, always=True)
        self._worker.join()
        self._raise_failure()

    def abort(self) -> None:
        """Stop the worker as soon as possible, dropping queued items."""
        self._closed = True
        self._stop()
        _join(self._worker, JOIN_TIMEOUT_S)

    def __enter__(self) -> Inbox[T]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _items(self) -> Iterator[T]:
        # A blocking get: the worker sleeps until an item or the end marker arrives.
        while (item := self._handover.items.get()) is not _END:
            if self._handover.stop.is_set():
                return
            yield item  # type: ignore[misc]

    def _work(self) -> None:
        try:
            self._consume(self._items())
        except BaseException as error:  # re-raised by the caller's next put/close
            self._failure = error
            self._stop()

    def _stop(self) -> None:
        self._handover.stop.set()
        self._handover.drain()
        # Wake a worker blocked on get(); the queue is empty, so this never blocks.
        with contextlib.suppress(queue.Full):
            self._handover.items.put_nowait(_END)

    def _raise_failure(self) -> None:
        if self._failure is not None:
            error, self._failure = self._failure, None
            raise error


def to_background(
    consume: Callable[[Iterator[T]], None],
    *,
    maxsize: int,
    name: str = "streamseg-consumer",
) -> Inbox[T]:
    """Run ``consume(items)`` on a worker thread, fed by ``Inbox.put`` (BLOCK policy).

    ``consume`` receives an iterator that ends when the caller closes the
    inbox; whatever it does after its loop (flushing an encoder, closing a
    file) runs before ``close()`` returns.

    Args:
        consume: The work, e.g. an encoder loop over images.
        maxsize: Queue capacity: how far the caller may run ahead.
        name: Worker thread name.

    Example:
        >>> seen = []
        >>> with to_background(seen.extend, maxsize=2) as inbox:
        ...     for n in range(3):
        ...         inbox.put(n)
        >>> seen
        [0, 1, 2]
    """
    return Inbox(consume, maxsize=maxsize, name=name)


def _join(
    worker: threading.Thread, timeout_s: float, *, expected: bool = False
) -> None:
    if worker is threading.current_thread() or not worker.is_alive():
        return
    worker.join(timeout_s)
    if worker.is_alive() and expected:
        log.info(
            "background thread %s is still in a call that only its own timeout "
            "ends; it stops by itself after that",
            worker.name,
        )
    elif worker.is_alive():
        log.warning(
            "background thread %s did not stop within %g s (blocked in a driver "
            "call?); leaving it behind as a daemon thread",
            worker.name,
            timeout_s,
        )
