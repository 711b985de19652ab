"""``aebench report``: a campaign's table as markdown and HTML, with matplotlib plots.

Per spec and setting (batch size, dtype, precision): a table of backends and modes with the
ratio of each to the fastest, a bar chart of samples/s, and the loss curves of every cell
overlaid on one axis (the cells of one spec share seed, weights, batches and noise, so the
curves lie on top of each other unless a framework computes something else). pytest-benchmark
JSON files (``--benchmark-json``) get a table of their own.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from aebench.bench.campaign import ResultStore  # noqa: E402
from aebench.errors import AebenchError  # noqa: E402

SETTING = ["batch_size", "dtype", "precision"]


@dataclass
class Section:
    """One heading of the report: a table, notes and figures (paths relative to the report)."""

    title: str
    table: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)


def write_report(sources: list[Path], out: Path) -> tuple[Path, Path]:
    """report.md and report.html (and plots/) in ``out`` from campaign folders and
    pytest-benchmark JSON files; returns the two paths."""
    out.mkdir(parents=True, exist_ok=True)
    sections, header = [], []
    for source in sources:
        if source.is_dir():
            store = ResultStore(source)
            if not store.table_path.is_file():
                raise AebenchError(
                    f"{source}: no cells.csv here; give a campaign folder (results/NAME) "
                    "or a pytest-benchmark JSON file"
                )
            header.append(environment_line(source))
            sections += campaign_sections(store, out)
        elif source.is_file():
            sections += benchmark_json_sections(source)
        else:
            raise AebenchError(f"{source}: no such campaign folder or benchmark JSON file")
    md, page = out / "report.md", out / "report.html"
    md.write_text(to_markdown(header, sections))
    page.write_text(to_html(header, sections))
    return md, page


def environment_line(folder: Path) -> str:
    path = folder / "environment.json"
    if not path.is_file():
        return f"{folder.name}: no environment.json"
    env = json.loads(path.read_text())
    versions = ", ".join(f"{k} {v}" for k, v in sorted(env.get("versions", {}).items()))
    return (
        f"Campaign **{env.get('campaign', folder.name)}**, {env.get('time', '')}: CPU {env.get('cpu')} "
        f"({env.get('cpu_usable')} usable), GPU {env.get('gpu')}, driver {env.get('driver')}; "
        f"aebench {env.get('aebench')} ({env.get('git_commit')}); {versions}."
    )


def campaign_sections(store: ResultStore, out: Path) -> list[Section]:
    table = store.table()
    sections = []
    for spec, rows in table.groupby("spec", sort=True):
        for setting, group in rows.groupby(SETTING, dropna=False, sort=True):
            name = f"{spec}, batch {setting[0]}, {setting[1]}, {setting[2]}"
            slug = "-".join(str(s) for s in (spec, *setting))
            section = Section(name, speed_table(group), failure_notes(group))
            ok = group[group["status"] == "ok"]
            if len(ok):
                section.figures.append(samples_plot(ok, name, out / "plots" / f"{slug}-samples.png", out))
                curves = {label(r): loss_curve(store.record(r["key"])) for _, r in ok.iterrows()}
                section.figures.append(loss_plot(curves, name, out / "plots" / f"{slug}-loss.png", out))
                section.notes.append(curve_agreement(curves))
            sections.append(section)
    return sections


def label(row: pd.Series) -> str:
    return f"{row['backend']} {row['mode']}"


def speed_table(group: pd.DataFrame) -> pd.DataFrame:
    """Backends and modes, fastest first, with the ratio of each step time to the fastest."""
    ok = group[group["status"] == "ok"].sort_values("median_step_ms")
    best = ok["median_step_ms"].min() if len(ok) else np.nan
    rows = []
    for _, r in pd.concat([ok, group[group["status"] != "ok"]]).iterrows():
        if r["status"] != "ok":
            rows.append({"backend": r["backend"], "mode": r["mode"], "status": r["status"]})
            continue
        rows.append(
            {
                "backend": r["backend"],
                "mode": r["mode"],
                "status": "ok",
                "step ms (median)": f"{r['median_step_ms']:.4g}",
                "IQR ms": f"{r['iqr_step_ms']:.2g}",
                "x fastest": f"{r['median_step_ms'] / best:.2f}",
                "samples/s": f"{r['samples_per_s']:,.0f}",
                "CV %": f"{100 * r['cv']:.1f}",
                "compile s": f"{r['compile_s']:.2f}",
                "GFLOP/s": f"{r['gflops_per_s']:.1f}",
                "% of peak": f"{100 * r['peak_fraction']:.1f}",
                "peak MB": f"{r['peak_memory_mb']:.0f}",
                "verified": f"{r['verify_max_rel_diff']:.1e}",
            }
        )
    return pd.DataFrame(rows).fillna("")


def failure_notes(group: pd.DataFrame) -> list[str]:
    return [f"{label(r)}: {r['status']}: {r['reason']}" for _, r in group.iterrows() if r["status"] != "ok"]


def samples_plot(ok: pd.DataFrame, title: str, path: Path, out: Path) -> str:
    ok = ok.sort_values("samples_per_s")
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(ok) + 1.2))
    ax.barh([label(r) for _, r in ok.iterrows()], ok["samples_per_s"], color="#4c72b0")
    if ok["samples_per_s"].max() > 100 * ok["samples_per_s"].min():
        ax.set_xscale("log")
    ax.set_xlabel("training samples/s (median of blocks)")
    ax.set_title(title, fontsize=10)
    return save(fig, path, out)


def loss_curve(record: dict) -> pd.Series:
    """A cell's total loss by step number (every warm-up step, then each timed block's last)."""
    return pd.Series(record.get("losses", []), index=record.get("loss_steps", []), dtype=float)


def loss_plot(curves: dict[str, pd.Series], title: str, path: Path, out: Path) -> str:
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, curve in curves.items():
        ax.plot(curve.index, curve.values, label=name, linewidth=1, marker=".", markersize=3)
    ax.set_xlabel("training step")
    ax.set_ylabel("total loss")
    ax.set_yscale("log")
    ax.set_title(f"{title}: same seed, weights and batches", fontsize=10)
    ax.legend(fontsize=8)
    return save(fig, path, out)


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


def save(fig, path: Path, out: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path.relative_to(out))


def benchmark_json_sections(path: Path) -> list[Section]:
    """A table per spec from a pytest-benchmark ``--benchmark-json`` file."""
    try:
        data = json.loads(path.read_text())
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
    if table.empty:
        return "(no rows)"
    cells = [[str(v) for v in row] for row in table.itertuples(index=False)]
    lines = ["| " + " | ".join(map(str, table.columns)) + " |", "|" + "---|" * len(table.columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])


def to_markdown(header: list[str], sections: list[Section]) -> str:
    parts = ["# aebench report", "", *header, "", FIGURES_NOTE, ""]
    for s in sections:
        parts += [f"## {s.title}", "", markdown_table(s.table), ""]
        parts += [f"- {note}" for note in s.notes] + ([""] if s.notes else [])
        parts += [f"![{s.title}]({fig})" for fig in s.figures] + [""]
    return "\n".join(parts)


def to_html(header: list[str], sections: list[Section]) -> str:
    body = [
        "<h1>aebench report</h1>",
        *[f"<p>{html.escape(h).replace('**', '')}</p>" for h in header],
        f"<p>{html.escape(FIGURES_NOTE)}</p>",
    ]
    for s in sections:
        body += [f"<h2>{html.escape(s.title)}</h2>", s.table.to_html(index=False, border=0, classes="t")]
        body += [f"<ul>{''.join(f'<li>{html.escape(n)}</li>' for n in s.notes)}</ul>"] if s.notes else []
        body += [f'<img src="{html.escape(fig)}" alt="{html.escape(s.title)}">' for fig in s.figures]
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:auto} table.t{border-collapse:collapse}"
        " .t td,.t th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:right}"
    )
    head = f"<head><meta charset='utf-8'><title>aebench report</title><style>{style}</style></head>"
    return f"<!doctype html><html>{head}<body>{''.join(body)}</body></html>\n"


FIGURES_NOTE = (
    "Step time: median over timed blocks, each block synced once at its end; compile s = first "
    "call minus a steady-state call; GFLOP/s counts the layers' multiply-adds (aebench.bench.flops); "
    "% of peak is against a large matmul in the same framework on the same device; verified = "
    "largest relative difference of the first timed steps' losses from the equivalence-checked "
    "trainer."
)
