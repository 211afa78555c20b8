"""An ablation study: train one arm per recipe variant, score each on validation only.

A plan is a YAML file::

    base: kvasir_unetpp_lite2.yaml      # a training config (relative to the plan file)
    overrides:                          # applied to every arm (the reduced setting)
      - model.input_hw=[160, 160]
      - optimization.epochs=12
    arms:                               # trained in this order
      - name: seed
        overrides: []
      - name: strong_aug
        overrides: [augment.rotate_deg=90, "augment.scale=[0.5, 1.5]"]

Each arm trains in ``<runs_dir>/<name>`` with ``--resume`` semantics: a
finished arm (``ablation.json`` present) is skipped, an interrupted one
continues from its last finished epoch. After training, the arm's model file
is scored on the arm's own validation carve-out (the same stems for every arm:
same ``data.split_seed``) at full resolution, threshold 0.5, micro and macro.
The test split is never touched. ``<runs_dir>/ablation.csv`` and
``ablation.md`` are rewritten after every arm (and by ``--report-only``), with
unfinished arms shown as running or pending with the epochs done.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from streamseg.config import ConfigError
from training.config import TrainConfig, load_train_config

log = logging.getLogger(__name__)

RESULT_FILE = "ablation.json"
COLUMNS = (
    "arm",
    "overrides",
    "status",
    "epochs_done",
    "epochs",
    "best_epoch",
    "val_dice_input_size",
    "val_micro_dice",
    "val_macro_dice",
    "val_micro_iou",
    "val_macro_iou",
    "calibrated_threshold",
    "val_micro_dice_calibrated",
    "s_per_epoch",
)


@dataclass(frozen=True)
class Arm:
    """One variant: a name (its run folder) and its overrides of the base."""

    name: str
    overrides: tuple[str, ...]


@dataclass(frozen=True)
class Plan:
    """A parsed plan file."""

    path: Path
    base: Path
    overrides: tuple[str, ...]
    arms: tuple[Arm, ...]

    def config(
        self,
        arm: Arm,
        data_root: str | Path | None,
        extra: tuple[str, ...] = (),
    ) -> TrainConfig:
        """The arm's full recipe: base config + plan overrides + arm + ``extra``."""
        return load_train_config(
            self.base, [*self.overrides, *arm.overrides, *extra], data_root=data_root
        )

    def select(self, names: tuple[str, ...] = ()) -> tuple[Arm, ...]:
        """The arms called ``names``, in that order; every arm when empty.

        Raises:
            ConfigError: A name the plan does not list.
        """
        if not names:
            return self.arms
        by_name = {arm.name: arm for arm in self.arms}
        unknown = [name for name in names if name not in by_name]
        if unknown:
            raise ConfigError(
                f"{self.path}: no arm called {', '.join(unknown)}; "
                f"the plan lists {', '.join(by_name)}"
            )
        return tuple(by_name[name] for name in dict.fromkeys(names))


