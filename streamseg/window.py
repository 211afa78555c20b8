"""The OpenCV window view (``--view window``), for OpenCV builds with a GUI.

The project's own OpenCV wheel is headless (one OpenCV wheel per environment);
:func:`check_display` says so before the model loads, and the browser view
(:mod:`streamseg.web`) is the portable live view.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys

import numpy as np

from streamseg.findings import Findings
from streamseg.sinks import OutputError


def gui_backend() -> str | None:
    """The GUI toolkit the installed OpenCV was built with (e.g. "GTK3"), or None."""
    import cv2

    match = re.search(r"^\s*GUI:\s*(\S+)", cv2.getBuildInformation(), re.MULTILINE)
    if match is None or match.group(1).upper() == "NONE":
        return None
    return match.group(1)


def check_display() -> None:
    """Raise :class:`OutputError` unless an OpenCV window can be opened here."""
    import cv2

    if gui_backend() is None:
        raise OutputError(
            "--view window needs an OpenCV with GUI support, but the installed "
            f"OpenCV {cv2.__version__} has none (opencv-python-headless); "
            "use --view none, or --view web for the browser view"
        )
    if sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ):
        raise OutputError(
            "--view window: no display here (DISPLAY is not set); use --view none, "
            "or --view web for the browser view"
        )


class Display:
    """Show annotated frames in an OpenCV window; ``q``, Esc or closing it stops.

    Raises:
        OutputError: The installed OpenCV has no GUI (``opencv-python-headless``)
            or there is no display to open a window on.
    """

    name = "display"
    wants_image = True

    def __init__(self, title: str = "streamseg") -> None:
        import cv2

        check_display()
        self.title = title
        self.stopped_by_user = False
        cv2.namedWindow(title, cv2.WINDOW_NORMAL)

    def write(self, findings: Findings, image: np.ndarray) -> None:
        import cv2

        cv2.imshow(self.title, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        key = cv2.waitKey(1) & 0xFF
        closed = cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1
        if key in (ord("q"), 27) or closed:
            self.stopped_by_user = True

    def show_no_signal(self, image: np.ndarray) -> None:
        """Show the NO SIGNAL card (the window stays responsive meanwhile)."""
        import cv2

        cv2.imshow(self.title, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        if (cv2.waitKey(1) & 0xFF) in (ord("q"), 27):
            self.stopped_by_user = True

    def close(self) -> None:
        import cv2

        with contextlib.suppress(cv2.error):
            cv2.destroyWindow(self.title)
