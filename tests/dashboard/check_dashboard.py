"""Does MLflow's UI open an aebench experiment on its runs table? A check in a real headless browser.

Not collected by pytest (CI installs no browser); run it by hand where chromium is installed
(Debian: ``apt-get install -y chromium``)::

    .venv/bin/python tests/dashboard/check_dashboard.py --screenshot results/mlflow_runs_table.png

It logs two trainings and two bench cells with aebench.track.tracking.record to a new SQLite
store in a temporary folder, starts ``mlflow server`` on it, and opens each experiment in
``chromium --headless`` (a fresh profile each time, so no earlier choice in the UI counts):

1. the experiment carries ``mlflow.experimentKind`` = ``custom_model_development``;
2. the address aebench prints for a server (tracking.runs_table_url) shows the runs table with
   the runs aebench logged, not the GenAI overview or traces (checked; its screenshot is saved);
3. the experiment's plain address (``#/experiments/ID``): which view a new browser gets (printed
   only: MLflow 3.17 picks it with the sidebar switch GenAI / Model training, GenAI by default,
   whatever the experiment's kind).

Exit 0 when 1 and 2 hold for every experiment, else 1 with the reason.
"""

from __future__ import annotations

import argparse
import html
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))  # the helpers of the test modules, as pytest's prepend mode gives them

from test_compare_kinds import cell_row, log_cell, log_training  # noqa: E402
from test_tracking import Server  # noqa: E402

from aebench.track.tracking import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, runs_table_url  # noqa: E402

BROWSER_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1400,900",
    "--virtual-time-budget=15000",
]
BROWSER_TIMEOUT_S = 120
# what each view of an experiment shows in MLflow 3.17 (its document title, then words on the page)
VIEWS = {
    "runs table": ("Runs - Experiment", ("Run Name", "Duration")),
    "GenAI overview": ("Overview - Experiment", ("Detect Issues", "Token Usage")),
    "traces": ("Traces - Experiment", ("Trace ID",)),
}


def page_text(chromium: str, url: str, profile: Path) -> str:
    """The page's text (title first) once the UI has rendered, from ``chromium --dump-dom``."""
    dom = subprocess.run(
        [chromium, *BROWSER_FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=BROWSER_TIMEOUT_S,
        check=True,
    ).stdout
    dom = re.sub(r"<(script|style)\b[^>]*>.*?</\1>", " ", dom, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", dom)).split())


def view_of(text: str) -> str:
    """Which of VIEWS the page text is: its title names it, and its words are on the page."""
    for view, (title, words) in VIEWS.items():
        if title in text and all(word in text for word in words):
            return view
    return f"unknown ({text[:200]})"


def screenshot(chromium: str, url: str, profile: Path, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [chromium, *BROWSER_FLAGS, f"--user-data-dir={profile}", f"--screenshot={path.resolve()}", url],
        capture_output=True,
        timeout=BROWSER_TIMEOUT_S,
        check=True,
    )


def make_store(root: Path) -> None:
    """Two trainings (aebench/demo) and two bench cells (aebench-bench/demo-campaign) in the
    store root/mlflow.db, the one test_tracking.Server(root) serves."""
    log_training(root, "torch", 1.0)
    log_training(root, "jax", 2.0)
    log_cell(root, cell_row("torch", 30, 0.07))
    log_cell(root, cell_row("jax", 1930, 0.006))


def check_experiment(chromium: str, server: str, experiment, runs: list[str], work: Path) -> list[str]:
    """The problems of one experiment (none: it passes); prints what the browser showed."""
    problems = []
    kind = experiment.tags.get(EXPERIMENT_KIND_TAG)
    if kind != EXPERIMENT_KIND:
        problems.append(f"{experiment.name}: {EXPERIMENT_KIND_TAG} is {kind!r}, not {EXPERIMENT_KIND!r}")
    link = runs_table_url(server, experiment.experiment_id)
    text = page_text(chromium, link, Path(tempfile.mkdtemp(dir=work)))
    shown = view_of(text)
    missing = [name for name in runs if name not in text]
    print(f"{experiment.name} ({EXPERIMENT_KIND_TAG}={kind}): {link} shows the {shown}")
    if shown != "runs table" or missing:
        problems.append(f"{experiment.name}: {link} shows the {shown}; runs missing from the page: {missing}")
    plain = f"{server}/#/experiments/{experiment.experiment_id}"
    print(
        f"{experiment.name}: {plain} shows the {view_of(page_text(chromium, plain, Path(tempfile.mkdtemp(dir=work))))}"
    )
    return problems


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--screenshot", type=Path, help="save the runs table of the bench experiment here (PNG)")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "chromium", help="the browser to drive")
    args = parser.parse_args(argv)
    if not shutil.which(args.chromium):
        print(f"no browser {args.chromium}: apt-get install -y chromium", file=sys.stderr)
        return 2
    import mlflow

    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        make_store(work / "server")
        server = Server(work / "server")
        server.start()
        try:
            client = mlflow.MlflowClient(server.uri)
            problems = []
            for experiment in client.search_experiments(filter_string="name LIKE 'aebench%'"):
                runs = [r.info.run_name for r in client.search_runs([experiment.experiment_id])]
                problems += check_experiment(args.chromium, server.uri, experiment, runs, work)
                if args.screenshot and experiment.name.startswith("aebench-bench/"):
                    link = runs_table_url(server.uri, experiment.experiment_id)
                    screenshot(args.chromium, link, Path(tempfile.mkdtemp(dir=work)), args.screenshot)
                    print(f"screenshot of {link}: {args.screenshot}")
        finally:
            server.stop()
    for problem in problems:
        print(f"FAILED: {problem}", file=sys.stderr)
    print("passed" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
