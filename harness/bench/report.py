"""``aebench report``: a campaign's table as markdown and HTML, with matplotlib plots.

Per spec and setting (batch size, dtype, precision): a table of backends and modes with the
ratio of each to the fastest, a bar chart of samples/s with error bars (each cell's
interquartile range of block step times, as samples/s), and the loss curves as differences:
each cell's loss minus a reference cell's loss at the same steps (the reference: the first
measured cell of the first backend), with the reference's own curve in a small panel below.
The cells of one spec share seed, weights, batches and noise, so the curves would lie on top
of each other and hide one another when overlaid; their differences show what separates
them. Every plot colours a backend the same way. pytest-benchmark JSON files
(``--benchmark-json``) get a table of their own.

Before a campaign folder is read, its cells.csv is checked against the cell records and
rebuilt from them where it disagrees (aebench.bench.store); the caller is told in one line.

Nothing from a record or a table becomes part of a path unless it is a name
(aebench.safe_files.is_name): a record whose naming fields are not names is damaged (kept aside
when the table is rebuilt), a row of a table left as it is (a running campaign holds the
folder) whose fields are not names is left out with one line, and every plot's file name is
checked before it is written. The report, its plots and its plots/ folder are written without
following links. Files in cells/ that aebench did not write are left as they are and named.
"""

from __future__ import annotations

import html
import io
import json
import os
import textwrap
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from aebench.bench.lock import CampaignBusy, campaign_lock  # noqa: E402
from aebench.bench.stability import row_stability  # noqa: E402
from aebench.bench.store import ResultStore  # noqa: E402
from aebench.errors import AebenchError  # noqa: E402
from aebench.safe_files import is_name, own_folder, read_json, write_bytes, write_text  # noqa: E402

SETTING = ["batch_size", "dtype", "precision"]
NAMED_COLUMNS = ["spec", "backend", "mode", *SETTING]  # end up in plot file names and titles
PALETTE = [f"C{i}" for i in range(10)]  # matplotlib's default cycle (tab10)
MODE_LINES = {"eager": "-", "compiled": "--", "fast": ":"}


@dataclass
class Section:
    """One heading of the report: a table, notes and figures (paths relative to the report)."""

    title: str
    table: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)
    answer: str = ""


def write_report(sources: list[Path], out: Path, say: Callable[[str], None] = lambda line: None) -> tuple[Path, Path]:
    """report.md and report.html (and plots/) in ``out`` from campaign folders and
    pytest-benchmark JSON files; returns the two paths. A campaign's cells.csv that does not
    match its records is rebuilt first; ``say`` gets the line saying so (and the line naming
    rows left out, or files in cells/ that aebench did not write)."""
    stores = {source: campaign_store(source) for source in sources if source.is_dir()}
    for store in stores.values():
        repaired = repair_for_report(store)
        if repaired:
            say(repaired)
    tables = {source: named_rows(store.table(), store, say) for source, store in stores.items()}
    colours = backend_colours(backend for table in tables.values() for backend in table["backend"])
    out.mkdir(parents=True, exist_ok=True)
    sections, header = [], []
    names = campaign_names(list(stores))
    for source in sources:
        if source in stores:
            header.append(environment_line(source))
            shown = names[source] if len(stores) > 1 else ""
            sections += campaign_sections(stores[source], tables[source], out, colours, names[source], shown)
        elif source.is_file():
            sections += benchmark_json_sections(source)
        else:
            raise AebenchError(f"{source}: no such campaign folder or benchmark JSON file")
    md, page = out / "report.md", out / "report.html"
    write_text(md, to_markdown(header, sections))
    write_text(page, to_html(header, sections))
    return md, page


def campaign_store(folder: Path) -> ResultStore:
    """The ResultStore of a campaign folder; one line when the folder is not one."""
    store = ResultStore(folder)
    if not (os.path.lexists(store.table_path) or store.cells_folder.is_dir()):
        raise AebenchError(
            f"{folder}: no cells.csv here; give a campaign folder (results/NAME) or a pytest-benchmark JSON file"
        )
    return store


