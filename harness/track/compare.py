"""``aebench compare``: runs pulled back from MLflow into pandas tables, backends side by side.

``fetch_runs`` gives one row per finished run (its kind, its spec, backend, mode and dtype tags,
its params and the last value of every metric). Training runs (``aebench train``, kind
``train``) and bench cells (``aebench bench``, kind ``bench``) are never compared with each
other: a cell's ``train/total`` is the loss after however many steps its time budget allowed, a
training's after its epochs. ``compare`` makes one table per kind, training runs first (or of
one kind only, ``kind``: ``aebench compare --kind train|bench``). A run's kind is its tag
``aebench.kind``, or for runs logged before that tag its experiment's prefix (``aebench/`` for
trainings, ``aebench-bench/`` for cells: tracking.run_kind); runs of neither kind make a third
group, ``other``.

``side_by_side`` keeps the latest run of each row key and backend and pivots to one row per
(row key, metric) with one column per backend, plus each backend's ratio to the best backend
of that row (1.00 = the best; 2.00 = twice the loss or time, or half the throughput or PSNR)
and the largest difference between the backends (absolute, and in % of the smaller magnitude).
The row key of a training is (spec, mode, dtype); of a cell (spec, mode, dtype, batch_size,
precision), as a campaign measures each batch size and precision apart.

Runs side by side are comparable only if they were made with the same settings: every param
(the flattened spec, epochs, data sizes, precision, a cell's ``steps_timed`` and ``steps_run``,
...) that differs between the runs of one row group is a warning line and a row of the
settings table (``differing_settings``) printed above the metrics. For a cell logged before
``steps_run`` was a param it is read from its loss curve's last step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from aebench.errors import AebenchError
from aebench.track.bench_run import LOSS_METRIC, STABILITY_TAG, STEPS_RUN, UNSTABLE_REASON_TAG
from aebench.track.tracking import KINDS, open_client, redact, resolve_tracking_uri, run_kind, server_silence

KEYS = ("spec", "mode", "dtype")  # the row key of a training (and of runs of no known kind)
BENCH_KEYS = (*KEYS, "batch_size", "precision")  # of a bench cell
OTHER = "other"  # the kind of runs that are neither trainings nor cells
KEYS_OF = {"train": KEYS, "bench": BENCH_KEYS, OTHER: KEYS}
TITLES = {"train": "training runs (aebench train)", "bench": "bench cells (aebench bench)", OTHER: "other runs"}
HIGHER_IS_BETTER = (
    "psnr",
    "per_second",
    "samples_per_s",
    "throughput",
    "gflop",
    "peak_fraction",
    "speedup",
    "perplexity",  # a codebook's: more codes in use
    "codes_used",
    "usage_entropy",  # the categories a categorical latent uses
)
METRIC_ORDER = ("quality/", "test/", "train/", "time/")
RUN_KEYS = ["spec", "backend", "mode", "dtype"]
EXPECTED_TO_DIFFER = frozenset({"backend"})  # params that name what is compared
FRAMEWORK_SWITCHES = ("precision.switch.", "precision.timed.", "precision.replay.")
"""Prefixes of the params that hold each framework's own precision switches, read back: named
per framework, so they differ between backends by design (the ``precision`` param compares)."""
DIFF, DIFF_PERCENT = "largest_diff", "largest_diff_%"
MAX_WARNINGS = 20
MAX_SETTING_CHARS = 60


@dataclass(frozen=True)
class Comparison:
    """What ``compare`` prints: ``warnings`` (one line per setting that differs between runs
    side by side, for stderr) and ``text`` (per kind of run: the settings that differ, then the
    metrics table)."""

    text: str
    warnings: list[str]


@dataclass(frozen=True)
class Group:
    """The runs of one kind and what they compare to: ``table`` (side_by_side) and ``settings``
    (differing_settings), both keyed by KEYS_OF[kind]."""

    kind: str
    runs: Any
    table: Any
    settings: Any

    def title(self) -> str:
        """'bench cells (aebench bench): 4 run(s), the latest per spec, mode, dtype, batch_size,
        precision and backend'."""
        keys = ", ".join(KEYS_OF[self.kind])
        return f"{TITLES[self.kind]}: {len(self.runs)} run(s), the latest per {keys} and backend"


