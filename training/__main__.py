"""``python -m training {train,evaluate,compare,eda,...}``: parse, call, report

Exit codes: 0 success; 1 runtime failure (data, model file, weights, I/O);
2 usage or configuration error; 130 interrupted. Errors print one line
(``--debug`` adds the traceback).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

# Nothing downloads behind the user's back: albumentations' update check off.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

log = logging.getLogger("training")
console = Console()
errors = Console(stderr=True)


class UsageError(Exception):
    """Bad command-line arguments (exit code 2)."""


def _set_threads(threads: int | None) -> None:
    """``--threads``: torch's CPU thread count (``None``: leave torch's default).

    Raises:
        UsageError: Fewer than 1.
    """
    if threads is None:
        return
    if threads < 1:
        raise UsageError(f"--threads: expected >= 1, got {threads}")
    import torch

    torch.set_num_threads(threads)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug", action="store_true", help="debug logging and tracebacks"
    )
    parser = argparse.ArgumentParser(
        prog="python -m training",
        description="Train, evaluate and explore streamseg polyp segmentation models.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser(
        "train",
        parents=[common],
        help="train a model (Poutyne), calibrate it, write the model file",
    )
    train.add_argument(
        "--config", type=Path, help="YAML recipe, e.g. configs/kvasir_unetpp_b2.yaml"
    )
    train.add_argument("--data", type=Path, help="dataset folder (overrides data.root)")
    train.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set optimization.epochs=5 (repeatable)",
    )
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in the run folder from its last finished epoch "
        "(starts fresh when there is nothing to resume)",
    )
    train.add_argument(
        "--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)"
    )
    train.add_argument(
        "--run-dir",
        type=Path,
        help="run folder (default: output.runs_dir/output.name; name defaults to "
        "the config file's stem)",
    )
    train.add_argument(
        "--quiet", action="store_true", help="no per-epoch progress output"
    )

    ablate = commands.add_parser(
        "ablate",
        parents=[common],
        help="train every arm of an ablation plan (resumable), score each on "
        "validation only, write ablation.csv and ablation.md",
    )
    ablate.add_argument(
        "--plan",
        type=Path,
        required=True,
        help="plan YAML, e.g. configs/ablation_reduced.yaml",
    )
    ablate.add_argument("--data", type=Path, required=True, help="dataset folder")
    ablate.add_argument(
        "--runs-dir", type=Path, required=True, help="one run folder per arm goes here"
    )
    ablate.add_argument(
        "--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)"
    )
    ablate.add_argument(
        "--threads", type=int, help="torch CPU threads (sets optimization.threads)"
    )
    ablate.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value in every arm (repeatable)",
    )
    ablate.add_argument(
        "--arms",
        default="",
        metavar="NAME,NAME",
        help="train only these arms, in this order (default: every arm of the plan; "
        "the table still lists all)",
    )
    ablate.add_argument(
        "--report-only",
        action="store_true",
        help="only rewrite ablation.csv/ablation.md from the run folders (no training)",
    )
    ablate.add_argument(
        "--quiet", action="store_true", help="no per-epoch progress output"
    )

    evaluate = commands.add_parser(
        "evaluate",
        parents=[common],
        help="score a model file on a split at full resolution",
    )
    evaluate.add_argument(
        "--model",
        type=Path,
        nargs="+",
        required=True,
        help="streamseg .safetensors model file; several: their ensemble (the mean "
        "probability, cut at the mean of their thresholds; needs --out)",
    )
    evaluate.add_argument("--data", type=Path, required=True, help="dataset folder")
    evaluate.add_argument(
        "--split",
        default="test",
        help="test (default), train, or a split file such as <run>/splits/val.txt",
    )
    evaluate.add_argument(
        "--tta", action="store_true", help="average over horizontal/vertical flips"
    )
    evaluate.add_argument(
        "--out", type=Path, help="report folder (default: <model folder>/eval)"
    )
    evaluate.add_argument(
        "--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)"
    )
    evaluate.add_argument(
        "--precision", default="fp32", help="fp32 (default), bf16, fp16 or auto"
    )
    evaluate.add_argument(
        "--threshold", type=float, help="replace the model file's calibrated threshold"
    )
    evaluate.add_argument(
        "--input-hw",
        nargs="+",
        type=_size,
        metavar="SIZE",
        help="network input replacing the model files' own, H or HxW (multiples of "
        "32): one for every --model, or one per --model in order (the same file "
        "twice at two sizes averages over input sizes)",
    )
    evaluate.add_argument(
        "--threads",
        type=int,
        help="CPU threads for torch (default: torch's choice; 1 is far faster on a "
        "machine whose cores are busy with other work)",
    )
    evaluate.add_argument(
        "--cases",
        type=int,
        default=4,
        help="best and worst cases in the PNG (default 4)",
    )

    compare = commands.add_parser(
        "compare",
        parents=[common],
        help="two models' per-image reports of one split (evaluate's "
        "<split>_per_image.csv): micro and macro Dice, B - A and its paired "
        "bootstrap interval",
    )
    compare.add_argument("a", type=Path, help="per-image CSV of model A (baseline)")
    compare.add_argument(
        "b", type=Path, help="per-image CSV of model B (the candidate)"
    )
    compare.add_argument(
        "--resamples",
        type=int,
        default=10_000,
        help="bootstrap resamples of the images (default 10000)",
    )
    compare.add_argument(
        "--confidence",
        type=float,
        default=0.95,
        help="interval's coverage (default 0.95)",
    )
    compare.add_argument(
        "--seed", type=int, default=0, help="bootstrap seed (default 0)"
    )
    compare.add_argument(
        "--groups",
        type=Path,
        help="CSV assigning each image to a group whose images are not independent "
        "(e.g. CVC-ClinicDB's sequences.csv): whole groups are resampled",
    )
    compare.add_argument(
        "--stem-column",
        default="stem",
        help="--groups' column of image stems (default stem; CVC-ClinicDB: frame)",
    )
    compare.add_argument(
        "--group-column",
        default="group",
        help="--groups' column of groups (default group; CVC-ClinicDB: sequence)",
    )

    eda = commands.add_parser(
        "eda", parents=[common], help="dataset counts, sizes, polyp areas, picture grid"
    )
    eda.add_argument("--data", type=Path, required=True, help="dataset folder")
    eda.add_argument(
        "--out",
        type=Path,
        default=Path("out/eda"),
        help="report folder (default out/eda)",
    )
    eda.add_argument(
        "--grid", type=int, default=16, help="images in the grid PNG (default 16)"
    )

    pack = commands.add_parser(
        "pack",
        parents=[common],
        help="pack one split (images, masks, split file) into a verified, "
        "uncompressed .tar for copying to another machine",
    )
    pack.add_argument("--data", type=Path, required=True, help="dataset folder")
    pack.add_argument(
        "--split",
        required=True,
        help="split file relative to --data (e.g. splits/train.txt) or an absolute "
        "path; train and test name the dataset's own split files",
    )
    pack.add_argument(
        "--out", type=Path, required=True, help=".tar file to write (uncompressed)"
    )
    pack.add_argument(
        "--name", help="folder at the top of the tar (default: --out's stem)"
    )
    pack.add_argument(
        "--optimize-jpeg",
        action="store_true",
        help="transcode JPEG images losslessly with jpegtran -copy none -optimize "
        "-progressive (smaller; needs libjpeg-turbo-progs)",
    )
    soup = commands.add_parser(
        "soup",
        parents=[common],
        help="average the weights of model files of one network (e.g. a model and "
        "its fine-tune), calibrate the threshold on their validation carve-out",
    )
    soup.add_argument(
        "--models",
        type=Path,
        nargs="+",
        required=True,
        help="two or more .safetensors model files of one network",
    )
    soup.add_argument(
        "--weights",
        type=float,
        nargs="+",
        help="one weight per model, summing to 1 (default: equal)",
    )
    soup.add_argument(
        "--data", type=Path, required=True, help="dataset folder (validation images)"
    )
    soup.add_argument("--out", type=Path, required=True, help="model file to write")
    soup.add_argument("--threads", type=int, help="CPU threads (default: one per core)")
    quantize = commands.add_parser(
        "quantize",
        parents=[common],
        help="make the OpenVINO INT8 artefact of a model file: calibrate on "
        "training images, check against fp32 on the validation carve-out",
    )
    quantize.add_argument(
        "--model", type=Path, required=True, help="streamseg .safetensors model file"
    )
    quantize.add_argument(
        "--data", type=Path, required=True, help="dataset folder (its training split)"
    )
    quantize.add_argument(
        "--preset",
        default="mixed",
        choices=("mixed", "performance"),
        help="NNCF preset (default mixed: symmetric weights, asymmetric activations)",
    )
    quantize.add_argument(
        "--subset-size",
        type=int,
        default=200,
        help="calibration images drawn from the training part (default 200)",
    )
    quantize.add_argument(
        "--max-dice-drop",
        type=float,
        default=0.005,
        help="write nothing if INT8 loses more micro Dice than this on the "
        "validation images (default 0.005)",
    )
    quantize.add_argument(
        "--train-split",
        help="official training split relative to --data (default: the one in the "
        "model's provenance, else splits/train.txt)",
    )
    quantize.add_argument(
        "--threads", type=int, help="CPU threads (default: one per core)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=errors, show_path=False, show_time=False)],
    )  # a no-op where logging is already set up (e.g. under pytest)
    from streamseg.config import ConfigError
    from streamseg.model import ModelFileError
    from training.data import DatasetError

    try:
        if args.command == "train":
            return run_train(args)
        if args.command == "evaluate":
            return run_evaluate(args)
        if args.command == "pack":
            return run_pack(args)
        if args.command == "quantize":
            return run_quantize(args)
        if args.command == "ablate":
            return run_ablate(args)
        if args.command == "soup":
            return run_soup(args)
        if args.command == "compare":
            return run_compare(args)
        return run_eda(args)
    except KeyboardInterrupt:
        errors.print(
            "interrupted; a training run continues with the same command plus --resume"
        )
        return 130
    except (ConfigError, UsageError) as error:
        return _fail(args, error, 2)
    except (DatasetError, ModelFileError, RuntimeError, OSError, ValueError) as error:
        return _fail(args, error, 1)
    except Exception as error:  # the CLI edge: one line unless --debug
        return _fail(args, error, 1, prefix=f"{type(error).__name__}: ")


def _fail(
    args: argparse.Namespace, error: BaseException, code: int, prefix: str = ""
) -> int:
    if args.debug:
        errors.print_exception()
    errors.print(
        f"[bold red]error:[/] {prefix}{error}",
        markup=True,
        highlight=False,
        soft_wrap=True,
    )
    return code


def _check_device(name: str, precision: str) -> None:
    from streamseg.device import resolve_precision, select_device

    try:
        resolve_precision(select_device(name), precision)
    except ValueError as error:
        raise UsageError(str(error)) from error


def run_train(args: argparse.Namespace) -> int:
    from training.config import load_train_config
    from training.train import default_run_dir, train

    config_path = args.config
    if config_path is None:
        saved = args.run_dir / "config.yaml" if args.run_dir else None
        if not (args.resume and saved is not None and saved.is_file()):
            raise UsageError(
                "--config is required (it may be left out only with --resume and a "
                "--run-dir "
                "that holds config.yaml)"
            )
        config_path = saved
    config = load_train_config(config_path, args.overrides, data_root=args.data)
    _check_device(args.device, config.optimization.precision)
    run_dir = args.run_dir or default_run_dir(config, config_path)
    log.info("run folder %s", run_dir)
    result = train(
        config, run_dir, device=args.device, resume=args.resume, progress=not args.quiet
    )

    table = Table(title=f"Training run {result.run_dir}", show_header=False)
    table.add_row("model file", str(result.model_path))
    table.add_row(
        "epochs",
        f"{result.epochs} (resumed after {result.resumed_from_epoch})"
        if result.resumed_from_epoch
        else str(result.epochs),
    )
    table.add_row("best epoch", str(result.best_epoch))
    table.add_row(
        "val Dice, input size, threshold 0.5 (micro)",
        f"{result.best_val_dice_at_05:.4f}",
    )
    table.add_row(
        "val Dice, full resolution, threshold 0.5 (micro)",
        f"{result.val_dice_at_05:.4f}",
    )
    table.add_row(
        f"val Dice, full resolution, threshold {result.threshold:.2f} (micro)",
        f"{result.val_dice:.4f}",
    )
    table.add_row("encoder init", result.encoder_init)
    table.add_row("wall time", f"{result.wall_s:.1f} s")
    console.print(table)
    data = config.data.root
    console.print(
        f"next: python -m training evaluate --model {result.model_path} "
        f"--data {data} --split test",
        highlight=False,
        soft_wrap=True,
    )
    return 0


def run_ablate(args: argparse.Namespace) -> int:
    from training.ablate import load_plan, run_plan, write_tables

    plan = load_plan(args.plan)
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads: expected >= 1, got {args.threads}")
    extra = list(args.overrides)
    if args.threads is not None:
        extra.append(f"optimization.threads={args.threads}")
    only = tuple(name.strip() for name in args.arms.split(",") if name.strip())
    for arm in plan.select(only):  # valid configs before hours of work
        plan.config(arm, args.data, tuple(extra))
    if args.report_only:
        args.runs_dir.mkdir(parents=True, exist_ok=True)
        rows = write_tables(plan, args.runs_dir)
    else:
        _check_device(args.device, "auto")
        rows = run_plan(
            plan,
            args.data,
            args.runs_dir,
            device=args.device,
            extra=tuple(extra),
            progress=not args.quiet,
            only=only,
        )
    console.print(
        (args.runs_dir / "ablation.md").read_text(encoding="utf-8"),
        highlight=False,
        soft_wrap=True,
    )
    console.print(
        f"{len(rows)} arms; table: {args.runs_dir / 'ablation.csv'}", highlight=False
    )
    return 0


def _size(text: str) -> tuple[int, int]:
    """``320`` or ``320x384`` -> (height, width) for ``--input-hw``."""
    height, _, width = text.lower().partition("x")
    try:
        size = (int(height), int(width or height))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected H or HxW in pixels (e.g. 384 or 320x384), got {text!r}"
        ) from None
    from streamseg.model import check_input_hw

    try:
        check_input_hw(size)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return size


def run_evaluate(args: argparse.Namespace) -> int:
    from training.evaluate import EMPTY, MACRO, MICRO, evaluate_model, write_report

    _check_device(args.device, args.precision)
    _set_threads(args.threads)
    if len(args.model) > 1 and args.out is None:
        raise UsageError(
            "--out: an ensemble's report needs its own folder (e.g. --out "
            "runs/ensemble/eval), not one of its members'"
        )
    if args.input_hw and len(args.input_hw) not in (1, len(args.model)):
        raise UsageError(
            f"--input-hw: give one size for every --model or one per --model "
            f"({len(args.model)}), not {len(args.input_hw)}"
        )
    report, thumbnails = evaluate_model(
        args.model if len(args.model) > 1 else args.model[0],
        args.data,
        args.split,
        device=args.device,
        precision=args.precision,
        tta=args.tta,
        threshold=args.threshold,
        input_hw=args.input_hw,
    )
    out = args.out or args.model[0].parent / "eval"
    paths = write_report(report, thumbnails, out, cases=args.cases)
    table = Table(
        title=(
            f"split '{report.split}' ({len(report.images)} images, "
            f"{report.split_file}), "
            f"full resolution, threshold {report.threshold:.2f}"
            f"{', flip TTA' if report.tta else ''}"
            f"{f', mean of {report.members} models' if report.members > 1 else ''}"
            + (
                ", network input " + " + ".join(f"{h}x{w}" for h, w in report.input_hw)
                if report.input_hw_given
                else ""
            )
        ),
        caption=f"{MICRO}\n{MACRO}\nempty masks: {EMPTY}",
    )
    for column in ("averaging", "Dice", "IoU", "precision", "recall"):
        table.add_column(column, justify="left" if column == "averaging" else "right")
    for name, scores in (("micro", report.micro), ("macro", report.macro)):
        table.add_row(
            name,
            *(
                f"{v:.4f}"
                for v in (scores.dice, scores.iou, scores.precision, scores.recall)
            ),
        )
    console.print(table)
    for kind, path in paths.items():
        console.print(f"{kind}: {path}", highlight=False, soft_wrap=True)
    console.print(
        f"wall time {report.wall_s:.1f} s on {report.device} ({report.precision})",
        highlight=False,
    )
    return 0


def run_soup(args: argparse.Namespace) -> int:
    from training.soup import make_soup

    _set_threads(args.threads)
    result = make_soup(args.models, args.data, args.out, weights=args.weights)
    console.print(
        f"wrote {result.path}: validation micro Dice {result.val_dice:.4f} at "
        f"threshold {result.threshold:.2f} ({result.val_dice_at_05:.4f} at 0.50; "
        f"{result.val_images} images; table {result.calibration_csv})",
        highlight=False,
        soft_wrap=True,
    )
    console.print(
        f"next: python -m training quantize --model {result.path} --data {args.data}",
        highlight=False,
        soft_wrap=True,
    )
    return 0


def run_compare(args: argparse.Namespace) -> int:
    from training.compare import compare, read_groups, read_report

    if args.resamples < 1:
        raise UsageError(f"--resamples: expected >= 1, got {args.resamples}")
    if not 0 < args.confidence < 1:
        raise UsageError(
            f"--confidence: expected between 0 and 1 (e.g. 0.95), got {args.confidence}"
        )
    result = compare(
        read_report(args.a),
        read_report(args.b),
        resamples=args.resamples,
        confidence=args.confidence,
        seed=args.seed,
        groups=None
        if args.groups is None
        else read_groups(args.groups, args.stem_column, args.group_column),
    )
    drawn = "" if args.groups is None else f" of {result.groups} groups"
    table = Table(
        title=f"B - A on {result.images} images "
        f"({result.resamples} paired bootstrap resamples{drawn})",
        caption=f"A: {args.a}\nB: {args.b}",
    )
    for column in (
        "score",
        "A",
        "B",
        "B - A",
        f"{result.micro.confidence:.0%} interval",
    ):
        table.add_column(column, justify="left" if column == "score" else "right")
    for row in (result.micro, result.macro):
        table.add_row(
            row.name,
            f"{row.a:.4f}",
            f"{row.b:.4f}",
            f"{row.delta:+.4f}",
            f"{row.low:+.4f} .. {row.high:+.4f}",
        )
    console.print(table)
    console.print(
        f"per image: B higher on {result.b_better}, lower on {result.b_worse}, equal "
        f"on {result.same}; B's micro Dice higher in "
        f"{result.share_b_better_micro:.1%} of resamples",
        highlight=False,
    )
    return 0


def run_quantize(args: argparse.Namespace) -> int:
    from training.quantize import quantize_model

    _set_threads(args.threads)
    if args.subset_size < 1:
        raise UsageError(f"--subset-size: expected >= 1, got {args.subset_size}")
    result = quantize_model(
        args.model,
        args.data,
        preset=args.preset,
        subset_size=args.subset_size,
        max_dice_drop=args.max_dice_drop,
        train_split=args.train_split,
    )
    a = result.agreement
    table = Table(title=f"INT8 artefact of {args.model}", show_header=False)
    table.add_row(
        "written", f"{result.paths.xml}, .bin, {result.paths.provenance.name}"
    )
    table.add_row(
        "calibration",
        f"{result.calibration_images} training images, preset {args.preset}",
    )
    table.add_row(
        f"validation ({a.images} images), micro Dice fp32 / INT8",
        f"{a.fp32_dice:.4f} / {a.int8_dice:.4f}",
    )
    table.add_row(
        "macro Dice fp32 / INT8", f"{a.fp32_dice_macro:.4f} / {a.int8_dice_macro:.4f}"
    )
    table.add_row(
        "mask agreement (pooled / worst image)",
        f"{a.mask_agreement_pct:.3f} % / {a.worst_image_agreement_pct:.3f} %",
    )
    table.add_row("wall time", f"{result.seconds:.1f} s")
    console.print(table)
    console.print(
        f"next: streamseg bench --validate --model {args.model} --data {args.data} "
        "--variants ov-fp32,ov-int8",
        highlight=False,
        soft_wrap=True,
    )
    return 0


def run_eda(args: argparse.Namespace) -> int:
    from training.eda import analyze, write_eda

    report, facts = analyze(args.data)
    paths = write_eda(report, facts, args.out, grid_count=args.grid)

    counts = Table(title=f"Dataset {report.root}", show_header=False)
    counts.add_row(
        "images / masks / pairs", f"{report.images} / {report.masks} / {report.pairs}"
    )
    for name, value in report.split_counts.items():
        counts.add_row(f"split {name}", str(value))
    counts.add_row("stems in both official splits", str(report.split_overlap))
    counts.add_row("split stems without a pair", str(report.split_unknown_stems))
    counts.add_row(
        "height range (px)", f"{report.height_range[0]} .. {report.height_range[1]}"
    )
    counts.add_row(
        "width range (px)", f"{report.width_range[0]} .. {report.width_range[1]}"
    )
    counts.add_row(
        "most common sizes (WxH)",
        ", ".join(f"{k} ({v})" for k, v in report.common_sizes.items()),
    )
    counts.add_row("empty masks", str(report.empty_masks))
    counts.add_row(
        "polyp regions per image",
        ", ".join(f"{k}: {v}" for k, v in report.polyps_per_image.items()),
    )
    if report.size_mismatches:
        counts.add_row("mask size != image size", ", ".join(report.size_mismatches))
    console.print(counts)

    areas = Table(title="Polyp area fraction (share of image pixels), quantiles")
    names = list(next(iter(report.area_quantiles.values())).keys())
    areas.add_column("images")
    for name in names:
        areas.add_column(name, justify="right")
    for split, values in report.area_quantiles.items():
        areas.add_row(split, *(f"{values[n]:.3f}" for n in names))
    console.print(areas)
    for kind, path in paths.items():
        console.print(f"{kind}: {path}", highlight=False, soft_wrap=True)
    return 0


def run_pack(args: argparse.Namespace) -> int:
    from training.pack import check_target, pack_split

    try:
        name = check_target(args.out, args.name)
    except ValueError as error:
        raise UsageError(str(error)) from error
    result = pack_split(
        args.data,
        args.split,
        args.out,
        optimize_jpeg=args.optimize_jpeg,
        name=name,
    )

    def size(count: int) -> str:
        return f"{count:,} B ({count / 2**20:.1f} MiB)"

    table = Table(title=f"Pack {result.out}", show_header=False)
    table.add_row("pairs", str(result.count))
    table.add_row("split file", str(result.split_file))
    table.add_row(
        "source images + masks",
        f"{size(result.source_bytes)} = {result.source_image_bytes:,} + "
        f"{result.source_mask_bytes:,}",
    )
    table.add_row(
        "packed images + masks",
        f"{result.packed_image_bytes:,} + {result.packed_mask_bytes:,} B",
    )
    table.add_row(
        "images",
        f"{result.transcoded} JPEGs through jpegtran (lossless)"
        if args.optimize_jpeg
        else "copied byte for byte",
    )
    table.add_row("tar size", size(result.packed_bytes))
    table.add_row("verified", "all pixels equal the source")
    table.add_row("wall time", f"{result.seconds:.1f} s")
    console.print(table)
    split_set = (
        ""
        if result.split_file.name == "train.txt"
        else f" --set data.train_split=splits/{result.split_file.name}"
    )
    console.print(
        f"next: tar xf {result.out.name} && python -m training train "
        f"--config configs/kvasir_unetpp_b2.yaml --data {result.name}{split_set}",
        highlight=False,
        soft_wrap=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