def repair_for_report(store: ResultStore) -> str:
    """Rebuild a campaign's cells.csv from its records where they disagree; the line saying so.
    A folder a running campaign holds is left to it (it repaired the table when it started);
    a damaged table in a folder that cannot be written is one error line. Files in cells/ that
    aebench did not write are left as they are; the line names them."""
    records = store.records()
    problems = store.problems(records)
    if not problems:
        return records.foreign_note()
    try:
        with campaign_lock(store.folder):
            return store.repair()
    except CampaignBusy:
        return ""
    except OSError as exc:
        raise AebenchError(
            f"{store.table_path}: does not match the cell records ({problems[0]}) and cannot be rebuilt "
            f"here ({exc.strerror or exc}); copy the folder somewhere writable and report on the copy"
        ) from None


def named_rows(table: pd.DataFrame, store: ResultStore, say: Callable[[str], None]) -> pd.DataFrame:
    """The rows of a campaign's table whose naming fields are names (a table that could not be
    rebuilt may hold others); ``say`` gets one line on the rows left out."""
    named = pd.Series([all(is_name(str(row[c])) for c in NAMED_COLUMNS) for _, row in table.iterrows()], dtype=bool)
    if not named.all():
        keys = ", ".join(repr(str(key))[:60] for key in table.loc[~named.to_numpy(), "key"][:3])
        say(f"{store.table_path}: left out {int((~named).sum())} rows whose fields are not names (damaged): {keys}")
    return table[named.to_numpy()].reset_index(drop=True)


def plot_file(out: Path, *parts: object) -> Path:
    """``out/plots/<parts joined by '-'>.png``, the folder made; AebenchError when that is not a name."""
    name = "-".join(str(part) for part in parts) + ".png"
    if not is_name(name):
        raise AebenchError(f"{out}: a plot would be named {name[:80]!r}, which is not a file name; nothing written")
    return own_folder(out / "plots") / name


def backend_colours(backends: Iterable[str]) -> dict[str, str]:
    """One colour per backend, the same in every plot of a report (by sorted name)."""
    names = sorted({str(b) for b in backends})
    return {name: matplotlib.colors.to_hex(PALETTE[i % len(PALETTE)]) for i, name in enumerate(names)}


def environment_line(folder: Path) -> str:
    """One line on where and with what a campaign ran."""
    path = folder / "environment.json"
    if not path.is_file():
        return f"{folder.name}: no environment.json"
    try:
        env = read_json(path)
    except (ValueError, OSError, AebenchError) as exc:
        return f"{folder.name}: environment.json not readable ({str(exc)[:200]})"
    if not isinstance(env, dict) or not isinstance(env.get("versions", {}), dict):
        return f"{folder.name}: environment.json is not one aebench wrote"
    versions = ", ".join(f"{k} {v}" for k, v in sorted(env.get("versions", {}).items()))
    return (
        f"Campaign **{env.get('campaign', folder.name)}**, {env.get('time', '')}: CPU {env.get('cpu')} "
        f"({env.get('cpu_usable')} usable), GPU {env.get('gpu')}, driver {env.get('driver')}; "
        f"aebench {env.get('aebench')} ({env.get('git_commit')}); {versions}."
    )


def campaign_names(folders: list[Path]) -> dict[Path, str]:
    """A distinct name per campaign folder: its folder name, with its parent's where two share
    one, and a number where even that is shared."""
    shared = {f.name for f in folders if sum(g.name == f.name for g in folders) > 1}
    names = {f: f"{f.parent.name}-{f.name}" if f.name in shared else f.name for f in folders}
    counts = {name: list(names.values()).count(name) for name in names.values()}
    return {f: f"{name}-{i + 1}" if counts[name] > 1 else name for i, (f, name) in enumerate(names.items())}