def fetch_runs(tracking_uri: Optional[str] = None, experiment: Optional[str] = None):
    """A DataFrame with one row per FINISHED run of ``experiment`` (default: every experiment
    whose name starts with 'aebench'): experiment, run_id, run_name, start_time, kind (train,
    bench or other), the tags spec, backend, mode, dtype, a cell's batch_size and precision,
    params (the run's params as a dict) and one column per metric (its last logged value)."""
    pd, client = _pandas(), _client(resolve_tracking_uri(tracking_uri))
    experiments = _experiments(client, experiment, resolve_tracking_uri(tracking_uri))
    rows = []
    for run in _search_all(client, [e.experiment_id for e in experiments]):
        tags, name = run.data.tags, _name_of(experiments, run.info.experiment_id)
        kind = run_kind(name, tags) or OTHER
        rows.append(
            {
                "experiment": name,
                "run_id": run.info.run_id,
                "run_name": run.info.run_name,
                "start_time": run.info.start_time,
                "kind": kind,
                **{key: tags.get(key, "") for key in RUN_KEYS},
                "batch_size": run.data.params.get("batch_size", "") if kind == "bench" else "",
                "precision": tags.get("precision", "") if kind == "bench" else "",
                STABILITY_TAG: tags.get(STABILITY_TAG, ""),
                UNSTABLE_REASON_TAG: tags.get(UNSTABLE_REASON_TAG, ""),
                "params": _params(client, run, kind),
                **run.data.metrics,
            }
        )
    return pd.DataFrame(rows)


def side_by_side(runs, metrics: Sequence[str] = (), keys: Sequence[str] = KEYS):
    """Backends side by side: index (*keys, metric), one value column per backend, then
    '<backend>/best' ratio columns, then the largest difference between the backends:
    'largest_diff' (max - min) and 'largest_diff_%' (that in % of the smallest magnitude).
    ``runs``: of one kind, ``keys`` its row key (KEYS_OF). ``metrics``: keep metric names
    starting with one of these prefixes (all when empty). A ratio is left empty where a value
    is not positive, a difference where one backend has the row."""
    pd = _pandas()
    if runs.empty:
        return pd.DataFrame()
    latest = latest_runs(runs, keys)
    metric_columns = [c for c in runs.columns if "/" in c and (not metrics or c.startswith(tuple(metrics)))]
    long = latest.melt(id_vars=[*keys, "backend"], value_vars=metric_columns, var_name="metric")
    long = long.dropna(subset=["value"])
    if long.empty:
        return pd.DataFrame()
    table = long.pivot_table(index=[*keys, "metric"], columns="backend", values="value", aggfunc="last")
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


def latest_runs(runs, keys: Sequence[str] = KEYS):
    """The latest run (whole row) of each row key (``keys``) and backend."""
    return runs.sort_values("start_time").drop_duplicates(subset=[*keys, "backend"], keep="last")


def differing_settings(runs, keys: Sequence[str] = KEYS):
    """The params that differ between the latest runs side by side: index (*keys, setting), one
    column per backend holding its value ('(unset)' where it has none, '(empty)' for an empty
    one, values cut to 60 characters; '' for a backend not in that group). Params that name what
    is compared (the backend) are left out."""
    pd = _pandas()
    rows = []
    for values, group in latest_runs(runs, keys).groupby(list(keys), sort=True):
        if len(group) < 2:
            continue
        params = {backend: p for backend, p in zip(group["backend"], group["params"])}
        names = sorted(
            n for n in set().union(*params.values()) - EXPECTED_TO_DIFFER if not n.startswith(FRAMEWORK_SWITCHES)
        )
        for name in names:
            settings = {backend: _setting(p.get(name)) for backend, p in sorted(params.items())}
            if len(set(settings.values())) > 1:
                rows.append({**dict(zip(keys, values)), "setting": name, **settings})
    if not rows:
        return pd.DataFrame()
    table = pd.DataFrame(rows).set_index([*keys, "setting"]).fillna("")
    table.columns.name = None
    return table


