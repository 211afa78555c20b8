"""Temporal smoothing in seconds (same at 25 and 50 fps), hysteresis, area, resets."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from streamseg.frames import Frame, Prediction
from streamseg.smoothing import (
    SmoothingSettings,
    TemporalSmoother,
    ema_weight,
    hysteresis,
    remove_small_regions,
    uncertainty_weights,
)

HW = (32, 64)


def _prediction(index, timestamp_s, probabilities, hw=HW):
    frame = Frame(index, timestamp_s, np.zeros((*hw, 3), np.uint8))
    return Prediction(frame, probabilities, 0.5)


def _moving_blob(timestamp_s, hw=HW):
    """Probability cone moving right at 40 px/s (a smooth signal of time)."""
    yy, xx = np.mgrid[0 : hw[0], 0 : hw[1]]
    center_x = 10 + 40 * timestamp_s
    cone = np.clip(1 - np.hypot(yy - hw[0] / 2, xx - center_x) / 12, 0, 1)
    return torch.from_numpy(cone.astype(np.float32))


def _smooth_at(fps, probabilities_at, duration_s=1.0, **settings):
    smoother = TemporalSmoother(
        SmoothingSettings(min_area_fraction=0, **settings), model_threshold=0.5
    )
    results = {}
    for index in range(round(duration_s * fps) + 1):
        timestamp_s = index / fps
        out = smoother(_prediction(index, timestamp_s, probabilities_at(timestamp_s)))
        results[round(timestamp_s, 6)] = out
    return results


def test_a_step_reaches_the_same_value_at_25_and_50_fps():
    # Dark at t=0, polyp from then on: after t seconds the smoothed value is
    # exactly 1 - exp(-t / tau), whatever the frame rate.
    def step(timestamp_s):
        return torch.full(HW, 0.0 if timestamp_s == 0 else 1.0)

    tau = 0.1
    at_25 = _smooth_at(25, step, 0.4, time_constant_s=tau)
    at_50 = _smooth_at(50, step, 0.4, time_constant_s=tau)
    for timestamp_s, prediction in at_25.items():
        expected = 1 - math.exp(-timestamp_s / tau)
        assert float(prediction.probabilities[0, 0]) == pytest.approx(
            expected, abs=1e-5
        )
        assert float(at_50[timestamp_s].probabilities[0, 0]) == pytest.approx(
            expected, abs=1e-5
        )


def test_a_moving_object_smooths_alike_at_25_and_50_fps_unlike_a_per_frame_ema():
    at_25 = _smooth_at(25, _moving_blob, time_constant_s=0.2)
    at_50 = _smooth_at(50, _moving_blob, time_constant_s=0.2)
    difference = max(
        float((at_25[t].probabilities - at_50[t].probabilities).abs().max())
        for t in at_25
    )
    assert difference < 0.04

    # The same comparison for a per-frame EMA (fixed alpha) fails: it is twice
    # as slow at 50 fps. This is what defining the filter in seconds avoids.
    def per_frame_ema(fps, alpha=0.2):
        state, results = None, {}
        for index in range(fps + 1):
            current = _moving_blob(index / fps)
            state = current if state is None else state + alpha * (current - state)
            results[round(index / fps, 6)] = state
        return results

    naive_25, naive_50 = per_frame_ema(25), per_frame_ema(50)
    naive = max(float((naive_25[t] - naive_50[t]).abs().max()) for t in naive_25)
    assert naive > 3 * difference


def test_ema_weight_is_one_minus_exp():
    assert ema_weight(0.04, 0.1) == pytest.approx(1 - math.exp(-0.4))
    assert ema_weight(0.04, 0.0) == 1.0  # no averaging


@pytest.mark.parametrize(
    ("probability", "was_on", "expected"),
    [
        (0.65, False, True),  # reaches on
        (0.55, False, False),  # between off and on, was off: stays off
        (0.55, True, True),  # between off and on, was on: stays on
        (0.35, True, False),  # below off: turns off
        (0.40, True, True),  # exactly off: stays on
    ],
)
def test_hysteresis_table(probability, was_on, expected):
    probabilities = torch.full((2, 2), probability)
    previous = torch.full((2, 2), was_on)
    assert bool(hysteresis(probabilities, previous, on=0.6, off=0.4).all()) is expected


def test_smoother_applies_hysteresis_over_time():
    smoother = TemporalSmoother(
        SmoothingSettings(time_constant_s=0, hysteresis_gap=0.2, min_area_fraction=0),
        model_threshold=0.6,
    )
    masks = [
        bool(smoother(_prediction(i, i * 0.04, torch.full(HW, p))).mask.all())
        for i, p in enumerate([0.5, 0.7, 0.5, 0.45, 0.3, 0.5])
    ]
    assert masks == [False, True, True, True, False, False]


def test_small_regions_are_removed_and_large_ones_kept():
    mask = torch.zeros(HW, dtype=torch.bool)
    mask[2:4, 2:4] = True  # 4 px speckle
    mask[10:20, 20:40] = True  # 200 px region
    kept = remove_small_regions(mask, min_area_px=50)
    assert not kept[2:4, 2:4].any()
    assert kept[10:20, 20:40].all()
    assert int(kept.sum()) == 200

    smoother = TemporalSmoother(
        SmoothingSettings(min_area_fraction=0.02), model_threshold=0.5
    )
    out = smoother(_prediction(0, 0.0, mask.float()))  # 2 % of 2048 px = 41 px
    assert torch.equal(out.mask, kept)


@pytest.mark.parametrize(
    ("second_timestamp_s", "second_hw"),
    [(0.04 + 1.0, HW), (0.04, HW), (0.0, HW), (0.08, (16, 32))],
    ids=["gap", "same time", "backwards", "size change"],
)
def test_state_resets_after_gap_non_increasing_time_or_size_change(
    second_timestamp_s, second_hw
):
    smoother = TemporalSmoother(
        SmoothingSettings(max_gap_s=0.5, min_area_fraction=0), model_threshold=0.5
    )
    smoother(_prediction(0, 0.0, torch.zeros(HW)))
    smoother(_prediction(1, 0.04, torch.zeros(HW)))
    out = smoother(
        _prediction(2, second_timestamp_s, torch.ones(second_hw), hw=second_hw)
    )
    assert torch.equal(out.probabilities, torch.ones(second_hw)), (
        "no memory of earlier frames"
    )
    assert smoother.resets == 1


def test_no_reset_within_the_gap_limit():
    smoother = TemporalSmoother(
        SmoothingSettings(time_constant_s=0.15, max_gap_s=0.5, min_area_fraction=0),
        model_threshold=0.5,
    )
    smoother(_prediction(0, 0.0, torch.zeros(HW)))
    out = smoother(
        _prediction(5, 0.2, torch.ones(HW))
    )  # 4 dropped frames, still smoothed
    assert float(out.probabilities[0, 0]) == pytest.approx(ema_weight(0.2, 0.15))
    assert smoother.resets == 0


def test_disabled_passes_predictions_through():
    prediction = _prediction(0, 0.0, torch.rand(HW))
    smoother = TemporalSmoother(SmoothingSettings(enabled=False), model_threshold=0.5)
    assert smoother(prediction) is prediction


def test_output_is_a_prediction_for_the_same_frame():
    prediction = _prediction(7, 0.3, torch.rand(HW))
    out = TemporalSmoother(SmoothingSettings(), model_threshold=0.5)(prediction)
    assert out.frame is prediction.frame
    assert out.mask_override is not None and out.mask.dtype == torch.bool


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"time_constant_s": -1.0}, "time_constant_s"),
        ({"hysteresis_gap": 1.0}, "hysteresis_gap"),
        ({"min_area_fraction": 1.5}, "min_area_fraction"),
        ({"max_gap_s": 0.0}, "max_gap_s"),
    ],
)
def test_invalid_settings_name_the_key(settings, message):
    with pytest.raises(ValueError, match=message):
        SmoothingSettings(**settings)


# --- uncertainty-weighted EMA (mode: uncertainty) ---------------------------------


def _uncertain_smoother(tau=0.2, power=2.0, **settings):
    return TemporalSmoother(
        SmoothingSettings(
            mode="uncertainty",
            time_constant_s=tau,
            confidence_power=power,
            min_area_fraction=0,
            **settings,
        ),
        model_threshold=0.5,
    )


def test_confident_pixels_follow_at_once_and_uncertain_ones_lag():
    tau, dt = 0.2, 0.04
    smoother = _uncertain_smoother(tau)
    smoother(_prediction(0, 0.0, torch.zeros(HW)))
    current = torch.full(HW, 0.5)
    current[0, 0] = 1.0  # confident polyp
    current[0, 1] = 0.75  # c = |2 * 0.75 - 1| ** 2 = 0.25
    out = smoother(_prediction(1, dt, current)).probabilities
    assert float(out[0, 0]) == 1.0
    # p = 0.5 has confidence 0: exactly the plain EMA.
    assert float(out[5, 5]) == pytest.approx(0.5 * ema_weight(dt, tau), abs=1e-6)
    # In between, a time constant scaled by 1 - c.
    assert float(out[0, 1]) == pytest.approx(
        0.75 * (1 - math.exp(-dt / (tau * (1 - 0.25)))), abs=1e-6
    )
    # And a confident background pixel clears at once.
    previous = torch.ones(HW)
    smoother.reset()
    smoother(_prediction(2, 1.0, previous))
    assert (
        float(smoother(_prediction(3, 1.04, torch.zeros(HW))).probabilities.max()) == 0
    )


@pytest.mark.parametrize("probability", [0.5, 0.6, 0.75, 0.9])
def test_uncertainty_mode_is_the_same_at_25_and_50_fps(probability):
    # A step from 0 to a steady probability p: every pixel is an EMA with the
    # time constant tau * (1 - c(p)), so the value at time t does not depend on
    # the frame rate.
    tau, power = 0.2, 2.0
    tau_px = tau * (1 - abs(2 * probability - 1) ** power)

    def step(timestamp_s):
        return torch.full(HW, 0.0 if timestamp_s == 0 else probability)

    results = {}
    for fps in (25, 50):
        results[fps] = _smooth_at(
            fps, step, 0.4, time_constant_s=tau, mode="uncertainty"
        )
    for timestamp_s, prediction in results[25].items():
        expected = probability * (1 - math.exp(-timestamp_s / tau_px))
        assert float(prediction.probabilities[0, 0]) == pytest.approx(
            expected, abs=1e-5
        )
        assert float(results[50][timestamp_s].probabilities[0, 0]) == pytest.approx(
            expected, abs=1e-5
        )


def test_uncertainty_weights_formula_and_edges():
    probabilities = torch.tensor([0.0, 0.5, 0.9, 1.0])
    weights = uncertainty_weights(0.04, 0.1, probabilities, 2.0)
    c = torch.tensor([1.0, 0.0, 0.64, 1.0])
    expected = 1 - torch.exp(-0.04 / (0.1 * (1 - c)).clamp_min(1e-12))
    assert torch.allclose(weights, expected)
    assert weights[0] == 1 and weights[3] == 1 and not torch.isnan(weights).any()
    assert torch.equal(
        uncertainty_weights(0.04, 0.0, probabilities, 2.0), torch.ones(4)
    )
    # A larger power keeps more pixels on the slow path.
    assert uncertainty_weights(0.04, 0.1, probabilities, 4.0)[2] < weights[2]


def test_hysteresis_gap_sets_the_off_threshold():
    assert SmoothingSettings(hysteresis_gap=0.1).thresholds(0.5) == (
        0.5,
        pytest.approx(0.4),
    )
    assert SmoothingSettings(hysteresis_gap=0).thresholds(0.5) == (0.5, 0.5)
    assert SmoothingSettings(hysteresis_gap=0.3).thresholds(0.4) == (
        0.4,
        pytest.approx(0.1),
    )
    assert SmoothingSettings(hysteresis_gap=0.3).thresholds(0.2) == (0.2, 0.01)
    with pytest.raises(ValueError, match="model threshold"):
        SmoothingSettings().thresholds(1.5)


def test_the_model_threshold_is_the_only_on_threshold():
    """One threshold setting: the smoother turns on where the model does."""
    names = {f.name for f in dataclasses.fields(SmoothingSettings)}
    assert not names & {"on_threshold", "off_threshold"}
    for threshold in (0.3, 0.5, 0.7):
        smoother = TemporalSmoother(
            SmoothingSettings(min_area_fraction=0), model_threshold=threshold
        )
        below = smoother(_prediction(0, 0.0, torch.full(HW, threshold - 0.001)))
        smoother.reset()
        at = smoother(_prediction(0, 0.0, torch.full(HW, threshold)))
        assert not below.mask.any() and at.mask.all()


def test_the_smoother_runs_at_the_map_size_and_resets_when_the_frame_changes():
    """Predictions at the network's size: the area filter takes fractions of the
    map (which covers the frame), and a new frame size starts afresh."""
    frame = Frame(0, 0.0, np.zeros((720, 1280, 3), np.uint8))
    probabilities = torch.zeros(32, 32)
    probabilities[:4, :4] = 0.9  # 16 of 1024 map pixels: 1.6 % of the frame
    smoother = TemporalSmoother(
        SmoothingSettings(min_area_fraction=0.02), model_threshold=0.5
    )
    assert not smoother(Prediction(frame, probabilities, 0.5)).mask.any()
    smoother = TemporalSmoother(
        SmoothingSettings(min_area_fraction=0.01), model_threshold=0.5
    )
    out = smoother(Prediction(frame, probabilities, 0.5))
    assert out.hw == (32, 32) and int(out.mask.sum()) == 16
    other = Frame(1, 0.04, np.zeros((480, 640, 3), np.uint8))
    smoother(Prediction(other, probabilities, 0.5))
    assert smoother.resets == 1


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"mode": "median"}, "mode"),
        ({"confidence_power": 0.0}, "confidence_power"),
        ({"hysteresis_gap": -0.1}, "hysteresis_gap"),
    ],
)
def test_invalid_new_settings_name_the_key(settings, message):
    with pytest.raises(ValueError, match=message):
        SmoothingSettings(**settings)


def _reference_area_filter(mask: np.ndarray, min_area_px: int) -> np.ndarray:
    """Whole-frame, 32-bit labelling: the plain definition of the area filter."""
    import cv2

    _, labels, stats, _ = cv2.connectedComponentsWithStats(
        mask.astype(np.uint8), connectivity=8, ltype=cv2.CV_32S
    )
    keep = stats[:, cv2.CC_STAT_AREA] >= min_area_px
    keep[0] = False
    return keep[labels]


@pytest.mark.parametrize("seed", range(6))
def test_area_filter_on_the_mask_box_equals_whole_frame_labelling(seed):
    rng = np.random.default_rng(seed)
    mask = np.zeros((120, 200), dtype=bool)
    # Blobs and specks somewhere inside the frame (the box is not the frame).
    for _ in range(rng.integers(1, 6)):
        y, x = rng.integers(10, 100), rng.integers(10, 180)
        h, w = rng.integers(1, 20), rng.integers(1, 20)
        mask[y : y + h, x : x + w] = True
    mask &= rng.random(mask.shape) > 0.1  # holes split some blobs
    for min_area in (2, 30, 150):
        kept = remove_small_regions(torch.from_numpy(mask), min_area).numpy()
        assert np.array_equal(kept, _reference_area_filter(mask, min_area))


def test_area_filter_with_more_regions_than_16_bit_labels_hold():
    # 260x520 isolated pixels + one big block: 67600 regions > 65535, so the
    # 16-bit labelling overflows and the 32-bit one must take over.
    mask = np.zeros((522, 1042), dtype=bool)
    mask[::2, ::2] = True
    mask[:40, :40] = True
    assert np.count_nonzero(_reference_area_filter(mask, 1)) == np.count_nonzero(mask)
    kept = remove_small_regions(torch.from_numpy(mask), 50).numpy()
    assert np.array_equal(kept, _reference_area_filter(mask, 50))
    # The block plus the grid pixels touching it: row 40 (21) and column 40 (20 more).
    assert kept[:40, :40].all() and kept.sum() == 40 * 40 + 41


@pytest.mark.parametrize("seed", range(4))
def test_regions_equal_whole_frame_labelling(seed):
    import cv2

    from streamseg.regions import find_regions

    def region_boxes(mask):
        return [region.box_xywh for region in find_regions(mask)]

    rng = np.random.default_rng(100 + seed)
    mask = np.zeros((90, 160), dtype=bool)
    for _ in range(rng.integers(1, 5)):
        y, x = rng.integers(5, 80), rng.integers(5, 150)
        mask[y : y + rng.integers(1, 15), x : x + rng.integers(1, 25)] = True
    _, _, stats, _ = cv2.connectedComponentsWithStats(
        mask.astype(np.uint8), connectivity=8, ltype=cv2.CV_32S
    )
    expected = sorted(
        (tuple(int(v) for v in row[:4]) for row in stats[1:]),
        key=lambda box: box,
    )
    assert sorted(region_boxes(mask)) == expected
    assert sorted(region_boxes(mask.astype(np.uint8) * 255)) == expected
    assert find_regions(np.zeros((4, 4), bool)) == ()
    areas = [region.area_px for region in find_regions(mask)]
    assert areas == sorted(areas, reverse=True)
    assert sorted(areas) == sorted(int(row[4]) for row in stats[1:])


@pytest.mark.parametrize("seed", range(3))
def test_the_smoother_hands_on_the_regions_of_its_final_mask(seed):
    """Its area filter labels once; the findings reuse that, not a second labelling."""
    from streamseg.findings import Findings
    from streamseg.regions import find_regions

    rng = np.random.default_rng(200 + seed)
    probabilities = torch.zeros(90, 160)
    for _ in range(6):  # a few regions large enough to stay, specks that go
        y, x = rng.integers(0, 80), rng.integers(0, 150)
        probabilities[y : y + rng.integers(1, 14), x : x + rng.integers(1, 14)] = 0.9
    frame = Frame(0, 0.0, np.zeros((90, 160, 3), np.uint8))
    smoother = TemporalSmoother(
        SmoothingSettings(min_area_fraction=0.003), model_threshold=0.5
    )
    smoothed = smoother(Prediction(frame, probabilities, 0.5))
    mask = smoothed.mask.numpy()
    assert smoothed.regions is not None
    assert smoothed.regions == find_regions(mask)
    assert all(region.area_px >= 0.003 * 90 * 160 for region in smoothed.regions)
    findings = Findings.of(smoothed)
    assert findings.regions is smoothed.regions
    assert findings.area_fraction == pytest.approx(mask.mean())
