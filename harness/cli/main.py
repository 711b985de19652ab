"""The ``aebench`` command: list, validate, train, check, bench, report, log, compare, fetch-mnist.

Every user error ends as one line on stderr and exit code 2 (1 for a diverged training),
never a traceback. Ctrl-C ends a command with one line and exit 130; during ``train``, SIGTERM
ends it as Ctrl-C does (the run ended as KILLED, one line) with exit 143 (128 + 15, what a shell
reports for a process SIGTERM ended).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import importlib.util
import math
import signal
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Optional

from aebench.check.suite import choose_backends, format_table, load_specs, run_check, summarize, to_json
from aebench.cli.bench import add_commands
from aebench.cli.folders import writable_folder
from aebench.cli.precision import add_precision_arguments, set_precision_from
from aebench.cli.tracking import add_commands as add_tracking_commands
from aebench.cli.tracking import add_train_arguments, check_run_memory, tracking_options
from aebench.data.datasets import MNIST_URL, check_data, fetch_mnist, load_dataset, split_sizes, with_data_path
from aebench.errors import DISK_FULL_ERRNOS, AebenchError
from aebench.plugins.backend_api import check_implements
from aebench.plugins.discovery import registered_plugins
from aebench.plugins.plugin import Plugin
from aebench.plugins.registry import list_backends, load_backend
from aebench.progress import Progress
from aebench.spec.load import SPEC_SETS, builtin_specs_dir, list_specs, load_spec, spec_path
from aebench.spec.memory import check_memory_fits
from aebench.spec.schema import did_you_mean
from aebench.spec.shapes import plan_model
from aebench.stopping import signals_stop_training
from aebench.track.train_run import STOPPED, TrainingInterrupted, signal_of, tracked_training
from aebench.train.loop import train


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text}")
    return value


def cmd_list(args: argparse.Namespace) -> int:
    print(f"specs ({builtin_specs_dir()}):")
    for name in list_specs():
        spec = load_spec(name)
        print(f"  {name:26s} {spec.description}")
    for spec_set, held in SPEC_SETS.items():
        print(f"spec set {spec_set} ({held}):")
        for name in list_specs(spec_set):
            print(f"  {name:26s} {load_spec(name).description}")
    if args.load:
        print("backends (each framework loaded):")
        for info in list_backends():
            state = "available" if info.available else f"unavailable: {info.reason}"
            state += f", {info.note}" if info.note else ""
            print(f"  {info.name:26s} {state}")
    else:
        print("backends (installed packages, no framework loaded; 'aebench list --load' loads each):")
        for name, found in sorted(registered_plugins().items()):
            print(f"  {name:26s} {installed_state(found)}")
    return 0


def installed_state(found: Plugin) -> str:
    """Whether a backend's framework is installed, with the versions of its distributions, read
    from module specs and package metadata without importing the framework."""
    missing = [module for module in found.requires or (found.framework,) if not module_installed(module)]
    if missing:
        hint = f" ({found.install_hint})" if found.install_hint else ""
        return f"not installed: {', '.join(missing)} not found{hint}"
    versions = [f"{dist} {installed_version(dist)}" for dist in found.distributions if installed_version(dist)]
    return "installed" + (f": {', '.join(versions)}" if versions else "")


def module_installed(module: str) -> bool:
    """Whether the top-level package of ``module`` can be found (nothing is imported)."""
    try:
        return importlib.util.find_spec(module.split(".")[0]) is not None
    except (ImportError, ValueError):
        return False


def installed_version(distribution: str) -> str:
    """The installed version of ``distribution``, or "" when it is not installed."""
    try:
        return importlib.metadata.version(distribution)
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return ""


def package_version() -> str:
    """aebench's own installed version."""
    return installed_version("aebench") or "(version unknown: aebench is not installed as a package)"


def check_backend_names(names: Sequence[str], flag: str) -> None:
    """AebenchError naming ``flag`` for a name no plugin registers, before any framework loads."""
    known = registered_plugins()
    for name in names:
        if name not in known:
            shown = name if len(name) <= 60 else name[:57] + "..."
            raise AebenchError(
                f"{flag}: no backend '{shown}'{did_you_mean(name, known)}; registered: {', '.join(sorted(known))}"
            )


