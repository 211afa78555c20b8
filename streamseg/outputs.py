"""The outputs a run asks for, created in one place above the sinks.

:func:`open_outputs` builds the window, the clip recorder, the browser view,
the recording, the event log, the polyp tracks log and the mask writer from
the ``output`` and ``clips`` sections. It sits above :mod:`streamseg.sinks`,
:mod:`streamseg.clips` and :mod:`streamseg.web`, so none of those needs to
import another in a circle (web uses clips, clips uses sinks, nothing uses
web).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from streamseg.clips import ClipSettings, open_recorder
from streamseg.events import StreamClock
from streamseg.sinks import (
    EventLog,
    MaskWriter,
    OutputSettings,
    Sink,
    Sinks,
    VideoRecorder,
)
from streamseg.window import Display


def open_outputs(
    settings: OutputSettings,
    *,
    nominal_fps: float | None = None,
    extra: Sequence[Sink] = (),
    clips: ClipSettings | None = None,
    status: Callable[[], Mapping[str, object]] | None = None,
    clock: StreamClock | None = None,
    run_info: Mapping[str, object] | None = None,
) -> Sinks:
    """Create the sinks ``settings`` (and ``clips``) ask for, plus ``extra`` ones.

    The window is checked first, so a missing GUI fails before files are created.

    Args:
        settings: The ``output`` section.
        nominal_fps: The source's declared frame rate (recording metadata).
        extra: Sinks to add (tests pass a :class:`FrameList`).
        clips: The ``clips`` section: event clips when ``clips.folder`` is set.
        status: Run figures for the browser view's status panel (fps,
            latency, drops, alerts), called on the pipeline thread once per
            frame.
        clock: Stream and wall-clock times for the JSON lines (event log,
            clips, snapshots) and the clips' messages.
        run_info: What ``tracks.json`` records about the run (``source``,
            ``model``, ``settings``; :class:`~streamseg.report.TrackLog`).

    Raises:
        OutputError: An output cannot be created.
    """
    sinks: list[Sink] = []
    try:
        if settings.view == "window":
            sinks.append(Display())
        recorder = None
        if settings.view == "web" or (clips is not None and clips.folder is not None):
            recorder = open_recorder(
                settings, clips, nominal_fps=nominal_fps, clock=clock
            )
            sinks.append(recorder)
        if settings.view == "web":
            from streamseg.web import WebView  # http.server only when asked for

            sinks.append(
                WebView(
                    settings.bind,
                    jpeg=recorder.jpeg,
                    recorder=recorder,
                    status=status,
                    clock=clock,
                )
            )
        if settings.video is not None:
            sinks.append(
                VideoRecorder(
                    settings.video,
                    nominal_fps=nominal_fps,
                    crf=settings.video_crf,
                    preset=settings.video_preset,
                    queue_size=settings.video_queue,
                )
            )
        if settings.events is not None:
            sinks.append(EventLog(settings.events, clock))
        if settings.tracks is not None:
            from streamseg.report import TrackLog  # the report's HTML only when asked

            sinks.append(TrackLog(settings.tracks, dict(run_info or {})))
        if settings.masks is not None:
            sinks.append(MaskWriter(settings.masks))
    except BaseException:
        Sinks(sinks).close()
        raise
    sinks.extend(extra)
    return Sinks(sinks)
