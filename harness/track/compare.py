"""``aebench compare``: runs pulled back from MLflow into one pandas table, backends side by side.

``fetch_runs`` gives one row per finished run (its spec, backend, mode and dtype tags and
the last value of every metric); ``side_by_side`` keeps the latest run of each (spec,
backend, mode, dtype) and pivots to one row per (spec, mode, dtype, metric) with one column
per backend, plus each backend's ratio to the best backend of that row (1.00 = the best;
2.00 = twice the loss or time, or half the throughput or PSNR).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

from aebench.errors import AebenchError
from aebench.track.tracking import quiet_mlflow_store_logs, redact, resolve_tracking_uri, server_silence

KEYS = ("spec", "mode", "dtype")
HIGHER_IS_BETTER = ("psnr", "per_second", "samples_per_s", "throughput", "gflop", "peak_fraction", "speedup")
METRIC_ORDER = ("quality/", "test/", "train/", "time/")


def fetch_runs(tracking_uri: Optional[str] = None, experiment: Optional[str] = None):
    """A DataFrame with one row per FINISHED run of ``experiment`` (default: every experiment
    whose name starts with 'aebench'): experiment, run_id, run_name, start_time, the tags
    spec, backend, mode, dtype, and one column per metric (its last logged value)."""
    pd, client = _pandas(), _client(resolve_tracking_uri(tracking_uri))
    experiments = _experiments(client, experiment, resolve_tracking_uri(tracking_uri))
    rows = []
    for run in _search_all(client, [e.experiment_id for e in experiments]):
        tags = run.data.tags
        rows.append(
            {
                "experiment": _name_of(experiments, run.info.experiment_id),
                "run_id": run.info.run_id,
                "run_name": run.info.run_name,
                "start_time": run.info.start_time,
                **{key: tags.get(key, "") for key in ("spec", "backend", "mode", "dtype")},
                **run.data.metrics,
            }
        )
    return pd.DataFrame(rows)


def side_by_side(runs, metrics: Sequence[str] = ()):
    """Backends side by side: index (spec, mode, dtype, metric), one value column per backend,
    then '<backend>/best' ratio columns. ``metrics``: keep metric names starting with one of
    these prefixes (all when empty). A ratio is left empty where a value is not positive."""
    pd = _pandas()
    if runs.empty:
        return pd.DataFrame()
    latest = runs.sort_values("start_time").groupby(["spec", "backend", "mode", "dtype"], as_index=False).last()
    metric_columns = [c for c in runs.columns if "/" in c and (not metrics or c.startswith(tuple(metrics)))]
    long = latest.melt(id_vars=["spec", "backend", *KEYS[1:]], value_vars=metric_columns, var_name="metric")
    long = long.dropna(subset=["value"])
    if long.empty:
        return pd.DataFrame()
    table = long.pivot_table(index=[*KEYS, "metric"], columns="backend", values="value", aggfunc="last")
    table = table.reindex(sorted(table.index, key=_row_order))
    table.columns.name = None
    backends = list(table.columns)
    for backend in backends:
        table[f"{backend}/best"] = [
            _ratio(row[backend], [row[b] for b in backends], metric)
            for metric, (_, row) in zip(table.index.get_level_values("metric"), table.iterrows())
        ]
    return table


def to_markdown(table) -> str:
    """The table as a GitHub-flavoured markdown table (no extra dependency)."""
    frame = table.reset_index()
    header = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for _, row in frame.iterrows():
        lines.append("| " + " | ".join(_cell(v, ratio=str(c).endswith("/best")) for c, v in row.items()) + " |")
    return "\n".join(lines) + "\n"


def to_text(table) -> str:
    """The table as aligned text: values to 4 significant digits, ratios to 3 decimals."""
    formatters = {c: (lambda v, r=str(c).endswith("/best"): _cell(v, ratio=r)) for c in table.columns}
    return table.to_string(formatters=formatters, na_rep="")


def compare(
    tracking_uri: Optional[str] = None,
    experiment: Optional[str] = None,
    metrics: Sequence[str] = (),
    csv: Optional[Path] = None,
    markdown: Optional[Path] = None,
) -> str:
    """Fetch, pivot, save the CSV and markdown files asked for, and return the printed text."""
    runs = fetch_runs(tracking_uri, experiment)
    where = experiment or "experiments named aebench*"
    if runs.empty:
        raise AebenchError(
            f"no finished runs in {where} at {redact(resolve_tracking_uri(tracking_uri))}; "
            "train or log some first (aebench train, aebench log)"
        )
    table = side_by_side(runs, metrics)
    if table.empty:
        raise AebenchError(
            f"no metric starts with {', '.join(metrics)}; the runs have: "
            f"{', '.join(sorted(c for c in runs.columns if '/' in c))}"
        )
    if csv:
        table.to_csv(csv)
    if markdown:
        Path(markdown).write_text(to_markdown(table))
    head = (
        f"{len(runs)} finished run(s) in {where} at {redact(resolve_tracking_uri(tracking_uri))}; "
        "the latest per spec, backend, mode and dtype; <backend>/best: 1.00 is the best backend"
    )
    return head + "\n" + to_text(table)


def _ratio(value: float, row: list[float], metric: str) -> float:
    values = [v for v in row if v is not None and not math.isnan(v)]
    if value is None or math.isnan(value) or not values or min(values) <= 0:
        return math.nan
    if any(word in metric for word in HIGHER_IS_BETTER):
        return max(values) / value
    return value / min(values)


def _row_order(index: tuple) -> tuple:
    *keys, metric = index
    group = next((i for i, prefix in enumerate(METRIC_ORDER) if metric.startswith(prefix)), len(METRIC_ORDER))
    return (*keys, group, metric)


def _cell(value: object, ratio: bool = False) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        if ratio:
            return f"{value:.3f}"
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.4e}"
    return str(value)


def _pandas():
    try:
        import pandas
    except ImportError:
        raise AebenchError("aebench compare needs pandas: pip install 'aebench[tracking]'") from None
    return pandas


def _client(uri: str):
    try:
        from mlflow import MlflowClient
    except ImportError:
        raise AebenchError("aebench compare needs MLflow: pip install 'aebench[tracking]'") from None

    silent = server_silence(uri)
    if silent:
        raise AebenchError(f"--tracking-uri: {silent}")
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).is_file():
        raise AebenchError(
            f"no MLflow store at {uri[len('sqlite:///') :]} ({uri}); run aebench train here first, "
            "or pass --tracking-uri"
        )
    quiet_mlflow_store_logs()
    return MlflowClient(tracking_uri=uri)


def _experiments(client, name: Optional[str], uri: str) -> list:
    if name:
        found = client.get_experiment_by_name(name)
        if found is None:
            known = [e.name for e in client.search_experiments()]
            raise AebenchError(
                f"--experiment: no experiment '{name}' at {redact(uri)}; there are: "
                f"{', '.join(sorted(known)) or 'none'}"
            )
        return [found]
    found = client.search_experiments(filter_string="name LIKE 'aebench%'")
    if not found:
        raise AebenchError(
            f"no aebench experiments at {redact(uri)}; train or log some first "
            "(aebench train, aebench log), or name one with --experiment"
        )
    return found


def _search_all(client, experiment_ids: list[str]) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs(
            experiment_ids, filter_string="attributes.status = 'FINISHED'", max_results=1000, page_token=token
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _name_of(experiments: list, experiment_id: str) -> str:
    return next(e.name for e in experiments if e.experiment_id == experiment_id)
