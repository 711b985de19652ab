"""``aebench compare``: runs pulled back from MLflow into one pandas table, backends side by side.

``fetch_runs`` gives one row per finished run (its spec, backend, mode and dtype tags, its
params and the last value of every metric); ``side_by_side`` keeps the latest run of each
(spec, backend, mode, dtype) and pivots to one row per (spec, mode, dtype, metric) with one
column per backend, plus each backend's ratio to the best backend of that row (1.00 = the
best; 2.00 = twice the loss or time, or half the throughput or PSNR) and the largest
difference between the backends (absolute, and in % of the smaller magnitude).

Runs side by side are comparable only if they were made with the same settings: every param
(the flattened spec, epochs, data sizes, precision, ...) that differs between the runs of one
row group is a warning line and a row of the settings table (``differing_settings``) printed
above the metrics.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from aebench.errors import AebenchError
from aebench.track.tracking import open_client, redact, resolve_tracking_uri, server_silence

KEYS = ("spec", "mode", "dtype")
HIGHER_IS_BETTER = ("psnr", "per_second", "samples_per_s", "throughput", "gflop", "peak_fraction", "speedup")
METRIC_ORDER = ("quality/", "test/", "train/", "time/")
RUN_KEYS = ["spec", "backend", "mode", "dtype"]
EXPECTED_TO_DIFFER = frozenset({"backend"})  # params that name what is compared
DIFF, DIFF_PERCENT = "largest_diff", "largest_diff_%"
MAX_WARNINGS = 20
MAX_SETTING_CHARS = 60


@dataclass(frozen=True)
class Comparison:
    """What ``compare`` prints: ``warnings`` (one line per setting that differs between runs
    side by side, for stderr) and ``text`` (the settings that differ, then the metrics table)."""

    text: str
    warnings: list[str]


def fetch_runs(tracking_uri: Optional[str] = None, experiment: Optional[str] = None):
    """A DataFrame with one row per FINISHED run of ``experiment`` (default: every experiment
    whose name starts with 'aebench'): experiment, run_id, run_name, start_time, the tags
    spec, backend, mode, dtype, params (the run's params as a dict) and one column per metric
    (its last logged value)."""
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
                **{key: tags.get(key, "") for key in RUN_KEYS},
                "params": dict(run.data.params),
                **run.data.metrics,
            }
        )
    return pd.DataFrame(rows)


def side_by_side(runs, metrics: Sequence[str] = ()):
    """Backends side by side: index (spec, mode, dtype, metric), one value column per backend,
    then '<backend>/best' ratio columns, then the largest difference between the backends:
    'largest_diff' (max - min) and 'largest_diff_%' (that in % of the smallest magnitude).
    ``metrics``: keep metric names starting with one of these prefixes (all when empty). A
    ratio is left empty where a value is not positive, a difference where one backend has the row."""
    pd = _pandas()
    if runs.empty:
        return pd.DataFrame()
    latest = latest_runs(runs)
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
    spreads = [_spread([row[b] for b in backends]) for _, row in table.iterrows()]
    table[DIFF] = [absolute for absolute, _ in spreads]
    table[DIFF_PERCENT] = [percent for _, percent in spreads]
    return table


def latest_runs(runs):
    """The latest run (whole row) of each (spec, backend, mode, dtype)."""
    return runs.sort_values("start_time").drop_duplicates(subset=RUN_KEYS, keep="last")


def differing_settings(runs):
    """The params that differ between the latest runs side by side: index (spec, mode, dtype,
    setting), one column per backend holding its value ('(unset)' where it has none, '(empty)'
    for an empty one, values cut to 60 characters; '' for a backend not in that group). Params
    that name what is compared (the backend) are left out."""
    pd = _pandas()
    rows = []
    for keys, group in latest_runs(runs).groupby(list(KEYS), sort=True):
        if len(group) < 2:
            continue
        params = {backend: p for backend, p in zip(group["backend"], group["params"])}
        names = sorted(set().union(*params.values()) - EXPECTED_TO_DIFFER)
        for name in names:
            values = {backend: _setting(p.get(name)) for backend, p in sorted(params.items())}
            if len(set(values.values())) > 1:
                rows.append({**dict(zip(KEYS, keys)), "setting": name, **values})
    if not rows:
        return pd.DataFrame()
    table = pd.DataFrame(rows).set_index([*KEYS, "setting"]).fillna("")
    table.columns.name = None
    return table


def setting_warnings(settings) -> list[str]:
    """One line per row of ``differing_settings``: 'SPEC (MODE, DTYPE): NAME differs between
    the runs compared: jax 1, torch 5' (at most MAX_WARNINGS, then how many more)."""
    lines = []
    for (spec, mode, dtype, name), row in settings.iterrows():
        values = ", ".join(f"{backend} {value}" for backend, value in row.items() if value != "")
        lines.append(f"{spec} ({mode}, {dtype}): {name} differs between the runs compared: {values}")
    if len(lines) > MAX_WARNINGS:
        more = len(lines) - MAX_WARNINGS + 1
        lines = lines[: MAX_WARNINGS - 1] + [f"{more} more settings differ (see the table of settings)"]
    return lines


def to_markdown(table) -> str:
    """The table as a GitHub-flavoured markdown table (no extra dependency)."""
    frame = table.reset_index()
    header = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for _, row in frame.iterrows():
        lines.append("| " + " | ".join(_cell(v, _kind(c)) for c, v in row.items()) + " |")
    return "\n".join(lines) + "\n"


def to_text(table) -> str:
    """The table as aligned text: values to 4 significant digits, ratios to 3 decimals, percentages to 1."""
    formatters = {c: (lambda v, kind=_kind(c): _cell(v, kind)) for c in table.columns}
    return table.to_string(formatters=formatters, na_rep="")


def compare(
    tracking_uri: Optional[str] = None,
    experiment: Optional[str] = None,
    metrics: Sequence[str] = (),
    csv: Optional[Path] = None,
    markdown: Optional[Path] = None,
) -> Comparison:
    """Fetch, pivot, save the CSV (the metrics table) and markdown (settings that differ, then
    the metrics) files asked for, and return what to print."""
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
    settings = differing_settings(runs)
    if csv:
        table.to_csv(csv)
    if markdown:
        Path(markdown).write_text(_settings_section(settings, to_markdown) + to_markdown(table))
    head = (
        f"{len(runs)} finished run(s) in {where} at {redact(resolve_tracking_uri(tracking_uri))}; "
        "the latest per spec, backend, mode and dtype; <backend>/best: 1.00 is the best backend; "
        f"{DIFF}: the largest difference between the backends, {DIFF_PERCENT}: that in % of the smaller value"
    )
    text = head + "\n" + _settings_section(settings, lambda t: t.to_string() + "\n") + to_text(table)
    return Comparison(text, setting_warnings(settings) if not settings.empty else [])


def _settings_section(settings, render) -> str:
    if settings.empty:
        return ""
    return "settings that differ between the runs compared:\n" + render(settings) + "\n"


def _setting(value: Optional[str]) -> str:
    if value is None:
        return "(unset)"
    text = " ".join(str(value).split()) or "(empty)"
    return text if len(text) <= MAX_SETTING_CHARS else text[: MAX_SETTING_CHARS - 3] + "..."


def _spread(values: list[float]) -> tuple[float, float]:
    """(max - min, that in % of the smallest magnitude) of the values present; NaN for fewer than two."""
    present = [v for v in values if v is not None and not math.isnan(v)]
    if len(present) < 2:
        return math.nan, math.nan
    spread = max(present) - min(present)
    smallest = min(abs(v) for v in present)
    return spread, (100.0 * spread / smallest if smallest > 0 else math.nan)


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


def _kind(column: object) -> str:
    name = str(column)
    return "ratio" if name.endswith("/best") else "percent" if name == DIFF_PERCENT else "value"


def _cell(value: object, kind: str = "value") -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        if kind == "ratio":
            return f"{value:.3f}"
        if kind == "percent":
            return f"{value:.1f}%"
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
        import mlflow  # noqa: F401
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
    return open_client(uri)


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
