"""``aebench bench`` (run a campaign) and ``aebench report`` (tables and plots of results)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Optional

from aebench.bench.campaign import (
    Budget,
    CampaignConfig,
    Shard,
    cells_left,
    load_campaign,
    plan_cells,
    run_campaign,
    validate,
    validate_names,
    with_overrides,
)
from aebench.bench.cell import Cell
from aebench.bench.executor import Executor
from aebench.bench.lock import campaign_lock
from aebench.bench.merge import merge_results
from aebench.bench.ray_executor import RayExecutor
from aebench.bench.report import compile_text, write_report
from aebench.bench.stability import row_stability
from aebench.cli.folders import refuse_unwritable, writable_folder
from aebench.cli.precision import add_precision_arguments, chosen_precision
from aebench.data.datasets import find_mnist
from aebench.errors import AebenchError, SpecError
from aebench.plugins.precision import set_process_precision
from aebench.plugins.registry import available_backends
from aebench.progress import Progress
from aebench.safe_files import refuse_link
from aebench.spec.load import list_specs
from aebench.track.bench_run import CellTracker


def comma_list(text: str) -> tuple[str, ...]:
    items = tuple(item.strip() for item in text.split(",") if item.strip())
    if not items:
        raise argparse.ArgumentTypeError(f"must be a comma-separated list, got {text!r}")
    return items


def batch_sizes(text: str) -> tuple[int, ...]:
    sizes = []
    for item in comma_list(text):
        if not item.isdigit() or int(item) < 1:
            raise argparse.ArgumentTypeError(f"must be whole numbers >= 1, got {item!r}")
        sizes.append(int(item))
    return tuple(sizes)


DEFAULT_RESULTS = "bench-results"


def campaign_config(args: argparse.Namespace) -> CampaignConfig:
    """The campaign YAML (if any) with the flags given on the command line on top. Every name
    is checked against what is registered and shipped before any framework is imported; only
    the default backends (every available one) need the frameworks loaded, and last, at the
    campaign's precision (the process's from then on)."""
    if args.campaign:
        config = load_campaign(Path(args.campaign))
    else:
        config = CampaignConfig(specs=tuple(list_specs()), backends=())
    config = with_overrides(
        config,
        specs=args.specs,
        backends=args.backends,
        modes=args.modes,
        batch_sizes=args.batch_sizes,
        name=args.name,
        dtype=args.dtype,
        precision=chosen_precision(args),
        steps_per_call=args.steps_per_call,
        timeout_s=args.timeout,
        verify=False if args.no_verify else None,
        executor=args.executor,
        ray_address=args.ray_address,
    )
    protocol = {k: getattr(args, k) for k in ("warmup_seconds", "blocks", "block_seconds") if getattr(args, k)}
    config = dataclasses.replace(config, protocol=dataclasses.replace(config.protocol, **protocol))
    checked(args, lambda: validate_names(config, args.campaign or "command line"))
    set_process_precision(config.precision)  # the cells' own processes set it too
    if not config.backends:
        config = dataclasses.replace(config, backends=tuple(available_backends()))
        if not config.backends:
            raise AebenchError("--backends: no backend is available here (see aebench list)")
    return checked(args, lambda: validate(config, args.campaign or "command line"))


def checked(args: argparse.Namespace, check: Callable[[], object]):
    """Run a campaign check; a SpecError about a value given as a flag is said as that flag's error."""
    try:
        return check()
    except SpecError as exc:
        flag = "--" + exc.field.split("[")[0].replace("_", "-")
        if args.campaign and getattr(args, flag[2:].replace("-", "_"), None) is None:
            raise
        raise AebenchError(f"{flag}: {exc.message}") from None


