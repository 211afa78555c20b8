"""tracks.json from a run, and the HTML procedure report (also in headless Chromium)."""

from __future__ import annotations

import base64
import dataclasses
import json

import cv2
import numpy as np
import pytest
from live_helpers import RedDiscSegmenter
from stream_media import moving_disc, tiny_model_file, write_video

from streamseg.app import StreamConfig, run
from streamseg.report import ReportError, load_tracks, write_report
from streamseg.segmenter import ModelSettings
from streamseg.sinks import FrameList, OutputSettings
from streamseg.sources import SourceSettings
from streamseg.tracking import TrackingSettings


@pytest.fixture
def tracked_run(tmp_path, tiny_spec):
    """A 20-frame clip of one moving red disc, run with --events and --tracks."""
    clip = write_video(tmp_path / "clip.mp4", [f.pixels for f in moving_disc(20)])
    config = StreamConfig(
        source=SourceSettings(uri=str(clip)),
        model=ModelSettings(
            path=tiny_model_file(tiny_spec, tmp_path), device="cpu", precision="fp32"
        ),
        output=OutputSettings(
            events=tmp_path / "e.jsonl", tracks=tmp_path / "run" / "t.json"
        ),
        tracking=TrackingSettings(min_on_s=0.04),
    )
    frames = FrameList()
    run(config, segmenter=RedDiscSegmenter(tiny_spec), sinks=[frames])
    return tmp_path, frames


def test_a_run_writes_track_ids_and_tracks_json_with_a_thumbnail(tracked_run):
    folder, frames = tracked_run
    lines = [json.loads(line) for line in (folder / "e.jsonl").read_text().splitlines()]
    assert [line["track_ids"] for line in lines] == [[]] + [[1]] * 19
    assert frames.findings[-1].tracks.polyps_seen == 1
    document = load_tracks(folder / "run" / "t.json")
    (track,) = document["tracks"]
    assert track["track_id"] == 1
    assert track["first_seen_s"] == pytest.approx(0.04)
    assert track["last_seen_s"] == pytest.approx(0.76)
    assert track["on_screen_s"] == pytest.approx(0.76)
    assert track["detected_frames"] == 19
    assert track["detected_s"] == pytest.approx(0.76)
    assert 0.05 < track["max_area_fraction"] < 0.15
    thumb = folder / "run" / track["thumbnail"]
    picture = cv2.imdecode(
        np.frombuffer(thumb.read_bytes(), np.uint8), cv2.IMREAD_COLOR
    )
    assert picture is not None and picture[..., 2].mean() > 80  # the red disc
    assert document["model"]["sha256"] and len(document["model"]["sha256"]) == 64
    assert document["settings"]["tracking"]["min_on_s"] == 0.04


def test_tracks_need_tracking(tmp_path):
    from streamseg.config import ConfigError

    config = StreamConfig(
        source=SourceSettings(uri=str(tmp_path / "none.mp4")),
        output=OutputSettings(tracks=tmp_path / "t.json"),
        tracking=TrackingSettings(enabled=False),
    )
    with pytest.raises(ConfigError, match="tracking"):
        run(config)


def two_polyp_tracks(folder):
    """A hand-made tracks.json of two polyps with thumbnails."""
    thumbs = folder / "t_thumbs"
    thumbs.mkdir(parents=True)
    rows = []
    for track_id, colour in ((1, (40, 40, 220)), (2, (40, 200, 40))):
        image = np.full((90, 120, 3), colour, np.uint8)
        thumb = thumbs / f"polyp_{track_id:03d}.jpg"
        thumb.write_bytes(cv2.imencode(".jpg", image)[1].tobytes())
        rows.append(
            {
                "track_id": track_id,
                "first_seen_s": 1.0 * track_id,
                "last_seen_s": 3.0 * track_id,
                "on_screen_s": 2.5,
                "detected_frames": 50,
                "max_area_fraction": 0.2,
                "max_box_xywh": [10, 10, 100, 80],
                "best_timestamp_s": 2.0,
                "best_frame_index": 50,
                "thumbnail": f"t_thumbs/polyp_{track_id:03d}.jpg",
                "intervals_s": [[1.0 * track_id, 3.0 * track_id + 0.04]],
            }
        )
    document = {
        "format": "streamseg-tracks/1",
        "created": "2026-01-01T00:00:00+00:00",
        "frames": 200,
        "duration_s": 8.0,
        "source": "procedure.mp4",
        "model": {"path": "m.safetensors", "sha256": "ab" * 32},
        "settings": {"tracking": dataclasses.asdict(TrackingSettings())},
        "tracks": rows,
    }
    path = folder / "t.json"
    path.write_text(json.dumps(document))
    events = folder / "e.jsonl"
    events.write_text(
        "".join(
            json.dumps({"timestamp_s": i / 25, "polyp_present": 25 <= i < 150}) + "\n"
            for i in range(200)
        )
    )
    return path, events