def cmd_validate(args: argparse.Namespace) -> int:
    names = args.backends.split(",") if args.backends else []
    check_backend_names(names, "--backends")
    backends = [load_backend(name) for name in names]
    failed = 0
    for name in args.specs:
        try:
            spec = load_spec(name)
            plan = plan_model(spec)
            need = check_memory_fits(spec, str(spec_path(name)), plan, split_sizes(spec))  # the data train reads
            for backend in backends:
                check_implements(backend, spec)
        except AebenchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
            continue
        weights = sum(math.prod(p.shape) for p in plan.params)
        print(
            f"ok: {name}: {spec.name}, family {spec.model.family}, {len(plan.params)} weight arrays, "
            f"{weights:,} weights; {need.describe()}"
        )
    return 2 if failed else 0


def cmd_train(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec)
    if args.epochs:
        spec = spec.replace(train=dataclasses.replace(spec.train, epochs=args.epochs))
    if args.dtype:
        spec = spec.replace(dtype=args.dtype)
    spec = with_data_path(spec, args.data)
    check_backend_names([args.backend], "--backend")
    check_data(spec, args.data)  # a missing file or an empty folder is reported before a framework loads
    options = tracking_options(args)
    check_run_memory(spec, str(spec_path(args.spec)), split_sizes(spec, args.data), options.quality)
    out = Path(args.out) if args.out else Path("runs") / f"{spec.name}-{args.backend}-{datetime.now():%Y%m%d-%H%M%S}"
    writable_folder(out, "--out")
    set_precision_from(args)  # before the backend loads: it is applied then, once
    backend = load_backend(args.backend)
    check_implements(backend, spec)
    data = load_dataset(spec, args.data)
    progress = Progress()
    progress.line(
        f"training {spec.name} on {backend.name} ({backend.device()}, {spec.dtype}) for "
        f"{spec.train.epochs} epoch(s); data: {data.source}; output: {out}"
    )
    with signals_stop_training(), tracked_training(spec, backend, data, out, options) as run:
        train(spec, backend, data, out, progress, listener=run, quality=options.quality)
    progress.line(f"wrote {', '.join(sorted(p.name for p in out.iterdir()))} to {out}")
    progress.line(run.outcome.message())
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    specs = load_specs(args.specs)
    names = args.backends.split(",") if args.backends else None
    check_backend_names(names or [], "--backends")
    set_precision_from(args)  # before any backend loads
    progress = Progress()
    backends, skipped = choose_backends(names, progress=progress.line)
    dtypes = [args.dtype] if args.dtype else ["float64", "float32"]
    rows = skipped + run_check(specs, backends, dtypes, progress=lambda s: progress.line(f"checking {s}"))
    if args.json:
        print(to_json(rows))
    else:
        print(format_table(rows if args.verbose else summarize(rows)))
        failed, skips = sum(r.verdict == "FAIL" for r in rows), sum(r.verdict == "skip" for r in rows)
        print(f"{len(rows) - failed - skips} passed, {failed} failed, {skips} skipped")
    return 1 if any(r.verdict == "FAIL" for r in rows) else 0


