"""evaluate-video: datasets, cache, scoring with known answers, sweep, CLI."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from stream_media import disc_image, write_video

from streamseg.cli import main
from streamseg.evaluation.sweep import (
    SweepGrid,
    Target,
    choose,
    compare,
    score_variant,
)
from streamseg.evaluation.video_data import (
    CachedSequence,
    ModelRunner,
    TruthError,
    eval_size,
    load_dataset,
    open_cvc_dataset,
    open_video_dataset,
)
from streamseg.evaluation.video_eval import evaluate_video
from streamseg.evaluation.video_metrics import VideoScorer, flicker
from streamseg.evaluation.video_report import write_outputs
from streamseg.segmenter import ModelSettings
from streamseg.smoothing import SmoothingSettings, ema_weight

HW = (48, 64)
FPS = 25.0
SHARED_CVC = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "cvc-clinicdb-dev"
)


def _disc_mask(center_x: float, hw=HW, radius=10.0) -> np.ndarray:
    yy, xx = np.mgrid[0 : hw[0], 0 : hw[1]]
    return (yy - hw[0] / 2) ** 2 + (xx - center_x) ** 2 <= radius**2


def _disc_clip(count: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Images and exact masks of a disc moving right."""
    centers = [10 + (HW[1] - 20) * i / max(count - 1, 1) for i in range(count)]
    images = [disc_image(HW, (HW[0] / 2, x), 10.0) for x in centers]
    return images, np.stack([_disc_mask(x) for x in centers])


@pytest.fixture
def clip(tmp_path):
    images, masks = _disc_clip(12)
    video = write_video(tmp_path / "clip.mp4", images)
    np.savez(tmp_path / "masks.npz", masks=masks)
    return video, tmp_path / "masks.npz"


def _sequence(probabilities, truth, fps=FPS, name="s") -> CachedSequence:
    probabilities = np.asarray(probabilities, np.float16)
    return CachedSequence(
        name,
        np.arange(len(probabilities)) / fps,
        probabilities,
        np.asarray(truth, bool),
        probabilities.shape[1:],
    )


# --- scoring cached probabilities: known answers -------------------------------


def test_a_blinking_prediction_is_steadied_by_the_ema_and_scored_as_expected():
    # Truth: a steady 4x4 square in 20 frames. Per-frame output: p = 0.9 on the
    # square, but every 4th frame the model "blinks" to p = 0.3.
    truth = np.zeros((20, 8, 8), bool)
    truth[:, 2:6, 2:6] = True
    probabilities = truth * 0.9
    blinks = list(range(3, 20, 4))
    probabilities[blinks] = truth[blinks] * 0.3
    sequences = [_sequence(probabilities, truth)]

    per_frame = score_variant(sequences, SmoothingSettings(enabled=False), 0.5)
    scores = per_frame.scores
    assert scores.dice_macro == pytest.approx(15 / 20)  # 5 blank frames score 0
    assert scores.flicker_truth == 0
    # 19 pairs, 9 of them cross a blink (on -> off or off -> on).
    assert scores.flicker_predicted == pytest.approx(9 / 19)
    assert scores.toggles_per_minute == pytest.approx(60 * 9 / (20 / FPS))

    # One frame at 0.3 moves an EMA with tau = 30 ms from 0.9 to
    # 0.9 - 0.6 * w(40 ms) = 0.46 < 0.5: a plain EMA this short still blinks ...
    assert 0.9 - 0.6 * ema_weight(0.04, 0.03) < 0.5
    plain = SmoothingSettings(
        time_constant_s=0.03, hysteresis_gap=0, min_area_fraction=0
    )
    smoothed = score_variant(sequences, plain, 0.5, lead_in=False)
    assert smoothed.scores.flicker_predicted == pytest.approx(9 / 19)
    # ... and with hysteresis (off = 0.5 - 0.15) it holds the mask.
    held = score_variant(
        sequences,
        SmoothingSettings(
            time_constant_s=0.03, hysteresis_gap=0.15, min_area_fraction=0
        ),
        0.5,
        lead_in=False,
    )
    assert held.scores.flicker_predicted == 0 and held.scores.dice_macro == 1
    comparison = compare(per_frame, held)
    assert comparison.flicker_judged
    assert comparison.flicker_ratio == 0
    assert comparison.dice_macro_change == pytest.approx(0.25)
    assert comparison.shortfalls(Target()) == {}