def test_the_report_is_one_self_contained_file(tmp_path):
    tracks, events = two_polyp_tracks(tmp_path)
    page = write_report(tracks, tmp_path / "out" / "report.html", events_path=events)
    text = page.read_text()
    assert text.count('class="card"') == 2
    assert text.count("data:image/jpeg;base64,") == 2
    assert "ab" * 32 in text and "procedure.mp4" in text
    assert "http://" not in text and "https://" not in text and "<script" not in text
    src = text.split("data:image/jpeg;base64,")[1].split('"')[0]
    assert cv2.imdecode(np.frombuffer(base64.b64decode(src), np.uint8), 1) is not None


def test_brief_detections_get_a_line_not_a_card(tmp_path):
    tracks, _ = two_polyp_tracks(tmp_path)
    document = json.loads(tracks.read_text())
    blip = dict(document["tracks"][0], track_id=3, detected_s=0.04, thumbnail=None)
    document["tracks"].append(blip)
    tracks.write_text(json.dumps(document))
    text = write_report(tracks, tmp_path / "r.html").read_text()
    assert text.count('class="card"') == 2
    assert '<ul id="brief"><li>#3: at 0:01.0, detected for 0.04 s' in text
    assert "2 polyps in 0:08.0 of video (200 frames); 1 brief detection" in text
    assert text.count('class="brief"') == 1  # still on the timeline
    everything = write_report(tracks, tmp_path / "all.html", min_detected_s=0.0)
    assert everything.read_text().count('class="card"') == 3


def test_report_errors_name_the_fix(tmp_path):
    with pytest.raises(ReportError, match="--tracks"):
        write_report(tmp_path / "missing.json", tmp_path / "r.html")
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(ReportError, match="not a streamseg tracks file"):
        write_report(tmp_path / "x.json", tmp_path / "r.html")


def test_chromium_renders_the_report_with_a_card_per_polyp(tmp_path):
    browser_test = pytest.importorskip("test_browser")
    if browser_test.CHROMIUM is None or browser_test.CHROMEDRIVER is None:
        pytest.skip(
            "needs Debian's chromium and chromium-driver packages (make test "
            "installs them when run as root with apt-get)"
        )
    tracks, events = two_polyp_tracks(tmp_path)
    page = write_report(tracks, tmp_path / "report.html", events_path=events)
    with browser_test.chromium(tmp_path) as browser:
        browser.open(page.as_uri())
        assert browser.script("return document.querySelectorAll('.card').length") == 2
        assert (
            browser.script(
                "return document.querySelectorAll('#timeline rect.track').length"
            )
            == 2
        )
        assert browser.script(
            "return [...document.querySelectorAll('.card img')]"
            ".every((i) => i.complete && i.naturalWidth === 120)"
        )
        assert browser.text("#summary").startswith("2 polyps in 0:08.0")
        picture = browser.screenshot("#cards")
        cv2.imwrite(
            str(tmp_path / "cards.png"), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR)
        )
        # The two thumbnails as Chromium draws them: red-ish and green-ish.
        reds = (picture[..., 0] > 150) & (picture[..., 1] < 90)
        greens = (picture[..., 1] > 150) & (picture[..., 0] < 90)
        assert reds.sum() > 2000 and greens.sum() > 2000
        timeline = browser.screenshot("#timeline")
        blue = (timeline[..., 2] > 180) & (timeline[..., 0] < 90)
        assert blue.sum() > 200, "no track bars drawn on the timeline"
