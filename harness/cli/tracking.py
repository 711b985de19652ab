"""``aebench log`` (bundles to MLflow), ``aebench compare`` (runs side by side) and the
tracking flags of ``aebench train``."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from aebench.cli.folders import writable_file
from aebench.errors import AebenchError, SpecError
from aebench.scoring import QualitySettings
from aebench.spec.memory import check_memory_fits, human_bytes, largest_nll_k, memory_need, physical_memory_bytes
from aebench.spec.shapes import plan_model
from aebench.spec.types import Spec
from aebench.track.bundle import find_bundles
from aebench.track.compare import compare
from aebench.track.tracking import KINDS, log_bundle, not_tried_again
from aebench.track.train_run import TrackingOptions

URI_HELP = "MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here)"
COMPARE_DESCRIPTION = (
    "The finished MLflow runs as tables, backends side by side: the latest run per row key and backend, "
    "one row per metric, each backend's ratio to the best and the largest difference. Training runs "
    "(aebench train; row key: spec, mode, dtype) and bench cells (aebench bench; row key: spec, mode, dtype, "
    "batch size, precision) are never put in one row: each kind has its own table (--kind: one kind only). "
    "A setting that differs between runs side by side (epochs, a cell's steps_timed and steps_run, any "
    "resolved spec field) is a warning on stderr and a row of the settings table above the metrics."
)


MAX_NLL_K = 100_000  # importance samples per example: 20x the k = 5000 of the IWAE paper's NLL


def nll_k(text: str) -> int:
    """--nll-k: a whole number from 1 to MAX_NLL_K (each sample decodes every scored example)."""
    if not text.isdigit() or not 1 <= int(text) <= MAX_NLL_K:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to {MAX_NLL_K:,}, got {text!r}")
    return int(text)


def nll_examples(text: str):
    """--nll-examples: a whole number >= 1, or 'all'."""
    if text == "all":
        return text
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1 or 'all', got {text!r}")
    return int(text)


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """The tracking flags of ``aebench train``."""
    p.add_argument("--tracking-uri", metavar="URI", help=URI_HELP)
    p.add_argument("--no-mlflow", action="store_true", help="write the run bundle only (log it later with aebench log)")
    p.add_argument(
        "--nll-k", type=nll_k, metavar="K", help="importance samples per example for the VAE NLL (default 200)"
    )
    p.add_argument(
        "--nll-examples",
        type=nll_examples,
        metavar="N",
        help="first N test examples the VAE NLL and ELBO are scored on, or 'all' (default 200)",
    )


def tracking_options(args: argparse.Namespace):
    """TrackingOptions from the train flags (quality.QualitySettings' defaults where not given)."""
    quality = QualitySettings()
    if args.nll_k:
        quality = dataclasses.replace(quality, k=args.nll_k)
    if args.nll_examples:
        quality = dataclasses.replace(quality, nll_examples=None if args.nll_examples == "all" else args.nll_examples)
    return TrackingOptions(tracking_uri=args.tracking_uri, log=not args.no_mlflow, quality=quality)


def check_run_memory(spec: Spec, file: str, sizes: tuple[int, int], quality: QualitySettings) -> None:
    """Before any framework loads: training ``spec`` on ``sizes`` (training, test) examples, scored
    with ``quality``, fits this machine's memory (memory.check_memory_fits). Where only the NLL's
    decodes at --nll-k make it not fit, one line naming --nll-k and the largest k that fits."""
    plan = plan_model(spec, file)
    try:
        check_memory_fits(spec, file, plan, sizes, quality)
    except SpecError:
        default = dataclasses.replace(quality, k=QualitySettings().k)
        if quality.k <= default.k:
            raise
        check_memory_fits(spec, file, plan, sizes, default)  # the spec's own error where it does not fit either
        need = memory_need(spec, plan, sizes=sizes, quality=quality)
        available = physical_memory_bytes()
        most = largest_nll_k(spec, plan, sizes, quality, available)
        raise AebenchError(
            f"--nll-k: {quality.k:,} importance samples on each of {quality.examples(sizes[1]):,} test examples: "
            f"the run {need.describe()}; this machine has {human_bytes(available)} of memory; "
            f"allowed here: at most {most:,}"
        ) from None


def cmd_log(args: argparse.Namespace) -> int:
    """Log every bundle named; exit 1 if one was kept for an MLflow problem (a bundle whose
    training still runs is left for later, which is not a failure). Once the server is found
    hung, the bundles after are kept without trying it again (one line each, no wait)."""

    def passed_over(line: str) -> None:
        print(line, file=sys.stderr)

    bundles = [bundle for path in args.bundles for bundle in find_bundles(Path(path), passed_over)]
    kept, not_tried = 0, ""
    for bundle in bundles:
        outcome = log_bundle(bundle, args.tracking_uri, not_tried)
        not_tried = not_tried or (not_tried_again(outcome) if outcome.hung else "")
        kept += outcome.status == "kept"
        print(f"{bundle}: {outcome.message()}")
    return 1 if kept else 0


def cmd_compare(args: argparse.Namespace) -> int:
    """Print the comparison; a warning line on stderr for each setting that differs between runs side by side."""
    for flag, path in (("--csv", args.csv), ("--markdown", args.markdown)):
        if path:
            writable_file(Path(path), flag)
    comparison = compare(args.tracking_uri, args.experiment, args.metrics or (), args.csv, args.markdown, args.kind)
    for warning in comparison.warnings:
        print(f"aebench: warning: {warning}", file=sys.stderr)
    print(comparison.text)
    for label, path in (("CSV", args.csv), ("markdown", args.markdown)):
        if path:
            print(f"{label} saved to {path}")
    return 0


def add_commands(sub) -> None:
    """Adds log and compare to the aebench subcommands."""
    p = sub.add_parser("log", help="log run bundles (folders written by train or bench) to MLflow; safe to repeat")
    p.add_argument("bundles", nargs="+", metavar="BUNDLE", help="bundle folders, or folders holding bundles")
    p.add_argument("--tracking-uri", metavar="URI", help=URI_HELP)
    p.set_defaults(run=cmd_log)

    p = sub.add_parser(
        "compare",
        help="MLflow runs as tables: spec x metric, backends side by side; training runs and bench cells apart",
        description=COMPARE_DESCRIPTION,
    )
    p.add_argument("--experiment", metavar="NAME", help="one experiment (default: every experiment named aebench*)")
    p.add_argument(
        "--kind",
        choices=KINDS,
        help="only training runs (train) or only bench cells (bench); default: both, each in its own table",
    )
    p.add_argument("--tracking-uri", metavar="URI", help=URI_HELP)
    p.add_argument(
        "--metrics",
        type=lambda t: tuple(m for m in t.split(",") if m),
        metavar="PREFIX,...",
        help="only metrics starting with these, e.g. quality/,test/total (default: all)",
    )
    p.add_argument("--csv", metavar="PATH", help="also save the table as CSV")
    p.add_argument("--markdown", metavar="PATH", help="also save the table as markdown")
    p.set_defaults(run=cmd_compare)