def test_lead_in_makes_the_ema_late_by_the_frames_it_needs_to_reach_on():
    # A polyp from frame 0 at p = 0.9. Per-frame: detected at once. With the
    # lead-in (one background frame before), the EMA needs k + 1 steps with
    # 0.9 * (1 - exp(-(k + 1) * dt / tau)) >= 0.5.
    truth = np.zeros((10, 8, 8), bool)
    truth[:, 2:6, 2:6] = True
    sequences = [_sequence(truth * 0.9, truth)]
    tau = 0.1
    steps = math.ceil(-tau * FPS * math.log(1 - 0.5 / 0.9))
    ema = SmoothingSettings(time_constant_s=tau, hysteresis_gap=0, min_area_fraction=0)
    per_frame = score_variant(sequences, SmoothingSettings(enabled=False), 0.5)
    late = score_variant(sequences, ema, 0.5, lead_in=True)
    prompt = score_variant(sequences, ema, 0.5, lead_in=False)
    assert per_frame.episodes[0].delay_frames == 0
    assert late.episodes[0].delay_frames == steps - 1 == 2
    assert prompt.episodes[0].delay_frames == 0
    comparison = compare(per_frame, late)
    assert comparison.added_delay_ms_mean == pytest.approx(1000 * (steps - 1) / FPS)
    assert comparison.added_delay_frames_mean == steps - 1
    # The uncertainty mode follows a confident onset (c = 0.64) much sooner.
    uncertain = score_variant(
        sequences,
        SmoothingSettings(
            time_constant_s=tau,
            mode="uncertainty",
            hysteresis_gap=0,
            min_area_fraction=0,
        ),
        0.5,
    )
    assert uncertain.episodes[0].delay_frames == 0


def test_sequences_are_scored_independently():
    # Two sequences: steady masks that differ from each other. Pooled flicker
    # must be 0 (no pair across the cut) and there are two episodes.
    a = np.zeros((5, 8, 8), bool)
    a[:, :4] = True
    b = np.zeros((5, 8, 8), bool)
    b[:, 4:] = True
    result = score_variant(
        [_sequence(a * 0.9, a, name="a"), _sequence(b * 0.9, b, name="b")],
        SmoothingSettings(time_constant_s=0.2, min_area_fraction=0),
        0.5,
        lead_in=False,
    )
    assert result.scores.flicker_predicted == 0 and result.scores.flicker_truth == 0
    assert result.scores.episodes == 2 and result.scores.dice_macro == 1
    assert [e.first_index for e in result.episodes] == [0, 5]


def test_scorer_sequences_do_not_share_flicker_toggles_or_episodes():
    on, off = np.ones((2, 2), bool), np.zeros((2, 2), bool)
    scorer = VideoScorer()
    for i, (pred, truth) in enumerate([(on, on), (off, on)]):
        scorer.add(pred, truth, i / 10)
    scorer.start_sequence()
    scorer.start_sequence()  # repeated: no empty sequence
    for i, (pred, truth) in enumerate([(on, on), (on, on), (on, on)]):
        scorer.add(pred, truth, i / 10)
    scores = scorer.summary()
    assert scores.flicker_predicted == pytest.approx(1 / 3)  # 1 of 3 pairs
    assert scores.duration_s == pytest.approx(0.2 + 0.3)
    assert scores.toggles_per_minute == pytest.approx(60 * 1 / 0.5)
    assert [(e.first_index, e.length_frames) for e in scorer.episodes()] == [
        (0, 2),
        (2, 3),
    ]


# --- the sweep -------------------------------------------------------------------


def test_grid_variants_are_distinct_and_overrides_are_checked():
    grid = SweepGrid.from_overrides(
        [
            "time_constants_s=0,0.1",
            "confidence_powers=1,2",
            "on_offsets=0",
            "hysteresis_gaps=0,0.2",
            "min_area_fractions=0",
        ]
    )
    variants = grid.variants(0.5, SmoothingSettings())
    # tau 0: one mode; tau 0.1: ema + uncertainty x 2 powers; each x 2 gaps.
    assert len(variants) == (1 + 3) * 2
    assert len({repr(v) for v in variants}) == len(variants)
    assert all(v.settings.enabled for v in variants)
    assert {v.threshold for v in variants} == {0.5}
    offsets = SweepGrid.from_overrides(["on_offsets=0,0.1", "time_constants_s=0"])
    assert {v.threshold for v in offsets.variants(0.5, SmoothingSettings())} == {
        0.5,
        0.6,
    }
    for bad in ["taus=1", "modes=median", "time_constants_s=fast", "modes="]:
        with pytest.raises(ValueError, match="grid"):
            SweepGrid.from_overrides([bad])


