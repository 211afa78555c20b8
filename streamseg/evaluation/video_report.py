"""The evaluate-video report: JSON, sweep CSV and Markdown, a plot, terminal tables.

:func:`write_outputs` writes the files; :func:`report_tables` builds the
rich tables the CLI prints.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from streamseg.evaluation.sweep import (
    PER_FRAME,
    SMOOTHED,
    Comparison,
    best_per_group,
    describe,
    family,
    within_gap,
)
from streamseg.evaluation.video_eval import (
    VideoEvaluation,
)
from streamseg.files import write_atomic

# --- output files --------------------------------------------------------------


def write_outputs(
    evaluation: VideoEvaluation, out_dir: Path, *, plot_path: Path | None = None
) -> list[Path]:
    """Write ``report.json`` (and with a sweep: ``sweep.csv``, ``sweep.md`` and
    the Dice-vs-flicker plot, ``plot_path`` or ``out_dir/dice_flicker.png``).

    Returns:
        The files written.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / "report.json"]
    # Each file whole or not at all, even if the process is killed.
    write_atomic(written[0], json.dumps(evaluation.as_dict(), indent=2) + "\n")
    if evaluation.sweep:
        csv_path = out_dir / "sweep.csv"
        write_atomic(csv_path, sweep_csv(evaluation))
        md_path = out_dir / "sweep.md"
        write_atomic(md_path, sweep_markdown(evaluation))
        png_path = plot_path or out_dir / "dice_flicker.png"
        plot_dice_flicker(evaluation, png_path)
        written += [csv_path, md_path, png_path]
    return written