def setting_warnings(settings) -> list[str]:
    """One line per row of ``differing_settings``: 'SPEC (MODE, DTYPE): NAME differs between
    the runs compared: jax 1, torch 5' (a cell's group adds 'batch B, PRECISION'; at most
    MAX_WARNINGS, then how many more)."""
    lines = []
    for (*keys, name), row in settings.iterrows():
        values = ", ".join(f"{backend} {value}" for backend, value in row.items() if value != "")
        label = group_label(settings.index.names[:-1], keys)
        lines.append(f"{label}: {name} differs between the runs compared: {values}")
    if len(lines) > MAX_WARNINGS:
        more = len(lines) - MAX_WARNINGS + 1
        lines = lines[: MAX_WARNINGS - 1] + [f"{more} more settings differ (see the table of settings)"]
    return lines


def unstable_warnings(runs) -> list[str]:
    """One line per latest bench cell whose step time is unstable (aebench.bench.stability):
    its time figures and their ratios are not firm."""
    latest = latest_runs(runs, BENCH_KEYS)
    lines = []
    for _, run in latest[latest[STABILITY_TAG] == "unstable"].iterrows():
        label = group_label(BENCH_KEYS, [run[k] for k in BENCH_KEYS])
        reason = f" ({run[UNSTABLE_REASON_TAG]})" if run[UNSTABLE_REASON_TAG] else ""
        lines.append(f"{label}: {run['backend']}'s step time is UNSTABLE{reason}; its time/ figures are not firm")
    return lines


def group_label(names: Sequence[str], values: Sequence[object]) -> str:
    """'SPEC (MODE, DTYPE)' for a row group; a cell's adds 'batch B, PRECISION'."""
    named = dict(zip(names, values))
    rest = [f"batch {v}" if n == "batch_size" else str(v) for n, v in named.items() if n != "spec" and v != ""]
    return f"{named.get('spec', '')} ({', '.join(rest)})"


def to_markdown(table) -> str:
    """The table as a GitHub-flavoured markdown table (no extra dependency)."""
    frame = table.reset_index()
    header = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for _, row in frame.iterrows():
        lines.append("| " + " | ".join(_cell(v, _format_of(c)) for c, v in row.items()) + " |")
    return "\n".join(lines) + "\n"


def to_text(table) -> str:
    """The table as aligned text: values to 4 significant digits, ratios to 3 decimals, percentages to 1."""
    formatters = {c: (lambda v, form=_format_of(c): _cell(v, form)) for c in table.columns}
    return table.to_string(formatters=formatters, na_rep="")