def test_choose_prefers_variants_meeting_the_target(tmp_path):
    truth = np.zeros((30, 8, 8), bool)
    truth[:, 2:6, 2:6] = True
    probabilities = truth * 0.9
    probabilities[3::4] = truth[3::4] * 0.3
    data = {"blink": [_sequence(probabilities, truth)]}
    from streamseg.evaluation.sweep import run_sweep

    baseline = score_variant(data["blink"], SmoothingSettings(enabled=False), 0.5)
    grid = SweepGrid(
        time_constants_s=(0.0, 0.1, 0.5),
        modes=("ema",),
        on_offsets=(0.0,),
        hysteresis_gaps=(0.0, 0.3),
        min_area_fractions=(0.0,),
    )
    rows = run_sweep(data, {"blink": baseline}, grid.variants(0.5, SmoothingSettings()))
    best = choose(rows, Target())
    assert best.meets(Target())
    assert best.comparisons["blink"].flicker_ratio == 0
    # A bound on on - off restricts the candidates (and falls back to all).
    bounded = choose(rows, Target(), max_hysteresis_gap=0.0)
    assert bounded.settings.hysteresis_gap == 0
    assert bounded.rank_key(Target()) >= best.rank_key(Target())
    assert choose(rows, Target(), max_hysteresis_gap=-1) is best
    # tau 0.5 s with the lead-in is late by far more than 100 ms.
    slow = next(
        r
        for r in rows
        if r.settings.time_constant_s == 0.5 and r.settings.hysteresis_gap == 0
    )
    assert "added_delay_ms" in slow.comparisons["blink"].shortfalls(Target())


# --- datasets, cache, the whole pipeline ------------------------------------------


def test_evaluate_video_reports_every_field_and_writes_outputs(
    clip, model_file, tmp_path
):
    video, masks = clip
    dataset = open_video_dataset(str(video), masks)
    evaluation = evaluate_video(
        [dataset],
        ModelSettings(path=model_file, device="cpu"),
        SmoothingSettings(),
        cache_dir=tmp_path / "cache",
        sweep=SweepGrid(
            time_constants_s=(0.0, 0.1),
            confidence_powers=(2.0,),
            on_offsets=(0.0,),
            hysteresis_gaps=(0.0,),
            min_area_fractions=(0.0,),
        ),
    )
    report = evaluation.as_dict()
    (data,) = report["datasets"]
    assert data["frames"] == 12 and data["eval_hw"] == [48, 64]
    for variant in ("per-frame", "smoothed"):
        for key in (
            "dice_micro",
            "dice_macro",
            "iou_micro",
            "iou_macro",
            "flicker_predicted",
            "flicker_truth",
            "flicker_excess",
            "false_positive_frames",
            "toggles_per_minute",
            "mean_delay_frames",
            "mean_delay_ms",
            "episodes",
        ):
            assert key in data[variant], key
        assert 0 <= data[variant]["iou_micro"] <= 1
    # Truth flicker is the disc's real motion, computed from the masks alone.
    _, exact = _disc_clip(12)
    assert data["per-frame"]["flicker_truth"] == pytest.approx(flicker(list(exact)))
    assert report["model"]["sha256"] and report["evaluation"]["lead_in"] is True
    assert report["sweep"]["variants"] == 3  # tau 0, ema 0.1, uncertainty 0.1
    json.dumps(report, allow_nan=False)  # strict JSON: NaN written as null

    written = write_outputs(evaluation, tmp_path / "out")
    assert [p.name for p in written] == [
        "report.json",
        "sweep.csv",
        "sweep.md",
        "dice_flicker.png",
    ]
    rows = list(csv.reader((tmp_path / "out" / "sweep.csv").open()))
    assert len(rows) == 1 + 3
    from PIL import Image

    with Image.open(tmp_path / "out" / "dice_flicker.png") as image:
        assert image.size[0] >= 500 and image.mode == "RGB"