def campaign_sections(
    store: ResultStore, table: pd.DataFrame, out: Path, colours: dict[str, str], slug_prefix: str, campaign: str = ""
) -> list[Section]:
    """A section per spec and setting, with its one-line answer, table, notes and plots. Plot
    files begin with ``slug_prefix`` (the campaign), so campaigns in one report never share a
    file; ``campaign``, when given, is named in every title (reports over several campaigns)."""
    sections = []
    for spec, rows in table.groupby("spec", sort=True):
        for setting, group in rows.groupby(SETTING, dropna=False, sort=True):
            name = f"{spec}, batch {setting[0]}, {setting[1]}, {setting[2]}" + (f" ({campaign})" if campaign else "")
            section = Section(name, speed_table(group), failure_notes(group) + unstable_notes(group))
            section.answer = answer_line(group)
            ok = group[group["status"] == "ok"]
            if len(ok):
                figure = samples_figure(ok, name, colours)
                section.figures.append(save(figure, plot_file(out, slug_prefix, spec, *setting, "samples"), out))
                curves = {label(r): loss_curve(store.record(r["key"])) for _, r in ok.iterrows()}
                styles = {label(r): line_style(r, colours) for _, r in ok.iterrows()}
                figure = loss_figure(curves, label(ok.iloc[0]), styles, name)
                section.figures.append(save(figure, plot_file(out, slug_prefix, spec, *setting, "loss"), out))
                section.notes.append(curve_agreement(curves))
            sections.append(section)
    return sections


def label(row: pd.Series) -> str:
    """A cell's name in a section: backend and mode."""
    return f"{row['backend']} {row['mode']}"


def line_style(row: pd.Series, colours: dict[str, str]) -> tuple[str, str]:
    """A cell's line: its backend's colour, its mode's dash."""
    return colours.get(row["backend"], "black"), MODE_LINES.get(row["mode"], "-.")


def speed_table(group: pd.DataFrame) -> pd.DataFrame:
    """Backends and modes, fastest first, with the ratio of each step time to the fastest firm
    cell; an unstable cell's ratio is in parentheses and its stability says why it is not ranked."""
    ok = group[group["status"] == "ok"].sort_values("median_step_ms")
    best = fastest_firm_ms(ok)
    rows = []
    for _, r in pd.concat([ok, group[group["status"] != "ok"]]).iterrows():
        if r["status"] != "ok":
            rows.append({"backend": r["backend"], "mode": r["mode"], "status": r["status"]})
            continue
        stability = row_stability(r)
        ratio = f"{r['median_step_ms'] / best:.2f}" if best == best else ""
        rows.append(
            {
                "backend": r["backend"],
                "mode": r["mode"],
                "status": "ok" if stability.firm else "ok, UNSTABLE",
                "step ms (median)": f"{r['median_step_ms']:.4g}",
                "interval ms": stability.interval_text(),
                "x fastest": ratio if stability.firm else f"({ratio})" if ratio else "",
                "samples/s": f"{r['samples_per_s']:,.0f}",
                "CV %": f"{100 * r['cv']:.1f}",
                "compile s": compile_text(r["compile_s"]),
                "GFLOP/s": f"{r['gflops_per_s']:.1f}",
                "% of peak": f"{100 * r['peak_fraction']:.1f}",
                "peak MB": f"{r['peak_memory_mb']:.0f}",
                "verified": f"{r['verify_max_rel_diff']:.1e}",
            }
        )
    return pd.DataFrame(rows).fillna("")


def fastest_firm_ms(ok: pd.DataFrame) -> float:
    """The median step time of the fastest firm cell (NaN when no cell is firm)."""
    firm = [r["median_step_ms"] for _, r in ok.iterrows() if row_stability(r).firm]
    return float(min(firm)) if firm else float("nan")


def compile_text(compile_s: float, unit: str = "") -> str:
    """The first call's extra cost in seconds (followed by ``unit``), or 'below resolution' where
    the first call was no slower than a steady one (the difference of two noisy times came out
    negative)."""
    if compile_s != compile_s:
        return ""
    return f"{compile_s:.2f}{unit}" if compile_s >= 0 else "below resolution"