def cmd_bench(args: argparse.Namespace) -> int:
    """Run (or resume) a campaign in <results>/<name>/, holding its lock, then write its report."""
    shard = Shard.parse(args.shard) if args.shard else Shard()
    if args.data:
        find_mnist(args.data)  # a wrong path is one line now, not a failed row for every cell
    refuse_unwritable(Path(args.results), "--results")
    config = campaign_config(args)
    results = writable_folder(Path(args.results), "--results")
    refuse_link(results / config.campaign_name())  # a link planted on a shared results path is not followed
    folder = writable_folder(results / config.campaign_name(), "--results")
    executor = executor_for(config, folder)
    progress = Progress()
    with campaign_lock(folder):
        planned = len(shard.select(plan_cells(config)))
        part = f" (shard {shard.index}/{shard.count})" if shard.count > 1 else ""
        progress.line(f"campaign {config.campaign_name()}{part}: {planned} cells, results in {folder}")
        budget = Budget(max_seconds=args.max_minutes * 60 if args.max_minutes else None)

        def on_start(i: int, n: int, cell: Cell) -> None:
            progress.line(f"[{i}/{n}] {cell.key}: started (a fresh process; about a minute per cell)")

        def on_cell(i: int, n: int, row: dict, tracked: str) -> None:
            progress.line(f"[{i}/{n}] {row['key']}: {cell_summary(row)}")
            progress.line(f"      {tracked}")

        tracker = CellTracker(uri=args.tracking_uri, log=not args.no_mlflow)
        store = run_campaign(
            config,
            results,
            retry_failed=args.retry_failed,
            mnist=args.data,
            tracker=tracker,
            on_cell=on_cell,
            on_start=on_start,
            shard=shard,
            budget=budget,
            executor=executor,
            say=progress.line,
            remeasure_peak=args.remeasure_peak,
            rerun_changed=args.rerun_changed,
        )
        left = cells_left(config, store, shard)
        if left:
            progress.line(
                f"time budget of {args.max_minutes:g} min spent: {len(left)} cells not started; "
                "the same command resumes them"
            )
        table = store.table()
        if table.empty:
            progress.line(f"no cell is recorded in {store.folder} yet: no report")
            return 0
        md, page = write_report([store.folder], store.folder, say=progress.line)
    failed = table[table["status"] == "failed"]
    progress.line(f"{len(table)} cells recorded in {store.table_path} ({len(failed)} failed); report: {md}, {page}")
    return 1 if len(failed) else 0


def executor_for(config: CampaignConfig, folder: Path) -> Optional[Executor]:
    """The campaign's executor: Ray tasks on a cluster (ray checked now, before any cell), or
    None for the local one."""
    if config.executor == "ray":
        return RayExecutor(folder / "logs", config.timeout_s, config.ray_address)
    return None


def cell_summary(row: dict) -> str:
    """One line on a finished cell: its figures and whether they are firm, or why it has none."""
    if row["status"] != "ok":
        return f"{row['status'].upper()}: {row['reason']}"
    stability = row_stability(row)
    verdict = "firm" if stability.firm else f"UNSTABLE ({stability.reason()})"
    return (
        f"{row['median_step_ms']:.3f} ms/step, interval {stability.interval_text(unit=' ms')}, "
        f"{row['samples_per_s']:,.0f} samples/s, {verdict}, compile {compile_text(row['compile_s'], ' s')}, "
        f"{100 * row['peak_fraction']:.1f}% of peak"
    )