def sweep_csv(evaluation: VideoEvaluation) -> str:
    """Every sweep row: settings, then per dataset the scores and comparisons."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    names = [d.name for d in evaluation.datasets]
    metrics = [
        "dice_macro",
        "dice_change",
        "flicker_predicted",
        "flicker_excess",
        "flicker_ratio",
        "false_positive_frames",
        "toggles_per_minute",
        "added_delay_ms_mean",
        "added_delay_ms_max",
        "newly_missed_episodes",
    ]
    writer.writerow(
        [
            "family",
            "time_constant_s",
            "confidence_power",
            "on",
            "off",
            "min_area_fraction",
            "meets_target",
            "violation",
            *[f"{n}:{m}" for n in names for m in metrics],
        ]
    )
    for row in evaluation.sweep:
        s = row.settings
        on, off = s.thresholds(row.threshold)
        cells: list[Any] = [
            family(s),
            s.time_constant_s,
            s.confidence_power if s.mode == "uncertainty" else "",
            on,
            off,
            s.min_area_fraction,
            row.meets(evaluation.target),
            f"{row.violation(evaluation.target):.4f}",
        ]
        for name in names:
            r, c = row.results[name], row.comparisons[name]
            cells += [
                f"{r.scores.dice_macro:.4f}",
                f"{c.dice_macro_change:+.4f}",
                f"{r.scores.flicker_predicted:.4f}",
                f"{r.flicker_excess:.4f}",
                f"{c.flicker_ratio:.3f}",
                r.scores.false_positive_frames,
                f"{r.scores.toggles_per_minute:.1f}",
                f"{c.added_delay_ms_mean:.1f}",
                f"{c.added_delay_ms_max:.1f}",
                c.newly_missed_episodes,
            ]
        writer.writerow(cells)
    return buffer.getvalue()


def sweep_markdown(evaluation: VideoEvaluation) -> str:
    """Markdown: per-frame baselines, the best variant per (family, tau), the choice."""
    target = evaluation.target
    names = list(evaluation.sweep[0].comparisons) if evaluation.sweep else []
    lines = [
        "| variant | "
        + " | ".join(f"{n}: Dice Δ / excess-flicker ratio / +delay ms" for n in names)
        + " | meets target |",
        "| --- | " + " | ".join("---" for _ in names) + " | --- |",
    ]
    chosen = evaluation.chosen

    def cells(comparisons: dict[str, Comparison]) -> str:
        texts = []
        for name in names:
            c = comparisons.get(name)
            if c is None:  # the configured settings were not run on that model
                texts.append("-")
                continue
            missed = (
                f", {c.newly_missed_episodes} missed" if c.newly_missed_episodes else ""
            )
            texts.append(
                f"{c.dice_macro_change:+.4f} / {_ratio(c)} / "
                f"{c.added_delay_ms_mean:+.0f}{missed}"
            )
        return " | ".join(texts)

    configured = {d.name: d.comparison for d in evaluation.datasets}
    meets = all(not c.shortfalls(target) for c in configured.values())
    lines.append(
        f"| configured: {describe(evaluation.smoothing, evaluation.model_threshold)} "
        f"| {cells(configured)} | {'yes' if meets else 'no'} |"
    )
    candidates = within_gap(evaluation.sweep, evaluation.choice_max_hysteresis_gap)
    for row in best_per_group(candidates or evaluation.sweep, target):
        mark = " **(chosen)**" if row is chosen else ""
        lines.append(
            f"| {row.label}{mark} | {cells(row.comparisons)} "
            f"| {'yes' if row.meets(target) else 'no'} |"
        )
    baseline_lines = [
        "| dataset | output | Dice macro / micro | IoU macro / micro | flicker "
        "predicted / truth / excess | FP frames | toggles/min | first-detection "
        "delay frames / ms (episodes) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for d in evaluation.datasets:
        outputs = [(PER_FRAME, d.per_frame), ("configured", d.smoothed)]
        if chosen is not None:
            outputs.append(("chosen", chosen.results[d.name]))
        for label, result in outputs:
            r = result.scores
            baseline_lines.append(
                f"| {d.name} | {label} | {r.dice_macro:.4f} / {r.dice_micro:.4f} | "
                f"{r.iou_macro:.4f} / {r.iou_micro:.4f} | "
                f"{r.flicker_predicted:.4f} / {r.flicker_truth:.4f} / "
                f"{result.flicker_excess:+.4f} | "
                f"{r.false_positive_frames} of {r.frames_without_polyp} | "
                f"{r.toggles_per_minute:.1f} | {r.mean_delay_frames:.2f} / "
                f"{r.mean_delay_ms:.1f} ({r.episodes - r.missed_episodes} of "
                f"{r.episodes} found) |"
            )
    judged = [n for n, c in evaluation.sweep[0].comparisons.items() if c.flicker_judged]
    lines.append(
        "\nRatios in parentheses: the flicker target is not judged on that dataset "
        f"(judged on: {', '.join(judged) or 'none'})."
    )
    text = "\n".join(baseline_lines) + "\n\n" + "\n".join(lines) + "\n"
    if chosen is not None:
        bound = evaluation.choice_max_hysteresis_gap
        steadiest = evaluation.steadiest
        if bound is not None:
            text += f"\nChosen among variants with on - off <= {bound:g}."
            if steadiest is not None and steadiest is not chosen:
                text += f" Without that bound: `{steadiest.label}`."
            text += "\n"
        text += f"\nChosen: `{chosen.label}`"
        if abs(chosen.threshold - evaluation.model_threshold) > 1e-9:
            text += f" (with `model.threshold: {chosen.threshold:g}`)"
        if not chosen.meets(target):
            misses = {
                name: c.shortfalls(target) for name, c in chosen.comparisons.items()
            }
            text += f" (target missed: {misses})"
        text += "\n"
    return text


# --- the plot (Pillow: a runtime dependency already, no matplotlib needed) ------

_COLORS = {
    "threshold": (150, 150, 150),
    "ema": (31, 119, 180),
    "uncertainty k=1": (255, 187, 120),
    "uncertainty k=2": (255, 127, 14),
    "uncertainty k=4": (196, 78, 0),
}


def plot_dice_flicker(evaluation: VideoEvaluation, path: Path) -> Path:
    """PNG: macro Dice against excess flicker, one panel per dataset.

    Every sweep variant is a dot coloured by family; the per-frame output is a
    black square, the configured smoothing a green diamond, the chosen
    variant a red ring; the shaded box is where the target is met on that
    dataset (flicker and Dice; delay is not drawn).
    """
    from PIL import Image, ImageDraw, ImageFont

    panel_w, panel_h = 560, 440
    left, right, top, bottom = 70, 20, 56, 60
    legend_h = 60
    count = len(evaluation.datasets)
    image = Image.new("RGB", (panel_w * count, panel_h + legend_h), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=13)
    title_font = ImageFont.load_default(size=15)
    chosen = evaluation.chosen
    target = evaluation.target
    for p, dataset in enumerate(evaluation.datasets):
        x0 = p * panel_w
        name = dataset.name
        base = dataset.per_frame
        points = [
            (r.results[name].flicker_excess, r.results[name].scores.dice_macro, r)
            for r in evaluation.sweep
        ]
        xs = [x for x, _, _ in points] + [
            base.flicker_excess,
            dataset.smoothed.flicker_excess,
        ]
        ys = [y for _, y, _ in points] + [
            base.scores.dice_macro,
            dataset.smoothed.scores.dice_macro,
        ]
        x_lo, x_hi = _padded(min(xs), max(xs))
        y_lo, y_hi = _padded(min(ys), max(ys))

        def to_px(
            x: float, y: float, x0=x0, x_lo=x_lo, x_hi=x_hi, y_lo=y_lo, y_hi=y_hi
        ):
            px = x0 + left + (x - x_lo) / (x_hi - x_lo) * (panel_w - left - right)
            py = top + (y_hi - y) / (y_hi - y_lo) * (panel_h - top - bottom)
            return px, py

        # Target region: Dice loss met, and the flicker ratio where judged.
        x_max = (
            target.flicker_ratio * base.flicker_excess
            if dataset.comparison.flicker_judged
            else x_hi
        )
        a = to_px(x_lo, y_hi)
        b = to_px(
            min(x_max, x_hi), max(base.scores.dice_macro - target.max_dice_loss, y_lo)
        )
        if b[0] > a[0] and b[1] > a[1]:
            draw.rectangle([a, b], fill=(225, 245, 225))
        # Axes, ticks, grid.
        ax0, ay0 = to_px(x_lo, y_lo)
        ax1, ay1 = to_px(x_hi, y_hi)
        for tick in _ticks(x_lo, x_hi):
            px, _ = to_px(tick, y_lo)
            draw.line([(px, ay1), (px, ay0)], fill=(235, 235, 235))
            draw.text(
                (px, ay0 + 4), f"{tick:.3g}", fill="black", font=font, anchor="ma"
            )
        for tick in _ticks(y_lo, y_hi):
            _, py = to_px(x_lo, tick)
            draw.line([(ax0, py), (ax1, py)], fill=(235, 235, 235))
            draw.text(
                (ax0 - 4, py), f"{tick:.3f}", fill="black", font=font, anchor="rm"
            )
        draw.rectangle([(ax0, ay1), (ax1, ay0)], outline="black")
        draw.text(
            ((ax0 + ax1) / 2, ay0 + 22),
            "excess flicker (predicted - truth, mean 1-IoU of consecutive masks)",
            fill="black",
            font=font,
            anchor="ma",
        )
        draw.text((ax0, ay1 - 6), "macro Dice", fill="black", font=font, anchor="ld")
        draw.text(
            ((ax0 + ax1) / 2, 4),
            f"{name}: {dataset.frames} frames",
            fill="black",
            font=title_font,
            anchor="ma",
        )
        draw.text(
            ((ax0 + ax1) / 2, 22),
            dataset.timing
            + ("" if dataset.comparison.flicker_judged else "; flicker not judged"),
            fill=(80, 80, 80),
            font=font,
            anchor="ma",
        )
        for x, y, row in points:
            cx, cy = to_px(x, y)
            color = _COLORS.get(family(row.settings), (120, 120, 120))
            draw.ellipse([cx - 2.5, cy - 2.5, cx + 2.5, cy + 2.5], fill=color)
        cx, cy = to_px(base.flicker_excess, base.scores.dice_macro)
        draw.rectangle([cx - 5, cy - 5, cx + 5, cy + 5], fill="black")
        cx, cy = to_px(
            dataset.smoothed.flicker_excess, dataset.smoothed.scores.dice_macro
        )
        draw.polygon(
            [(cx, cy - 7), (cx + 7, cy), (cx, cy + 7), (cx - 7, cy)], fill=(0, 160, 0)
        )
        if chosen is not None:
            result = chosen.results[name]
            cx, cy = to_px(result.flicker_excess, result.scores.dice_macro)
            draw.ellipse([cx - 8, cy - 8, cx + 8, cy + 8], outline=(220, 0, 0), width=3)
    # Legend.
    entries: list[tuple[str, Any]] = [(k, v) for k, v in _COLORS.items()]
    legend_y = panel_h + 10
    x = 20
    for label, color in entries:
        draw.ellipse([x, legend_y + 4, x + 8, legend_y + 12], fill=color)
        draw.text((x + 12, legend_y), label, fill="black", font=font)
        x += 24 + draw.textlength(label, font=font)
    y2 = legend_y + 24
    draw.rectangle([20, y2 + 2, 30, y2 + 12], fill="black")
    draw.text((36, y2), "per-frame", fill="black", font=font)
    draw.polygon(
        [(125, y2 + 1), (131, y2 + 7), (125, y2 + 13), (119, y2 + 7)], fill=(0, 160, 0)
    )
    draw.text((137, y2), "configured smoothing", fill="black", font=font)
    draw.ellipse([290, y2, 304, y2 + 14], outline=(220, 0, 0), width=3)
    draw.text((310, y2), "chosen", fill="black", font=font)
    draw.rectangle([380, y2 + 2, 394, y2 + 12], fill=(225, 245, 225))
    draw.text((400, y2), "target met (flicker, Dice)", fill="black", font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def _padded(lo: float, hi: float) -> tuple[float, float]:
    span = hi - lo if hi > lo else max(abs(hi), 1e-3)
    return lo - 0.06 * span, hi + 0.06 * span


def _ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    raw = (hi - lo) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step) + 1)]


# --- tables for the terminal (rich renderables; the CLI prints them) -----------


def report_tables(evaluation: VideoEvaluation, *, top: int = 12) -> list[Any]:
    """Rich tables: per dataset per-frame vs smoothed; with a sweep, its best rows."""
    from rich.table import Table

    tables: list[Any] = []
    label = describe(evaluation.smoothing, evaluation.model_threshold)
    for d in evaluation.datasets:
        table = Table(
            title=(
                f"{d.name}: {d.frames} frames in {d.sequences} sequence(s), "
                f"{d.timing}; scored at {d.eval_hw[1]}x{d.eval_hw[0]} px"
                f"{', lead-in' if evaluation.lead_in else ''}"
            ),
            title_justify="left",
            caption=f"smoothed = {label}",
            caption_justify="left",
        )
        table.add_column("metric")
        table.add_column(PER_FRAME, justify="right")
        table.add_column(SMOOTHED, justify="right")
        table.add_column("change", justify="right")
        base, new = d.per_frame.scores, d.smoothed.scores
        rows: list[tuple[str, float, float, str]] = [
            ("Dice macro", base.dice_macro, new.dice_macro, "{:.4f}"),
            ("Dice micro", base.dice_micro, new.dice_micro, "{:.4f}"),
            ("IoU macro", base.iou_macro, new.iou_macro, "{:.4f}"),
            ("IoU micro", base.iou_micro, new.iou_micro, "{:.4f}"),
            (
                "flicker predicted",
                base.flicker_predicted,
                new.flicker_predicted,
                "{:.4f}",
            ),
            (
                "flicker truth (real motion)",
                base.flicker_truth,
                new.flicker_truth,
                "{:.4f}",
            ),
            (
                "excess flicker",
                d.per_frame.flicker_excess,
                d.smoothed.flicker_excess,
                "{:.4f}",
            ),
            (
                f"false-positive frames (of {base.frames_without_polyp})",
                base.false_positive_frames,
                new.false_positive_frames,
                "{:.0f}",
            ),
            (
                "toggles / min",
                base.toggles_per_minute,
                new.toggles_per_minute,
                "{:.1f}",
            ),
            (
                f"first-detection delay, frames (of {base.episodes} episodes)",
                base.mean_delay_frames,
                new.mean_delay_frames,
                "{:.2f}",
            ),
            (
                "first-detection delay, ms",
                base.mean_delay_ms,
                new.mean_delay_ms,
                "{:.1f}",
            ),
            ("missed episodes", base.missed_episodes, new.missed_episodes, "{:.0f}"),
        ]
        for name, before, after, fmt in rows:
            change = after - before
            table.add_row(
                name,
                _fmt(fmt, before),
                _fmt(fmt, after),
                ""
                if math.isnan(change)
                else ("+" if change >= 0 else "") + _fmt(fmt, change),
            )
        c = d.comparison
        misses = c.shortfalls(evaluation.target)
        table.add_row(
            "vs target",
            "",
            f"excess flicker x{c.flicker_ratio:.2f}"
            f"{'' if c.flicker_judged else ' (not judged)'}, "
            f"+{c.added_delay_ms_mean:.0f} ms",
            "met"
            if not misses
            else "missed: " + ", ".join(f"{k} by {v:.3g}" for k, v in misses.items()),
        )
        tables.append(table)
    tables.extend(track_tables(evaluation))
    if evaluation.sweep:
        target = evaluation.target
        candidates = within_gap(
            evaluation.sweep, evaluation.choice_max_hysteresis_gap
        ) or list(evaluation.sweep)
        ranked = sorted(candidates, key=lambda r: r.rank_key(target))[:top]
        meeting = sum(r.meets(target) for r in evaluation.sweep)
        table = Table(
            title=(
                f"sweep: {len(evaluation.sweep)} variants, {meeting} meet the target "
                f"(flicker x<={target.flicker_ratio:g}, Dice loss <= "
                f"{target.max_dice_loss:g}, "
                f"+delay <= {target.max_added_delay_ms:g} ms); "
                f"best {len(ranked)}"
                + (
                    ""
                    if evaluation.choice_max_hysteresis_gap is None
                    else f" with on - off <= {evaluation.choice_max_hysteresis_gap:g}"
                )
            ),
            title_justify="left",
        )
        table.add_column("variant")
        names = list(evaluation.sweep[0].comparisons)
        for name in names:
            table.add_column(f"{name}\nDice Δ / flicker x / +ms", justify="right")
        table.add_column("target")
        for row in ranked:
            cells = [
                f"{c.dice_macro_change:+.4f} / {_ratio(c)} / "
                f"{c.added_delay_ms_mean:+.0f}"
                + (
                    f" / {c.newly_missed_episodes} missed"
                    if c.newly_missed_episodes
                    else ""
                )
                for c in (row.comparisons[name] for name in names)
            ]
            table.add_row(row.label, *cells, "met" if row.meets(target) else "missed")
        tables.append(table)
    return tables


def _ratio(comparison: Comparison) -> str:
    """The excess-flicker ratio; in parentheses where the target does not judge it."""
    text = f"{comparison.flicker_ratio:.2f}"
    return text if comparison.flicker_judged else f"({text})"


def _fmt(fmt: str, value: float) -> str:
    return (
        "-"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else fmt.format(value)
    )


def track_tables(evaluation: VideoEvaluation) -> list[Any]:
    """Rich table per dataset: presence toggles, ids, delay, Dice of the tracks."""
    from rich.table import Table

    if evaluation.tracking is None:
        return []
    t = evaluation.tracking
    tables = []
    for d in evaluation.datasets:
        if d.tracks is None:
            continue
        k = d.tracks
        table = Table(
            title=f"{d.name}: polyp tracks",
            title_justify="left",
            caption=(
                f"tracks = smoothed + tracking min_on_s={t.min_on_s:g} "
                f"keep_s={t.keep_s:g} max_gap_s={t.max_gap_s:g} "
                f"match_iou={t.match_iou:g}"
            ),
            caption_justify="left",
        )
        table.add_column("metric")
        table.add_column(PER_FRAME, justify="right")
        table.add_column(SMOOTHED, justify="right")
        table.add_column("tracks", justify="right")
        base, smooth = d.per_frame.scores, d.smoothed.scores
        table.add_row(
            "presence toggles / min (after the first detection)",
            _fmt("{:.1f}", k.per_frame_toggles_per_minute),
            _fmt("{:.1f}", k.smoothed_toggles_per_minute),
            _fmt("{:.1f}", k.toggles_per_minute)
            + (
                f" (x{k.toggles_per_minute / k.per_frame_toggles_per_minute:.2f})"
                if k.per_frame_toggles_per_minute
                else ""
            ),
        )
        table.add_row(
            "Dice macro",
            _fmt("{:.4f}", base.dice_macro),
            _fmt("{:.4f}", smooth.dice_macro),
            _fmt("{:.4f}", k.dice_macro) + f" ({k.dice_macro - base.dice_macro:+.4f})",
        )
        table.add_row(
            f"first-detection delay, ms (of {k.episodes} true episodes)",
            "",
            "",
            _fmt("{:.1f}", k.mean_delay_ms)
            + f" (+{k.added_delay_ms_mean:.0f} vs per-frame)",
        )
        table.add_row(
            "missed episodes",
            "",
            "",
            f"{k.missed_episodes} ({k.newly_missed_episodes} newly)",
        )
        table.add_row(
            "ID switches (per true episode)",
            "",
            "",
            f"{k.id_switches} ({_fmt('{:.2f}', k.id_switches_per_episode)})",
        )
        table.add_row(
            "polyps shown / true polyps (ids covering 2+ polyps)",
            "",
            "",
            f"{k.polyps_shown} / {k.true_polyps} ({k.merged_ids})",
        )
        tables.append(table)
    return tables