def test_probabilities_are_cached_and_reused_without_the_network(
    clip, model_file, tmp_path, tiny_spec
):
    video, masks = clip
    dataset = open_video_dataset(str(video), masks)
    settings = ModelSettings(path=model_file, device="cpu")
    cache = tmp_path / "cache"
    first = load_dataset(dataset, ModelRunner(settings), cache_dir=cache)
    assert len(list(cache.glob("*.npz"))) == 1

    class NoNetwork:
        def segment(self, frames):
            raise AssertionError("the network ran although the cache holds the result")

    runner = ModelRunner(settings)
    runner._segmenter = NoNetwork()
    again = load_dataset(dataset, runner, cache_dir=cache)
    assert np.array_equal(first[0].probabilities, again[0].probabilities)
    assert np.array_equal(first[0].timestamps_s, again[0].timestamps_s)
    assert first[0].probabilities.dtype == np.float16

    # Another evaluation size or another model file is another cache entry.
    with pytest.raises(AssertionError, match="network ran"):
        load_dataset(dataset, runner, cache_dir=cache, long_side_px=32)
    other = tmp_path / "other.safetensors"
    other.write_bytes(model_file.read_bytes())
    with other.open("r+b") as file:  # same spec, one weight byte changed
        file.seek(-1, 2)
        last = file.read(1)
        file.seek(-1, 2)
        file.write(bytes([last[0] ^ 1]))
    changed = ModelRunner(ModelSettings(path=other, device="cpu"))
    changed._segmenter = NoNetwork()
    with pytest.raises(AssertionError, match="network ran"):
        load_dataset(dataset, changed, cache_dir=cache)


def test_frame_folder_with_mask_folder_and_stated_fps(tmp_path, model_file):
    import cv2

    images, masks = _disc_clip(6)
    (tmp_path / "frames").mkdir()
    (tmp_path / "masks").mkdir()
    for i, (image, mask) in enumerate(zip(images, masks, strict=True)):
        # Natural order: 2.png before 10.png.
        cv2.imwrite(str(tmp_path / "frames" / f"{i * 4}.png"), image[..., ::-1])
        cv2.imwrite(
            str(tmp_path / "masks" / f"{i * 4}.png"), mask.astype(np.uint8) * 255
        )
    dataset = open_video_dataset(str(tmp_path / "frames"), tmp_path / "masks", fps=50)
    (sequence,) = load_dataset(dataset, ModelRunner(ModelSettings(path=model_file)))
    assert np.array_equal(sequence.truth, masks)
    assert sequence.timestamps_s == pytest.approx(np.arange(6) / 50)
    assert "50 fps" in dataset.timing


def _write_cvc(root: Path, lengths: dict[int, int]) -> None:
    import cv2

    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rows, frame = [], 0
    for sequence, length in lengths.items():
        for index in range(length):
            frame += 1
            image = disc_image(
                (24, 32), (12, 4 + 3 * index), 4, color=(0, 0, 200 + sequence)
            )
            cv2.imwrite(str(root / "images" / f"{frame}.png"), image)
            mask = np.zeros((24, 32), np.uint8)
            mask[:, : index + 1] = 255
            cv2.imwrite(str(root / "masks" / f"{frame}.png"), mask)
            rows.append(
                [frame, sequence, index, f"images/{frame}.png", f"masks/{frame}.png"]
            )
    rows.reverse()  # the reader must order by sequence and index, not by row
    with (root / "sequences.csv").open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["frame", "sequence", "index_in_sequence", "image", "mask"])
        writer.writerows(rows)


def test_cvc_layout_gives_ordered_independent_sequences(tmp_path, model_file):
    root = tmp_path / "cvc"
    _write_cvc(root, {2: 3, 10: 2})
    dataset = open_cvc_dataset(root, fps=25)
    assert [s.name for s in dataset.sequences] == ["sequence 2", "sequence 10"]
    loaded = load_dataset(dataset, ModelRunner(ModelSettings(path=model_file)))
    assert [len(s.timestamps_s) for s in loaded] == [3, 2]
    assert loaded[0].timestamps_s == pytest.approx([0, 0.04, 0.08])
    # Masks come in index order: column 0..index is set.
    assert [int(m[0].sum()) for m in loaded[0].truth] == [1, 2, 3]
    # SOURCE may be the CVC folder itself.
    assert open_video_dataset(str(root), None).name == "cvc"


@pytest.mark.skipif(not SHARED_CVC.is_dir(), reason="shared CVC-ClinicDB data absent")
def test_shared_cvc_has_15_sequences_in_time_order():
    dataset = open_cvc_dataset(SHARED_CVC)
    assert len(dataset.sequences) == 15
    assert sum(s.frame_count for s in dataset.sequences) == 317
    assert eval_size((288, 384), 256) == (192, 256)