def cmd_merge(args: argparse.Namespace) -> int:
    sources = [Path(s) for s in args.sources]
    out = writable_folder(Path(args.out), "--out")
    with campaign_lock(out):  # no campaign or other merge writes there meanwhile
        store, conflicts = merge_results(sources, out)
    for conflict in conflicts:
        print(f"{conflict.key}: kept the record of {conflict.kept}, dropped {', '.join(conflict.dropped)}")
    md, page = write_report([store.folder], store.folder)
    table = store.table()
    print(f"merged {len(sources)} folders: {len(table)} cells in {store.table_path}; report: {md}, {page}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Write report.md and report.html for campaign folders and pytest-benchmark JSON files."""
    sources = [Path(s) for s in args.results]
    for source in sources:
        if not source.exists():
            raise AebenchError(f"{source}: no such campaign folder or benchmark JSON file")
    if args.out:
        out = writable_folder(Path(args.out), "--out")
    else:
        default = sources[0] if sources[0].is_dir() else sources[0].parent
        out = writable_folder(default, "report (no --out: the first campaign's folder; give another with --out)")
    md, page = write_report(sources, out, say=lambda line: print(line, file=sys.stderr))
    print(f"wrote {md} and {page}")
    return 0


def add_commands(sub, positive_int, positive_float) -> None:
    """Adds bench and report to the aebench subcommands."""
    p = sub.add_parser(
        "bench", help="time training steps: specs x backends x modes x batch sizes, one fresh process per cell"
    )
    p.add_argument("--campaign", metavar="YAML", help="a campaign file (flags given here override it)")
    p.add_argument("--specs", type=comma_list, metavar="A,B", help="specs (default: every shipped spec)")
    p.add_argument("--backends", type=comma_list, metavar="A,B", help="backends (default: every available one)")
    p.add_argument("--modes", type=comma_list, metavar="A,B", help="eager, compiled, fast (default: all three)")
    p.add_argument("--batch-sizes", type=batch_sizes, metavar="N,M", help="default: each spec's train.batch_size")
    p.add_argument("--dtype", choices=("float32", "float64"), help="override every spec's dtype")
    add_precision_arguments(p, default="the campaign's, else ieee-fp32")
    p.add_argument(
        "--name",
        help="campaign name (default: read from what is measured, e.g. vae_dense_torch-jax_compiled_b1024, "
        "so the same command resumes the same campaign)",
    )
    p.add_argument(
        "--results",
        default=DEFAULT_RESULTS,
        metavar="DIR",
        help=f"where campaigns go (default {DEFAULT_RESULTS}/, which git ignores)",
    )
    p.add_argument("--steps-per-call", type=positive_int, help="steps per dispatch of the fast modes (default 10)")
    p.add_argument("--timeout", type=positive_float, metavar="S", help="seconds before a cell is killed (default 1800)")
    p.add_argument("--warmup-seconds", type=positive_float, metavar="S", help="warm-up after the first call (1)")
    p.add_argument("--blocks", type=positive_int, help="timed blocks per cell (default 7)")
    p.add_argument("--block-seconds", type=positive_float, metavar="S", help="least duration of a block (1)")
    p.add_argument("--no-verify", action="store_true", help="skip replaying the first steps on the trainer")
    p.add_argument("--retry-failed", action="store_true", help="run the cells recorded as failed again")
    p.add_argument(
        "--rerun-changed",
        action="store_true",
        help="measure again the recorded cells whose settings (protocol, data, spec contents, versions) "
        "differ from this run's; without it such a resume is refused",
    )
    p.add_argument(
        "--remeasure-peak",
        action="store_true",
        help="measure the device peak of each backend, dtype and precision again before its first cell",
    )
    p.add_argument(
        "--max-minutes",
        type=positive_float,
        metavar="M",
        help="start no cell after M minutes (a running cell finishes); the same command resumes",
    )
    p.add_argument(
        "--executor",
        choices=("local", "ray"),
        help="local: one cell after the other here (default); ray: cells as Ray tasks on a cluster",
    )
    p.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="with --executor ray: auto (the cluster this node is in), ray://HOST:PORT, or HOST:PORT "
        "(default: start a local cluster)",
    )
    p.add_argument(
        "--shard", metavar="I/N", help="run part I of N of the campaign's cells (one part per machine; see merge)"
    )
    p.add_argument(
        "--data",
        metavar="PATH",
        help="a Keras-layout mnist.npz for the MNIST specs (default as for train); images specs read their data.path",
    )
    p.add_argument(
        "--tracking-uri",
        metavar="URI",
        help="MLflow tracking URI for the cells' runs (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here)",
    )
    p.add_argument(
        "--no-mlflow", action="store_true", help="write each cell's MLflow bundle only (log later with aebench log)"
    )
    p.set_defaults(run=cmd_bench)

    p = sub.add_parser("merge", help="merge result folders from several machines into one table and report")
    p.add_argument("sources", nargs="+", metavar="FOLDER", help="result folders (results/NAME) to merge")
    p.add_argument("--out", required=True, metavar="DIR", help="the merged folder (created)")
    p.set_defaults(run=cmd_merge)

    p = sub.add_parser("report", help="markdown and HTML report of campaigns and pytest-benchmark JSON files")
    p.add_argument("results", nargs="+", metavar="RESULTS", help="campaign folders or --benchmark-json files")
    p.add_argument("--out", metavar="DIR", help="where to write (default: the first campaign folder)")
    p.set_defaults(run=cmd_report)
