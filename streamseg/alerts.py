"""Alerts when a polyp first appears: a border flash in the video and a sound cue.

Off by default. :func:`should_alert` is the rule (a pure function the tests
exercise); :class:`Alerter` holds the state between frames. The border is
drawn into the annotated image (so recordings and every viewer show it); the
sound is a WebAudio beep in the browser view (``sound: browser``, the page
plays it) or the terminal bell (``sound: bell``).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from streamseg.events import StreamClock, say_when

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AlertSettings:
    """The ``alerts`` section of the stream config.

    Attributes:
        flash: Flash a border around the video when a polyp first appears.
        sound: ``none``, ``browser`` (a beep in the browser view; the viewer
            turns sound on once, as browsers require) or ``bell`` (the
            terminal bell of the console running streamseg).
        cooldown_s: After an alert, no new alert for this long, even if the
            polyp disappears and comes back (avoids an alarm storm when
            detection flickers).
        flash_s: How long the border stays on after an alert.
        border_px: Border width in pixels.
        border_rgb: Border colour (RGB, 0-255).
    """

    flash: bool = False
    sound: Literal["none", "browser", "bell"] = "none"
    cooldown_s: float = 5.0
    flash_s: float = 0.6
    border_px: int = 12
    border_rgb: tuple[int, int, int] = (255, 40, 40)

    def __post_init__(self) -> None:
        if self.cooldown_s < 0:
            raise ValueError(f"cooldown_s: expected >= 0, got {self.cooldown_s}")
        if self.flash_s <= 0:
            raise ValueError(f"flash_s: expected > 0, got {self.flash_s}")
        if self.border_px < 1:
            raise ValueError(f"border_px: expected >= 1, got {self.border_px}")
        if len(self.border_rgb) != 3 or not all(0 <= c <= 255 for c in self.border_rgb):
            raise ValueError(
                "border_rgb: expected [r, g, b] with values 0-255, "
                f"got {list(self.border_rgb)}"
            )

    @property
    def enabled(self) -> bool:
        """True if any alert is on."""
        return self.flash or self.sound != "none"


def should_alert(
    present: bool,
    was_present: bool,
    last_alert_s: float | None,
    now_s: float,
    cooldown_s: float,
) -> bool:
    """Whether a polyp *appearing* now raises an alert.

    Args:
        present: A polyp is in this frame (after smoothing).
        was_present: A polyp was in the previous frame.
        last_alert_s: Time of the last alert (``None``: never).
        now_s: This frame's time, on the same clock.
        cooldown_s: Minimum time between two alerts.

    Returns:
        True on an absent -> present transition at least ``cooldown_s`` after
        the last alert.

    Example:
        >>> should_alert(True, False, None, 0.0, 5.0)
        True
        >>> should_alert(True, False, 1.0, 3.0, 5.0)
        False
    """
    if not present or was_present:
        return False
    return last_alert_s is None or now_s - last_alert_s >= cooldown_s


def terminal_bell() -> None:
    """Ring the bell of the terminal streamseg runs in (nothing without a terminal).

    The bell goes straight to stderr's file descriptor: a progress display
    that redirects ``sys.stderr`` (rich, on file runs) would drop the control
    character, and its proxy does not even say it is a terminal.
    """
    try:
        descriptor = sys.stderr.fileno()
        if os.isatty(descriptor):
            os.write(descriptor, b"\a")
    except (AttributeError, OSError, ValueError):  # no terminal behind stderr
        return


class Alerter:
    """Decides, frame by frame, when to alert (state: previous frame, last alert).

    Args:
        settings: What to do and how often.
        ring: Called on each alert when ``settings.sound == "bell"``
            (``None``: :func:`terminal_bell`).
        clock: Gives the times of the alert messages (stream time, and the
            wall-clock time for live sources); ``None``: the raw timestamps.

    Attributes:
        count: Alerts so far (the browser view beeps when it increases).

    Example:
        >>> alerter = Alerter(AlertSettings(flash=True, cooldown_s=2.0))
        >>> [alerter.update(p, t) for p, t in [(False, 0), (True, 1), (False, 2),
        ...                                    (True, 2.5), (False, 3), (True, 3.5)]]
        [False, True, False, False, False, True]
        >>> alerter.flashing(3.7), alerter.flashing(4.2)
        (True, False)
    """

    def __init__(
        self,
        settings: AlertSettings,
        ring: Callable[[], None] | None = None,
        clock: StreamClock | None = None,
    ) -> None:
        self.settings = settings
        self.count = 0
        self._ring = ring
        self._clock = clock
        self._was_present = False
        self._last_alert_s: float | None = None

    def update(self, present: bool, timestamp_s: float) -> bool:
        """Take one frame's finding; True if it raises an alert."""
        alert = self.settings.enabled and should_alert(
            present,
            self._was_present,
            self._last_alert_s,
            timestamp_s,
            self.settings.cooldown_s,
        )
        self._was_present = present
        if alert:
            self.count += 1
            self._last_alert_s = timestamp_s
            when = say_when(timestamp_s, self._clock)
            log.info("alert %d: polyp appeared at %s", self.count, when)
            if self.settings.sound == "bell":
                (self._ring or terminal_bell)()
        return alert

    def flashing(self, timestamp_s: float) -> bool:
        """True while the border should be drawn on a frame at ``timestamp_s``."""
        return (
            self.settings.flash
            and self._last_alert_s is not None
            and 0 <= timestamp_s - self._last_alert_s < self.settings.flash_s
        )

    def signal_lost(self) -> None:
        """Forget the previous frame: a polyp seen after the gap is a new appearance."""
        self._was_present = False
