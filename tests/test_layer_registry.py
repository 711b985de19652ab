"""The layer registry (aebench.layers): every kind in one module, named nowhere else in the
harness, built by every built-in backend, and a kind a backend lacks is one clear line."""

from __future__ import annotations

import ast
import importlib
import typing
from pathlib import Path

import pytest
from cases import cheap_backend

from aebench.bench.cell import Cell, run_cell
from aebench.bench.timing import Protocol
from aebench.check.suite import run_check
from aebench.cli.main import main
from aebench.errors import LayerNotImplemented
from aebench.layers import LAYER_KINDS, check_implemented, plan_layer
from aebench.layers.base import Where
from aebench.layers.conv import Conv
from aebench.layers.residual import Residual
from aebench.plugins.registry import available_backends, load_backend
from aebench.spec.load import load_spec

HARNESS = Path(__file__).resolve().parents[1] / "harness"
BUILT_IN = ("torch", "jax", "keras", "keras-jax", "keras-torch")


def _namings(path: Path) -> list[str]:
    """Where a module names a layer kind: a string equal to a kind's name, or an import of a kind's module."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and node.value in LAYER_KINDS:
            found.append(f"line {node.lineno}: {node.value!r}")
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("aebench.layers."):
            if node.module.rpartition(".")[2] in LAYER_KINDS:
                found.append(f"line {node.lineno}: from {node.module} import ...")
    return found


def test_no_harness_module_outside_the_registry_names_a_layer_kind() -> None:
    outside = [p for p in HARNESS.rglob("*.py") if "layers" not in p.relative_to(HARNESS).parts]
    named = {str(p.relative_to(HARNESS)): n for p in outside if (n := _namings(p))}
    assert named == {}, f"only harness/layers/ may name layer kinds; found {named}"


def test_the_naming_check_sees_a_kind_named_outside(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text('from aebench.layers.conv import Conv\nKIND = "dense"\n')
    assert len(_namings(module)) == 2


@pytest.mark.parametrize("kind", sorted(LAYER_KINDS))
def test_each_kind_module_declares_a_schema_tagged_with_its_name(kind: str) -> None:
    declared = LAYER_KINDS[kind]
    assert typing.get_type_hints(declared.schema)["type"] == typing.Literal[kind]
    assert importlib.import_module(f"aebench.layers.{kind}").KIND is declared


@pytest.mark.parametrize("built_in", BUILT_IN)
def test_every_built_in_backend_builds_every_layer_kind(built_in: str) -> None:
    if built_in not in available_backends():
        pytest.skip(f"{built_in} is not available here")
    assert sorted(load_backend(built_in).layer_kinds()) == sorted(LAYER_KINDS)


@pytest.fixture
def backend_without_conv(monkeypatch: pytest.MonkeyPatch) -> str:
    """The cheap backend with its conv builder taken away."""
    name = cheap_backend()
    model = importlib.import_module(f"aebench.backends.{name}.model")
    monkeypatch.delitem(model.BUILDERS, "conv")
    return name


MISSING = "does not implement layer conv (model.encoder[0])"


def test_validate_names_the_layer_a_backend_lacks(backend_without_conv: str, capsys) -> None:
    assert main(["validate", "vae_conv", "vae_dense", "--backends", backend_without_conv]) == 2
    out, err = capsys.readouterr()
    assert err.strip() == f"error: {backend_without_conv} {MISSING}"
    assert out.startswith("ok: vae_dense")


def test_check_skips_a_backend_that_lacks_a_layer_with_the_reason(backend_without_conv: str) -> None:
    backend = load_backend(backend_without_conv)
    rows = run_check([load_spec("vae_conv")], {backend_without_conv: backend}, ["float64"])
    assert [(r.verdict, r.note) for r in rows] == [("skip", f"{backend_without_conv} {MISSING}")]


def test_bench_records_a_failed_cell_with_the_reason(backend_without_conv: str) -> None:
    cell = Cell("vae_conv", backend_without_conv, "eager", batch_size=4, protocol=Protocol(blocks=2))
    row = run_cell(cell)
    assert (row["status"], row["reason"]) == ("failed", f"{backend_without_conv} {MISSING}")


def test_train_refuses_in_one_line_before_any_data_loads(backend_without_conv: str, tmp_path: Path, capsys) -> None:
    code = main(["train", "vae_conv", "--backend", backend_without_conv, "--out", str(tmp_path / "run")])
    assert code == 2
    assert capsys.readouterr().err.strip().endswith(f"{backend_without_conv} {MISSING}")


def test_a_missing_kind_inside_a_residual_block_is_named_by_its_spec_field() -> None:
    block = Residual("residual", (Conv("conv", 2, 3, 1, "same"),))
    plan = plan_layer(block, (4, 4, 2), Where("<test>", "encoder.1", "model.encoder[1]"))
    with pytest.raises(LayerNotImplemented) as info:
        check_implemented("b", set(LAYER_KINDS) - {"conv"}, [plan])
    assert str(info.value) == "b does not implement layer conv (model.encoder[1].layers[0])"