# --- the CLI -----------------------------------------------------------------------


def _error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines, "expected an error message"
    return lines[-1]


def test_cli_evaluates_and_sweeps(clip, model_file, tmp_path, capsys):
    video, masks = clip
    code = main(
        [
            "evaluate-video",
            str(video),
            "--truth",
            str(masks),
            "--model",
            str(model_file),
            "--device",
            "cpu",
            "--cache",
            str(tmp_path / "cache"),
            "--out",
            str(tmp_path / "out"),
            "--set",
            "smoothing.mode=uncertainty",
            "--sweep",
            "--grid",
            "time_constants_s=0,0.1",
            "--grid",
            "modes=ema",
            "--grid",
            "hysteresis_gaps=0",
            "--grid",
            "min_area_fractions=0",
            "--grid",
            "on_offsets=0",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "Dice macro" in out and "toggles / min" in out and "sweep: 2 variants" in out
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["smoothing"]["settings"]["mode"] == "uncertainty"
    assert (tmp_path / "out" / "dice_flicker.png").is_file()


@pytest.mark.parametrize(
    ("arguments", "code", "message"),
    [
        (["{video}"], 2, "needs ground truth; pass --truth MASKS"),
        ([], 2, "nothing to evaluate"),
        (["{video}", "--truth", "{tmp}/none.npz"], 1, "none.npz: no such file"),
        (["{video}", "--truth", "{short}"], 1, "12 frames but 5 truth masks"),
        (["{video}", "--truth", "{small}"], 1, "masks must have the frames' size"),
        (["{video}", "--truth", "{masks}", "--grid", "taus=1", "--sweep"], 2, "--grid"),
        (["{video}", "--truth", "{masks}", "--set", "smoothing.mode=x"], 2, "mode"),
        (["{video}", "--truth", "{masks}", "--long-side", "-1"], 2, "--long-side"),
    ],
    ids=[
        "no truth",
        "no source",
        "missing truth",
        "frame count",
        "mask size",
        "bad grid",
        "bad mode",
        "bad size",
    ],
)
def test_cli_errors_are_one_line_with_the_right_exit_code(
    arguments, code, message, clip, model_file, tmp_path, capsys
):
    video, masks = clip
    full = np.load(masks)["masks"]
    np.savez(tmp_path / "short.npz", masks=full[:5])
    np.savez(tmp_path / "small.npz", masks=full[:, ::2, ::2])
    names = {
        "video": video,
        "masks": masks,
        "tmp": tmp_path,
        "short": tmp_path / "short.npz",
        "small": tmp_path / "small.npz",
    }
    argv = ["evaluate-video", *[a.format(**names) for a in arguments]]
    argv += ["--model", str(model_file), "--device", "cpu", "--no-cache"]
    assert main(argv) == code
    line = _error_line(capsys)
    assert line.startswith("streamseg: error: ") and message in line, line


def test_truth_errors_are_source_errors():
    from streamseg.sources import SourceError

    assert issubclass(TruthError, SourceError)


@pytest.mark.parametrize(
    ("predicted_flicker", "truth_flicker", "judged"),
    [
        (0.10, 0.02, True),  # excess 0.08: real instability
        (0.64, 0.63, False),  # excess 0.01 < a tenth of the motion
        (0.004, 0.0, False),  # excess below 0.005 absolute
        (0.10, 0.50, False),  # less flicker than the truth moves
    ],
)
def test_the_flicker_target_is_judged_only_where_there_is_excess(
    predicted_flicker, truth_flicker, judged
):
    from streamseg.evaluation.sweep import VariantResult
    from streamseg.evaluation.video_metrics import VideoScores

    scores = VideoScores(
        flicker_predicted=predicted_flicker, flicker_truth=truth_flicker
    )
    per_frame = VariantResult(scores, ())
    assert Target().judges_flicker(per_frame) is judged
    comparison = compare(per_frame, VariantResult(scores, ()))
    assert comparison.flicker_judged is judged
    # An unjudged dataset never reports a flicker shortfall.
    assert ("flicker_ratio" in comparison.shortfalls(Target())) is judged


def test_a_joint_sweep_checks_the_choice_on_another_model(clip, model_file, tmp_path):
    from streamseg.config import ConfigError

    video, masks = clip
    dataset = open_video_dataset(str(video), masks)
    grid = SweepGrid(
        time_constants_s=(0.0, 0.1),
        modes=("ema",),
        on_offsets=(0.0,),
        hysteresis_gaps=(0.0, 0.1),
        min_area_fractions=(0.0,),
    )
    # "Another model": the same file with another threshold, swept first.
    other = evaluate_video(
        [dataset],
        ModelSettings(path=model_file, device="cpu", threshold=0.4),
        SmoothingSettings(),
        cache_dir=tmp_path / "cache",
        sweep=grid,
    )
    write_outputs(other, tmp_path / "other")
    joint = evaluate_video(
        [dataset],
        ModelSettings(path=model_file, device="cpu"),
        SmoothingSettings(),
        cache_dir=tmp_path / "cache",
        sweep=grid,
        joint_sweeps=[tmp_path / "other"],
    )
    stem = "other"  # the folder of the joined report
    assert len(joint.sweep) == 4
    for row in joint.sweep:
        assert set(row.comparisons) == {"clip.mp4", f"{stem}:clip.mp4"}
        # Matched by grid point, not by absolute thresholds (0.5 vs 0.4).
        twin = next(
            r
            for r in other.sweep
            if r.settings.time_constant_s == row.settings.time_constant_s
            and r.settings.hysteresis_gap == row.settings.hysteresis_gap
        )
        assert row.comparisons[f"{stem}:clip.mp4"].dice_macro_change == pytest.approx(
            twin.comparisons["clip.mp4"].dice_macro_change
        )
    report = joint.as_dict()
    assert f"{stem}:clip.mp4" in report["sweep"]["rows"][0]["joint"]
    assert f"{stem}:clip.mp4" in write_outputs(joint, tmp_path / "j")[2].read_text()
    with pytest.raises(ConfigError, match="joint-with"):
        evaluate_video(
            [dataset],
            ModelSettings(path=model_file, device="cpu"),
            SmoothingSettings(),
            cache_dir=tmp_path / "cache",
            sweep=grid,
            joint_sweeps=[tmp_path / "missing"],
        )


def test_choose_prefers_the_largest_margin_among_variants_meeting_the_target():
    from streamseg.evaluation.sweep import Comparison, SweepRow

    def row(dice_change, ratio, delay_ms):
        comparison = Comparison(dice_change, True, ratio, delay_ms, delay_ms, 0, 0)
        return SweepRow(SmoothingSettings(), 0.5, f"{ratio}", {}, {"d": comparison})

    on_the_limit = row(-0.005, 0.10, 0.0)  # steadiest, but no Dice to spare
    with_slack = row(+0.002, 0.30, 20.0)  # margins 1.4, 0.4, 0.8 -> 0.4
    missing = row(-0.02, 0.05, 0.0)
    assert on_the_limit.margin(Target()) == pytest.approx(0.0)
    assert with_slack.margin(Target()) == pytest.approx(0.4)
    assert missing.margin(Target()) < 0 and not missing.meets(Target())
    assert choose([on_the_limit, with_slack, missing], Target()) is with_slack
    assert choose([missing], Target()) is missing  # the least shortfall, reported


def test_the_model_runner_honours_every_model_option(model_file):
    """evaluate-video builds its segmenter as ``streamseg run`` does (from_settings)."""
    from streamseg.config import ConfigError

    plain = ModelRunner(
        ModelSettings(path=model_file, device="cpu", precision="fp32", batch_size=3)
    )
    assert plain.segmenter.describe() == "fp32, channels_last"
    assert plain.segmenter.batch_sizes == (1, 3)
    impossible = ModelRunner(
        ModelSettings(path=model_file, device="cpu", cuda_graphs=True)
    )
    with pytest.raises(ConfigError, match="cuda_graphs"):
        impossible.segmenter  # noqa: B018 - loading it is what is tested


def test_the_cache_key_tells_tta_and_the_resolved_backend_apart(model_file):
    plain = ModelRunner(ModelSettings(path=model_file, device="cpu", precision="fp32"))
    flips = ModelRunner(
        ModelSettings(path=model_file, device="cpu", precision="fp32", tta="flips")
    )
    onnx = ModelRunner(
        ModelSettings(path=model_file, device="cpu", precision="fp32", backend="onnx")
    )
    # backend auto with no INT8 artefact beside the file resolves to torch.
    assert plain.precision_name == "cpu/fp32"
    assert flips.precision_name == "cpu/fp32/tta-flips"
    assert onnx.precision_name == "cpu/fp32/onnx"