def answer_line(group: pd.DataFrame) -> str:
    """The section's answer in one line: the fastest firm backend and mode, the factor to each
    other cell, whether the timed steps were the equivalence-checked step, and firm or not."""
    ok = group[group["status"] == "ok"].sort_values("median_step_ms")
    if ok.empty:
        return "No cell was measured (see the notes)."
    verdicts = {label(r): row_stability(r) for _, r in ok.iterrows()}
    firm = [r for _, r in ok.iterrows() if verdicts[label(r)].firm]
    unstable = [label(r) for _, r in ok.iterrows() if not verdicts[label(r)].firm]
    if not firm:
        return (
            f"No firm result: every cell is unstable ({', '.join(unstable)}); "
            f"{equivalence_phrase(ok)}. Measure again on a quieter machine."
        )
    best = firm[0]
    ceiling = verdicts[label(best)].interval.high * 1e3
    tied = [label(r) for r in firm[1:] if verdicts[label(r)].interval.low * 1e3 <= ceiling]
    tie = f" (not separable from {', '.join(tied)}: their intervals overlap)" if tied else ""
    others = [
        f"{label(r)} {r['median_step_ms'] / best['median_step_ms']:.2f}x" + ("" if verdicts[label(r)].firm else "?")
        for _, r in ok.iterrows()
        if r["key"] != best["key"]
    ]
    factors = f"; step time of the others relative to it: {', '.join(others)}" if others else ""
    verdict = "firm" if not unstable else f"unstable cells, marked ?, are not ranked: {', '.join(unstable)}"
    return (
        f"Fastest: {label(best)}, {best['median_step_ms']:.4g} ms/step{tie}{factors}; "
        f"{equivalence_phrase(ok)}; {verdict}."
    )


def equivalence_phrase(ok: pd.DataFrame) -> str:
    """Whether every measured cell timed the equivalence-checked training step."""
    diffs = pd.to_numeric(ok["verify_max_rel_diff"], errors="coerce")
    if diffs.isna().all():
        return "not checked against the trainer (--no-verify)"
    if diffs.isna().any():
        return f"equivalent where checked ({int(diffs.notna().sum())} of {len(ok)} cells)"
    return f"equivalent (first steps match the checked trainer within {diffs.max():.1e})"


def unstable_notes(group: pd.DataFrame) -> list[str]:
    """One note per unstable cell, with why."""
    notes = []
    for _, r in group[group["status"] == "ok"].iterrows():
        stability = row_stability(r)
        if not stability.firm:
            notes.append(f"{label(r)}: unstable, not ranked: {stability.reason()}")
    return notes


def failure_notes(group: pd.DataFrame) -> list[str]:
    """One note per cell that was not measured, with the reason."""
    return [f"{label(r)}: {r['status']}: {r['reason']}" for _, r in group.iterrows() if r["status"] != "ok"]


def samples_interval(row: pd.Series) -> tuple[float, float]:
    """The samples/s of a cell's quartile block step times (Q3's pace, Q1's pace): its IQR
    as samples/s. From the block times when the row has them, else median +- IQR / 2."""
    blocks = json.loads(row["block_step_ms"]) if isinstance(row.get("block_step_ms"), str) else []
    if blocks:
        q1, q3 = np.percentile(blocks, [25, 75])
    else:
        q1 = row["median_step_ms"] - row["iqr_step_ms"] / 2
        q3 = row["median_step_ms"] + row["iqr_step_ms"] / 2
    samples = float(row["batch_size"]) * 1e3
    return samples / q3, samples / q1 if q1 > 0 else np.inf


def samples_figure(ok: pd.DataFrame, title: str, colours: dict[str, str]) -> Figure:
    """Horizontal bars of samples/s per cell, coloured by backend, with the IQR as error bars."""
    ok = ok.sort_values("samples_per_s")
    intervals = np.array([samples_interval(r) for _, r in ok.iterrows()])
    values = ok["samples_per_s"].to_numpy(dtype=float)
    errors = np.vstack([values - intervals[:, 0], np.minimum(intervals[:, 1], 10 * values) - values])
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(ok) + 1.6))
    bar_colours = [colours.get(b, "black") for b in ok["backend"]]
    firm = [row_stability(r).firm for _, r in ok.iterrows()]
    names = [label(r) + ("" if f else " (unstable)") for (_, r), f in zip(ok.iterrows(), firm)]
    bars = ax.barh(names, values, color=bar_colours, xerr=errors.clip(min=0), capsize=3)
    for bar, is_firm in zip(bars, firm):
        if not is_firm:
            bar.set_hatch("//")
            bar.set_alpha(0.5)
    if values.max() > 100 * values.min():
        ax.set_xscale("log")
    shown = list(dict.fromkeys(ok["backend"]))
    ax.legend(handles=[Patch(color=colours.get(b, "black"), label=b) for b in shown], fontsize=8, loc="lower right")
    ax.set_xlabel("training samples/s (median of blocks; bars: interquartile range)")
    ax.set_title(fitted(title), fontsize=10)
    return fig


