"""The loss-term registry (aebench.losses): every term in one module, the total summed in rank
order, named nowhere else in the harness's model code, computed by every built-in backend; a
term a backend lacks is one clear line."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import numpy as np
import pytest
from cases import case_for, cheap_backend

from aebench.check import oracle
from aebench.check.suite import run_check
from aebench.cli.main import main
from aebench.losses import LOSS_TERMS, present_terms
from aebench.plugins.backend_api import loss_term_names, with_total
from aebench.plugins.registry import available_backends, load_backend
from aebench.spec.load import SPEC_SETS, list_specs, load_spec

HARNESS = Path(__file__).resolve().parents[1] / "harness"
BUILT_IN = ("torch", "jax", "keras", "keras-jax", "keras-torch")


def _namings(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and node.value in LOSS_TERMS:
            found.append(f"line {node.lineno}: {node.value!r}")
        if isinstance(node, ast.Attribute) and node.attr in LOSS_TERMS:
            found.append(f"line {node.lineno}: .{node.attr}")
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("aebench.losses."):
            if node.module.rpartition(".")[2] in LOSS_TERMS:
                found.append(f"line {node.lineno}: from {node.module} import ...")
    return found


def test_no_harness_module_outside_the_registry_names_a_loss_term() -> None:
    outside = [p for p in HARNESS.rglob("*.py") if "losses" not in p.relative_to(HARNESS).parts]
    named = {str(p.relative_to(HARNESS)): n for p in outside if (n := _namings(p))}
    assert named == {}, f"only harness/losses/ may name loss terms; found {named}"


def test_no_module_of_the_harness_or_the_backends_names_a_shipped_spec() -> None:
    """A spec file is its whole variant: code reaches it only through the registries, never by
    its name (a name that is also a family, 'ae', or a loss term, 'iwae', the backends do name:
    the registry test above keeps the harness's modules from naming terms)."""
    shared = {"ae", "vae", *LOSS_TERMS}
    names = (set(list_specs()) | {n.partition("/")[2] for s in SPEC_SETS for n in list_specs(s)}) - shared
    code = [*HARNESS.rglob("*.py"), *(HARNESS.parent / "backends").rglob("*.py")]
    named = {
        str(path): hits
        for path in code
        if (
            hits := [
                n.value
                for n in ast.walk(ast.parse(path.read_text()))
                if isinstance(n, ast.Constant) and n.value in names
            ]
        )
    }
    assert named == {}, f"modules naming shipped specs: {named}"


@pytest.mark.parametrize("term", sorted(LOSS_TERMS))
def test_each_term_module_is_found_by_its_name(term: str) -> None:
    assert importlib.import_module(f"aebench.losses.{term}").TERM is LOSS_TERMS[term]


def test_the_total_adds_the_terms_in_rank_order_with_their_weights() -> None:
    spec = load_spec("contractive_ae")
    assert loss_term_names(spec) == ("total", *present_terms(spec.loss)) == ("total", "reconstruction", "contractive")
    terms = with_total(spec, {"reconstruction": 2.0, "contractive": 3.0})
    assert terms["total"] == 2.0 * spec.loss.reconstruction.weight + 3.0 * spec.loss.contractive.weight


def test_the_oracle_total_is_the_weighted_sum_of_each_terms_oracle() -> None:
    case = case_for("beta_vae", "float64")
    terms = oracle.loss_terms(case.spec, case.weights, case.batch)
    assert terms["total"] == pytest.approx(terms["reconstruction"] + case.spec.loss.kl.beta * terms["kl"], rel=1e-15)
    assert np.isfinite(list(terms.values())).all()


@pytest.mark.parametrize("built_in", BUILT_IN)
def test_every_built_in_backend_computes_every_loss_term(built_in: str) -> None:
    if built_in not in available_backends():
        pytest.skip(f"{built_in} is not available here")
    assert sorted(load_backend(built_in).loss_term_kinds()) == sorted(LOSS_TERMS)


@pytest.fixture
def backend_without_kl(monkeypatch: pytest.MonkeyPatch) -> str:
    name = cheap_backend()
    monkeypatch.delitem(importlib.import_module(f"aebench.backends.{name}.losses").TERMS, "kl")
    return name


def test_a_missing_loss_term_is_one_line_in_validate_and_a_skip_in_check(backend_without_kl: str, capsys) -> None:
    missing = f"{backend_without_kl} does not implement loss term kl (loss.kl)"
    assert main(["validate", "vae_toy", "ae", "--backends", backend_without_kl]) == 2
    out, err = capsys.readouterr()
    assert err.strip() == f"error: {missing}" and out.startswith("ok: ae")
    rows = run_check([load_spec("vae_toy")], {backend_without_kl: load_backend(backend_without_kl)}, ["float64"])
    assert [(r.verdict, r.note) for r in rows] == [("skip", missing)]
