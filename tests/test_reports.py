"""Reports stay current and readable (issue 17, items 4 and 5): the committed reports are what
``aebench report`` writes today, plot titles fit their figures, and nothing the project ships
names a path of the machines it is developed on."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import pytest
from test_figures import assert_nothing_clipped

from aebench.bench.report import loss_figure, samples_figure, write_report

REPO = Path(__file__).resolve().parents[1]
COMMITTED = sorted(p.parent for p in (REPO / "results").glob("*/report.md"))
LONG_TITLE = "denoising_ae_salt_pepper, batch 1024, float32, ieee-fp32 (gpu-h100-2026-11-22-denoising-campaign)"


@pytest.mark.parametrize("folder", COMMITTED, ids=lambda p: p.name)
def test_a_committed_report_is_what_report_writes_today(folder: Path, tmp_path: Path) -> None:
    md, _ = write_report([folder], tmp_path)
    assert md.read_text() == (folder / "report.md").read_text(), f"regenerate: aebench report results/{folder.name}"
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == sorted(
        p.name for p in (folder / "plots").iterdir()
    )


def test_long_report_titles_fit_their_figures() -> None:
    curves = {"torch eager": pd.Series([3.0, 2.0, 1.0], index=[1, 2, 3])}
    curves["keras-torch compiled"] = curves["torch eager"] + 0.1
    styles = {name: ("C0", "-") for name in curves}
    cells = pd.DataFrame(
        [{"backend": "torch", "mode": "eager", "batch_size": 8, "median_step_ms": 1.0, "iqr_step_ms": 0.1}]
    )
    cells["samples_per_s"] = 8000.0
    for name, figure in {
        "loss": loss_figure(curves, "torch eager", styles, LONG_TITLE),
        "samples": samples_figure(cells, LONG_TITLE, {"torch": "C0"}),
    }.items():
        figure.tight_layout()
        assert_nothing_clipped(name, figure)
        plt.close(figure)


MACHINE_PATHS = re.compile(r"\.\./shared|/work/|/root/|/tmp/pytest")


def test_nothing_shipped_names_a_path_of_the_development_machines() -> None:
    shipped = [REPO / "README.md", *(REPO / "docs").rglob("*.md"), *(REPO / "results").rglob("*.md")]
    shipped += [p for folder in ("harness", "backends", "specs", "results") for p in (REPO / folder).rglob("*.*")]
    found = [
        f"{p.relative_to(REPO)}: {m.group(0)}"
        for p in shipped
        if p.suffix in (".md", ".py", ".yaml", ".txt", ".csv", ".json")
        for m in MACHINE_PATHS.finditer(p.read_text(errors="replace"))
    ]
    assert not found, found