TITLE_CHARACTERS = 80  # a 7-inch figure holds about this many characters of a 10-point title per line


def fitted(title: str) -> str:
    """A title wrapped to lines that fit the figure's width."""
    return "\n".join(textwrap.wrap(title, TITLE_CHARACTERS)) or title


def loss_curve(record: dict) -> pd.Series:
    """A cell's total loss by step number (every warm-up step, then each timed block's last)."""
    return pd.Series(record.get("losses", []), index=record.get("loss_steps", []), dtype=float)


def loss_differences(curves: dict[str, pd.Series], reference: str) -> dict[str, pd.Series]:
    """Every other curve minus the reference's, at the steps both recorded."""
    base = curves[reference]
    differences = {}
    for name, curve in curves.items():
        if name != reference:
            both = pd.concat([curve, base], axis=1, join="inner").dropna()
            differences[name] = both.iloc[:, 0] - both.iloc[:, 1]
    return differences


def loss_figure(curves: dict[str, pd.Series], reference: str, styles: dict[str, tuple[str, str]], title: str) -> Figure:
    """Top: each cell's loss minus the reference cell's at the same steps (0: the same loss);
    bottom, smaller: the reference's own curve."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    colour, _ = styles.get(reference, ("black", "-"))
    top.axhline(0.0, color=colour, linewidth=1.5, label=f"{reference} (reference)")
    for name, difference in loss_differences(curves, reference).items():
        line_colour, dash = styles.get(name, ("black", "-"))
        top.plot(
            difference.index,
            difference.values,
            color=line_colour,
            linestyle=dash,
            marker=".",
            markersize=3,
            linewidth=1,
            label=name,
        )
    top.set_ylabel("loss - reference loss")
    top.set_title(fitted(f"{title}: same seed, weights and batches; difference from {reference}"), fontsize=10)
    top.legend(fontsize=8)
    base = curves[reference]
    bottom.plot(base.index, base.values, color=colour, linewidth=1)
    if len(base) and (base > 0).all():
        bottom.set_yscale("log")
    bottom.set_ylabel("reference\nloss", fontsize=8)
    bottom.set_xlabel("training step")
    return fig


def curve_agreement(curves: dict[str, pd.Series]) -> str:
    """The largest relative spread of the curves over the steps they all recorded."""
    table = pd.concat(curves.values(), axis=1, join="inner")
    if len(curves) < 2 or table.empty:
        return "loss curves: fewer than two cells share a step, nothing to compare"
    spread = (table.max(axis=1) - table.min(axis=1)) / table.abs().min(axis=1)
    return (
        f"loss curves of {len(curves)} cells over the {len(table)} steps they share (up to step "
        f"{table.index.max()}): largest relative spread {spread.max():.2e} (step {spread.idxmax()})"
    )


def save(fig: Figure, path: Path, out: Path) -> str:
    """Write a figure as PNG (never through a link) and close it; its path relative to the report."""
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=110)
    plt.close(fig)
    write_bytes(path, png.getvalue())
    return str(path.relative_to(out))


def benchmark_json_sections(path: Path) -> list[Section]:
    """A table per spec from a pytest-benchmark ``--benchmark-json`` file."""
    try:
        data = read_json(path)
        benchmarks = data["benchmarks"]
    except (ValueError, KeyError) as exc:
        raise AebenchError(f"{path}: not a pytest-benchmark JSON file ({exc})") from None
    machine = data.get("machine_info", {})
    rows = []
    for bench in benchmarks:
        info, stats = bench.get("extra_info", {}), bench["stats"]
        rows.append(
            {
                "spec": info.get("spec", bench["name"]),
                "backend": info.get("backend", ""),
                "mode": info.get("mode", ""),
                "batch": info.get("batch_size"),
                "median": stats["median"],
                "iqr": stats["iqr"],
                "rounds": stats["rounds"],
            }
        )
    table = pd.DataFrame(rows)
    frameworks = machine.get("aebench", {})
    versions = ", ".join(f"{k} {v}" for k, v in sorted(frameworks.get("versions", {}).items()))
    cpu = machine.get("cpu", {}).get("brand_raw", "?")
    note = (
        f"pytest-benchmark {path.name} ({data.get('datetime', '')}): CPU {cpu}, "
        f"GPU {frameworks.get('gpu', '?')}; {versions}; one synced step per round"
    )
    sections = []
    for spec, group in table.groupby("spec", sort=True):
        group = group.sort_values("median")
        best = group["median"].min()
        shown = pd.DataFrame(
            {
                "backend": group["backend"],
                "mode": group["mode"],
                "batch": group["batch"],
                "step ms (median)": [f"{m * 1e3:.4g}" for m in group["median"]],
                "IQR ms": [f"{i * 1e3:.2g}" for i in group["iqr"]],
                "x fastest": [f"{m / best:.2f}" for m in group["median"]],
                "samples/s": [f"{b / m:,.0f}" if b else "" for b, m in zip(group["batch"], group["median"])],
                "rounds": group["rounds"],
            }
        )
        sections.append(Section(f"pytest-benchmark: {spec}", shown, [note]))
    return sections


def markdown_table(table: pd.DataFrame) -> str:
    """A table as GitHub markdown."""
    if table.empty:
        return "(no rows)"
    cells = [[str(v) for v in row] for row in table.itertuples(index=False)]
    lines = ["| " + " | ".join(map(str, table.columns)) + " |", "|" + "---|" * len(table.columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])


def to_markdown(header: list[str], sections: list[Section]) -> str:
    """The whole report as markdown."""
    parts = ["# aebench report", "", *header, "", FIGURES_NOTE, ""]
    for s in sections:
        parts += [f"## {s.title}", ""] + ([f"**{s.answer}**", ""] if s.answer else [])
        parts += [markdown_table(s.table), ""]
        parts += [f"- {note}" for note in s.notes] + ([""] if s.notes else [])
        parts += [f"![{s.title}]({fig})" for fig in s.figures] + [""]
    return "\n".join(parts)


def to_html(header: list[str], sections: list[Section]) -> str:
    """The whole report as one HTML page."""
    body = [
        "<h1>aebench report</h1>",
        *[f"<p>{html.escape(h).replace('**', '')}</p>" for h in header],
        f"<p>{html.escape(FIGURES_NOTE)}</p>",
    ]
    for s in sections:
        body += [f"<h2>{html.escape(s.title)}</h2>"] + ([f"<p><b>{html.escape(s.answer)}</b></p>"] if s.answer else [])
        body += [s.table.to_html(index=False, border=0, classes="t")]
        body += [f"<ul>{''.join(f'<li>{html.escape(n)}</li>' for n in s.notes)}</ul>"] if s.notes else []
        body += [f'<img src="{html.escape(fig)}" alt="{html.escape(s.title)}">' for fig in s.figures]
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:auto} table.t{border-collapse:collapse}"
        " .t td,.t th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:right}"
    )
    head = f"<head><meta charset='utf-8'><title>aebench report</title><style>{style}</style></head>"
    return f"<!doctype html><html>{head}<body>{''.join(body)}</body></html>\n"


FIGURES_NOTE = (
    "Step time: median over timed blocks, each block synced once at its end; interval: a 95% "
    "distribution-free confidence interval of that median (its coverage in parentheses where too few "
    "blocks reach 95%); a cell with fewer than 5 blocks, or whose interval is wider than 10% of its median "
    "after extra blocks is UNSTABLE and not ranked (aebench.bench.stability); x fastest is against the "
    "fastest firm cell; compile s = first call minus a steady-state call ('below resolution' when the "
    "first call was no slower); GFLOP/s counts the layers' multiply-adds (aebench.bench.flops); "
    "% of peak is against a large matmul in the same framework on the same device; verified = "
    "largest relative difference of the first timed steps' losses from the equivalence-checked "
    "trainer."
)