def load_plan(path: str | Path) -> Plan:
    """Read and check a plan file (every arm's config is validated up front).

    Raises:
        ConfigError: Unreadable file, missing keys, duplicate or unsafe arm
            names, or an arm whose overrides make an invalid config.
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"{path}: cannot read the ablation plan ({error})") from error
    if not isinstance(data, dict) or "base" not in data or "arms" not in data:
        raise ConfigError(
            f"{path}: expected a mapping with 'base' (a training config), optional "
            "'overrides' and 'arms' (a list of {{name, overrides}})"
        )
    unknown = sorted(set(data) - {"base", "overrides", "arms"})
    if unknown:
        raise ConfigError(
            f"{path}: unknown key(s) {unknown}; expected base, overrides, arms"
        )
    base = (path.parent / str(data["base"])).resolve()
    if not base.is_file():
        raise ConfigError(f"{path}: base config {base} does not exist")
    arms = []
    for index, entry in enumerate(data["arms"] or []):
        if not isinstance(entry, dict) or "name" not in entry:
            raise ConfigError(f"{path}: arms[{index}]: expected {{name, overrides}}")
        name = str(entry["name"])
        if not name or any(c in name for c in "/\\ ") or name.startswith("."):
            raise ConfigError(
                f"{path}: arms[{index}]: name {name!r} must be a plain folder name"
            )
        arms.append(Arm(name, tuple(str(o) for o in entry.get("overrides") or ())))
    if not arms:
        raise ConfigError(f"{path}: the plan lists no arms")
    names = [arm.name for arm in arms]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ConfigError(f"{path}: arm names used twice: {duplicated}")
    plan = Plan(
        path, base, tuple(str(o) for o in data.get("overrides") or ()), tuple(arms)
    )
    for arm in plan.arms:
        try:
            plan.config(arm, None)
        except ConfigError as error:
            raise ConfigError(f"{path}: arm {arm.name!r}: {error}") from error
    return plan


def run_plan(
    plan: Plan,
    data_root: str | Path,
    runs_dir: str | Path,
    *,
    device: str = "auto",
    extra: tuple[str, ...] = (),
    progress: bool = True,
    only: tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    """Train and score every arm in order; rewrite the tables after each.

    ``only`` names the arms to train, in that order (default: all, in plan
    order); the tables still list every arm of the plan.

    An arm that fails is recorded as ``failed`` (with the error in its
    ``ablation.json``-less folder's log) and the plan goes on with the next.

    Returns:
        The table rows (one per arm).
    """
    from training.evaluate import evaluate_model
    from training.train import train

    runs_dir = Path(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    failures: dict[str, str] = {}
    for arm in plan.select(only):
        run_dir = runs_dir / arm.name
        if (run_dir / RESULT_FILE).is_file():
            log.info("arm %s: finished earlier, skipped", arm.name)
            continue
        config = plan.config(arm, data_root, extra)
        log.info("arm %s: %s", arm.name, " ".join(arm.overrides) or "(base)")
        started = time.monotonic()
        try:
            result = train(
                config, run_dir, device=device, resume=True, progress=progress
            )
            report, _ = evaluate_model(
                result.model_path,
                data_root,
                str(run_dir / "splits" / "val.txt"),
                device=device,
                precision="fp32",
                threshold=0.5,
            )
        except (ConfigError, RuntimeError, OSError, ValueError) as error:
            log.error("arm %s failed: %s", arm.name, error)
            failures[arm.name] = str(error)
            write_tables(plan, runs_dir, failures)
            continue
        record = {
            "arm": arm.name,
            "overrides": list(arm.overrides),
            "best_epoch": result.best_epoch,
            "val_dice_input_size": result.best_val_dice_at_05,
            "val_micro_dice": report.micro.dice,
            "val_macro_dice": report.macro.dice,
            "val_micro_iou": report.micro.iou,
            "val_macro_iou": report.macro.iou,
            "calibrated_threshold": result.threshold,
            "val_micro_dice_calibrated": result.val_dice,
            "val_images": len(report.images),
            "wall_s_this_invocation": round(time.monotonic() - started, 1),
        }
        (run_dir / RESULT_FILE).write_text(
            json.dumps(record, indent=2) + "\n", encoding="utf-8"
        )
        write_tables(plan, runs_dir, failures)
    return write_tables(plan, runs_dir, failures)


def arm_row(
    plan: Plan, arm: Arm, runs_dir: Path, failed: str | None = None
) -> dict[str, Any]:
    """One table row from whatever the arm's folder holds now."""
    run_dir = runs_dir / arm.name
    epochs = plan.config(arm, None).optimization.epochs
    rows = _log_rows(run_dir / "log.csv")
    times = [float(r["time"]) for r in rows if r.get("time")]
    row: dict[str, Any] = {
        "arm": arm.name,
        "overrides": " ".join(arm.overrides) or "(base)",
        "epochs_done": len(rows),
        "epochs": epochs,
        "s_per_epoch": round(sum(times) / len(times), 1) if times else None,
    }
    result_path = run_dir / RESULT_FILE
    if result_path.is_file():
        record = json.loads(result_path.read_text(encoding="utf-8"))
        row.update({key: record.get(key) for key in COLUMNS if key in record})
        row["overrides"] = " ".join(arm.overrides) or "(base)"
        row["status"] = "done"
    else:
        if rows:
            best = max(rows, key=lambda r: float(r["val_dice"]))
            row["best_epoch"] = int(float(best["epoch"]))
            row["val_dice_input_size"] = float(best["val_dice"])
        row["status"] = (
            f"failed: {failed}" if failed else ("running" if rows else "pending")
        )
    return row


def write_tables(
    plan: Plan, runs_dir: str | Path, failures: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """Rewrite ``ablation.csv`` and ``ablation.md`` in ``runs_dir``; return the rows."""
    runs_dir = Path(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    failures = failures or {}
    rows = [arm_row(plan, arm, runs_dir, failures.get(arm.name)) for arm in plan.arms]
    temporary = runs_dir / "ablation.csv.tmp"
    with open(temporary, "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=list(COLUMNS))
        writer.writeheader()
        for row in rows:
            writer.writerow({key: _cell(row.get(key)) for key in COLUMNS})
    temporary.replace(runs_dir / "ablation.csv")
    (runs_dir / "ablation.md").write_text(markdown_table(rows), encoding="utf-8")
    return rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table (validation only), best finished arm in bold."""
    done = [
        r
        for r in rows
        if r.get("status") == "done" and r.get("val_micro_dice") is not None
    ]
    best = max(done, key=lambda r: r["val_micro_dice"])["arm"] if done else None
    lines = [
        "| arm | overrides (on the base) | status | epochs | best epoch "
        "| val Dice, input size | val micro Dice | val macro Dice "
        "| calibrated: threshold, micro Dice | s/epoch |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        name = f"**{r['arm']}**" if r["arm"] == best else r["arm"]
        calibrated = (
            f"{r['calibrated_threshold']:.2f}: {r['val_micro_dice_calibrated']:.4f}"
            if r.get("calibrated_threshold") is not None
            else "-"
        )
        lines.append(
            "| "
            + " | ".join(
                [
                    name,
                    f"`{r['overrides']}`",
                    r["status"],
                    f"{r['epochs_done']}/{r['epochs']}",
                    _text(r.get("best_epoch")),
                    _text(r.get("val_dice_input_size")),
                    _text(r.get("val_micro_dice")),
                    _text(r.get("val_macro_dice")),
                    calibrated,
                    _text(r.get("s_per_epoch"), ".0f"),
                ]
            )
            + " |"
        )
    return "\n".join(lines) + "\n"


def _text(value: Any, spec: str = ".4f") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "-" if math.isnan(value) else format(value, spec)
    return str(value)


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6f}"
    return "" if value is None else value


def _log_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as file:
        return [row for row in csv.DictReader(file) if row.get("val_dice")]