def cmd_fetch_mnist(args: argparse.Namespace) -> int:
    path = fetch_mnist(Path(args.dest) if args.dest else None, url=args.url or MNIST_URL, timeout=args.timeout)
    print(f"MNIST saved to {path}")
    return 0


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad command line is one error line (no usage block) and exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="aebench", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=OneLineParser)

    p = sub.add_parser("list", help="list the shipped specs and the registered backends")
    p.add_argument(
        "--load", action="store_true", help="load each backend's framework to be sure it works (slow: seconds each)"
    )
    p.set_defaults(run=cmd_list)

    p = sub.add_parser("validate", help="check spec files; one line per problem, exit 2 on any")
    p.add_argument("specs", nargs="+", metavar="SPEC", help="spec files or names of shipped specs")
    p.add_argument(
        "--backends",
        metavar="B1,B2",
        help="also check that these backends implement every layer of each spec (loads their frameworks)",
    )
    p.set_defaults(run=cmd_validate)

    p = sub.add_parser("train", help="train a spec on one backend; writes metrics and PNGs")
    p.add_argument("spec", metavar="SPEC", help="a spec file or the name of a shipped spec")
    p.add_argument("--backend", default="torch", help="backend name (see 'aebench list'; default torch)")
    p.add_argument("--epochs", type=positive_int, help="override train.epochs")
    p.add_argument("--dtype", choices=("float32", "float64"), help="override dtype")
    p.add_argument(
        "--data",
        metavar="PATH",
        help=(
            "MNIST specs: a Keras-layout mnist.npz (default: $AEBENCH_MNIST, ~/.keras/datasets/mnist.npz, then the "
            "bundled subset); images specs: a folder of PNG/JPEG files or an npz, read instead of data.path; "
            "synthetic specs of images [H, W, C]: train on that folder or npz instead, resized to H x W"
        ),
    )
    p.add_argument("--out", metavar="DIR", help="output folder (default runs/SPEC-BACKEND-TIME)")
    add_precision_arguments(p)

    add_train_arguments(p)
    p.set_defaults(run=cmd_train)

    p = sub.add_parser("check", help="compare the installed backends with the oracle and with each other")
    p.add_argument("specs", nargs="*", metavar="SPEC", help="spec files or shipped names (default: all shipped)")
    p.add_argument("--backends", metavar="A,B", help="comma-separated backend names (default: all registered)")
    p.add_argument("--dtype", choices=("float32", "float64"), help="one dtype (default: both)")
    p.add_argument("--json", action="store_true", help="every compared quantity as JSON")
    p.add_argument("--verbose", action="store_true", help="every compared quantity, not one row per kind")
    add_precision_arguments(p)
    p.set_defaults(run=cmd_check)

    p = sub.add_parser("fetch-mnist", help="download MNIST into the Keras cache (needs a network)")
    p.add_argument("--dest", metavar="PATH", help="where to save (default ~/.keras/datasets/mnist.npz)")
    p.add_argument("--url", help="an http:// or https:// URL to download from (default: the Keras mirror)")
    p.add_argument(
        "--timeout",
        type=positive_float,
        default=10.0,
        help="seconds for the whole download, connecting included (default 10)",
    )
    p.set_defaults(run=cmd_fetch_mnist)

    add_commands(sub, positive_int, positive_float)

    add_tracking_commands(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except AebenchError as exc:
        print(f"aebench: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        print(f"aebench: {interrupted_message(exc)}", file=sys.stderr)
        return 128 + signal.Signals[signal_of(exc)].value
    except OSError as exc:
        if exc.errno not in DISK_FULL_ERRNOS:
            raise
        print(f"aebench: error: {disk_full_message(exc)}", file=sys.stderr)
        return 1


def interrupted_message(exc: KeyboardInterrupt) -> str:
    """One line for Ctrl-C (or SIGTERM); after a training, where its run folder is and what became of its run."""
    what = "interrupted" if signal_of(exc) == "SIGINT" else STOPPED[signal_of(exc)]
    if not isinstance(exc, TrainingInterrupted):
        return what
    epochs = f"{exc.epochs} epoch{'' if exc.epochs == 1 else 's'}"
    ended = "" if exc.outcome.logged else f", its run ended as {exc.outcome.final_status or 'KILLED'}"
    return f"{what} after {epochs}: the run folder {exc.out} is kept{ended}; {exc.outcome.message()}"


def disk_full_message(exc: OSError) -> str:
    """One line for a write that ran out of space: where, and that what was written stays."""
    where = f" writing {str(exc.filename)[:200]}" if exc.filename else ""
    return (
        f"{exc.strerror or 'no space left'}{where}; everything finished before it is kept: free space "
        "and run the same command again"
    )


if __name__ == "__main__":
    sys.exit(main())