def compare(
    tracking_uri: Optional[str] = None,
    experiment: Optional[str] = None,
    metrics: Sequence[str] = (),
    csv: Optional[Path] = None,
    markdown: Optional[Path] = None,
    kind: Optional[str] = None,
) -> Comparison:
    """Fetch, group by kind (only ``kind``'s runs where given: train or bench), pivot each group,
    save the CSV (every group's metrics in one table, its first column the kind) and markdown
    (per group: settings that differ, then the metrics) files asked for, and return what to print."""
    uri = resolve_tracking_uri(tracking_uri)
    runs = fetch_runs(tracking_uri, experiment)
    where = experiment or "experiments named aebench*"
    if runs.empty:
        raise AebenchError(
            f"no finished runs in {where} at {redact(uri)}; train or log some first (aebench train, aebench log)"
        )
    if kind:
        runs = _of_kind(runs, kind, f"{where} at {redact(uri)}")
    groups = comparison_groups(runs, metrics)
    if not groups:
        raise AebenchError(
            f"no metric starts with {', '.join(metrics)}; the runs have: "
            f"{', '.join(sorted(c for c in runs.columns if '/' in c))}"
        )
    if csv:
        joined_tables(groups).to_csv(csv, index=False)
    if markdown:
        Path(markdown).write_text("\n".join(_markdown_section(g) for g in groups))
    head = (
        f"{len(runs)} finished run(s) in {where} at {redact(uri)}; training runs and bench cells are compared "
        "apart; <backend>/best: 1.00 is the best backend; "
        f"{DIFF}: the largest difference between the backends, {DIFF_PERCENT}: that in % of the smaller value"
    )
    sections = [
        f"{g.title()}\n" + _settings_section(g.settings, lambda t: t.to_string() + "\n") + to_text(g.table)
        for g in groups
    ]
    warnings = [line for g in groups if not g.settings.empty for line in setting_warnings(g.settings)]
    warnings += [line for g in groups if g.kind == "bench" for line in unstable_warnings(g.runs)]
    return Comparison(head + "\n\n" + "\n\n".join(sections), warnings)


def comparison_groups(runs, metrics: Sequence[str] = ()) -> list[Group]:
    """One Group per kind of run present (train, then bench, then other), each pivoted on its own
    row key; a kind none of whose metrics starts with one of ``metrics`` is left out."""
    groups = []
    for kind in (*KINDS, OTHER):
        of_kind = runs[runs["kind"] == kind]
        table = side_by_side(of_kind, metrics, KEYS_OF[kind])
        if not table.empty:
            groups.append(Group(kind, of_kind, table, differing_settings(of_kind, KEYS_OF[kind])))
    return groups


def joined_tables(groups: Sequence[Group]):
    """The groups' metric tables as one flat table: kind, every group's key columns ('' where a
    group has no such key), metric, the backends' values, their ratios, the differences."""
    pd = _pandas()
    frame = pd.concat([g.table.reset_index().assign(kind=g.kind) for g in groups], ignore_index=True)
    keys = list(dict.fromkeys(key for g in groups for key in KEYS_OF[g.kind]))
    backends = sorted({c for g in groups for c in g.table.columns if _format_of(c) == "value" and c != DIFF})
    frame[keys] = frame[keys].fillna("")
    return frame[["kind", *keys, "metric", *backends, *(f"{b}/best" for b in backends), DIFF, DIFF_PERCENT]]


def _of_kind(runs, kind: str, where: str):
    if kind not in KINDS:
        raise AebenchError(f"--kind: {kind!r} is not one of {', '.join(KINDS)}")
    found = runs[runs["kind"] == kind]
    if found.empty:
        present = ", ".join(f"{k} ({n})" for k, n in runs["kind"].value_counts().sort_index().items())
        raise AebenchError(f"--kind {kind}: no finished {TITLES[kind]} in {where}; there are: {present}")
    return found


def _params(client: Any, run: Any, kind: str) -> dict[str, str]:
    """The run's params; for a cell logged before steps_run was a param, steps_run from its loss curve."""
    params = dict(run.data.params)
    if kind == "bench" and STEPS_RUN not in params and LOSS_METRIC in run.data.metrics:
        curve = client.get_metric_history(run.info.run_id, LOSS_METRIC)
        params[STEPS_RUN] = str(max(point.step for point in curve))
    return params


def _markdown_section(group: Group) -> str:
    return f"## {group.title()}\n\n" + _settings_section(group.settings, to_markdown) + to_markdown(group.table)


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


def _format_of(column: object) -> str:
    name = str(column)
    return "ratio" if name.endswith("/best") else "percent" if name == DIFF_PERCENT else "value"


def _cell(value: object, form: str = "value") -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        if form == "ratio":
            return f"{value:.3f}"
        if form == "percent":
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
