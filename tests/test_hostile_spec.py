"""Hostile spec files (issue 11): bombs, huge and deep input, odd keys, unsafe names, sizes that cannot fit.

Every case must end in one SpecError line that names the file, fast and in bounded memory; the
subprocess tests run `aebench validate` as a user would, under a memory limit and a timeout, so a
regression fails instead of eating the machine.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_spec import GOOD, edit  # tests/ is on sys.path (pytest prepend import mode)

from aebench.cli.main import main
from aebench.errors import SpecError
from aebench.spec.load import builtin_specs_dir, load_spec

MEMORY_LIMIT = 3 << 30  # the CLI imports numpy and friends; a bomb would need far more
LATENT_OF_A_BILLION = f"extends: {builtin_specs_dir() / 'ae.yaml'}\nmodel: {{latent: {{size: 1000000000}}}}\n"


def laughs(levels: int, width: int = 10) -> str:
    """'billion laughs': each anchor holds ``width`` aliases of the one before: width**levels leaves."""
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


def refused(
    path: str | Path,
    *fragments: str,
    field: str | None = None,
    named: str | Path | None = None,
    max_seconds: float = 5.0,
) -> SpecError:
    """load_spec(path) raises, within seconds, one short SpecError naming the file (or ``named``) and every fragment."""
    start = time.monotonic()
    with pytest.raises(SpecError) as info:
        load_spec(path)
    elapsed = time.monotonic() - start
    message = str(info.value)
    assert "\n" not in message, message[:300]
    assert len(message) < 800, message[:300]
    assert str(named or path) in message
    for fragment in fragments:
        assert fragment in message, message
    if field is not None:
        assert info.value.field == field, message
    assert elapsed < max_seconds, f"took {elapsed:.1f} s"
    return info.value


def limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def validate_cli(*targets: str | Path, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "aebench.cli", "validate", *map(str, targets)],
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=limited,
    )


# --- 1. alias bombs, size caps, unbounded values in messages ---------------------------------


def test_an_alias_bomb_is_refused_before_it_expands(tmp_path: Path) -> None:
    path = write(tmp_path, "s.yaml", laughs(6) + "description: *l5\n")
    refused(path, "alias", "expand")


def test_an_alias_bomb_in_a_parent_is_refused(tmp_path: Path) -> None:
    write(tmp_path, "bomb.yaml", laughs(6) + "description: *l5\n")
    path = write(tmp_path, "child.yaml", "extends: bomb\n")
    refused(path, "alias", named=tmp_path / "bomb.yaml")


def test_an_alias_inside_its_own_anchor_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "s.yaml", GOOD + "description: &loop [a, *loop]\n")
    refused(path, "alias", "own anchor")


def test_a_few_aliases_in_a_sensible_spec_still_work(tmp_path: Path) -> None:
    text = edit(GOOD, "activation: relu}", "activation: &act relu}")
    text = edit(text, "    - {type: dense, units: 784}", "    - {type: dense, units: 784, activation: *act}")
    assert load_spec(write(tmp_path, "s.yaml", text)).model.decoder[0].activation.name == "relu"


def test_a_spec_file_over_the_size_cap_is_refused_without_reading_it(tmp_path: Path) -> None:
    path = write(tmp_path, "s.yaml", GOOD + ("# " + "x" * 98 + "\n") * 20_000)  # a valid spec of 2 MB
    refused(path, "larger than", "KiB")


def test_a_device_is_refused_as_not_a_regular_file() -> None:
    refused("/dev/zero", "not a regular file")


def test_a_folder_is_refused_as_not_a_spec_file(tmp_path: Path) -> None:
    folder = tmp_path / "folder.yaml"
    folder.mkdir()
    refused(folder, "is a folder")


def test_a_huge_value_is_quoted_by_a_short_prefix_only(tmp_path: Path) -> None:
    path = write(tmp_path, "s.yaml", edit(GOOD, "dtype: float32", "dtype: " + "f" * 100_000))
    error = refused(path, "dtype", "one of float32, float64", "fff")
    assert len(str(error)) < 400


def test_a_huge_key_is_quoted_by_a_short_prefix_only(tmp_path: Path) -> None:
    path = write(tmp_path, "s.yaml", GOOD + "? " + "k" * 100_000 + "\n: 1\n")  # an explicit key may be that long
    assert len(str(refused(path, "unknown key"))) < 400


def test_an_integer_with_thousands_of_digits_is_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, "s.yaml", edit(GOOD, "epochs: 1", "epochs: " + "9" * 5000))
    refused(path, "s.yaml:17", "5,000 characters")


# --- 2. deep nesting --------------------------------------------------------------------------


def test_twenty_thousand_nested_brackets_are_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, "s.yaml", GOOD + "description: " + "[" * 20_000 + "]" * 20_000 + "\n")
    refused(path, "nest", "deeper than")


def test_nesting_built_from_aliases_is_capped_too(tmp_path: Path) -> None:
    lines = ["n0: &n0 " + "[" * 20 + "]" * 20]
    lines += [f"n{i}: &n{i} " + "[" * 20 + f"*n{i - 1}" + "]" * 20 for i in range(1, 10)]
    path = write(tmp_path, "s.yaml", "\n".join(lines) + "\n")
    refused(path, "deeper than")


def test_a_long_extends_chain_is_one_line(tmp_path: Path) -> None:
    for i in range(300):
        write(tmp_path, f"s{i}.yaml", f"extends: s{i + 1}\n")
    write(tmp_path, "s300.yaml", GOOD)
    refused(tmp_path / "s0.yaml", "extends", "deeper than", "starting at", str(tmp_path / "s0.yaml"), named=tmp_path)


# --- 3. and 4. keys that are not plain strings; merge keys ---------------------------------


@pytest.mark.parametrize(
    "text, where",
    [
        pytest.param(GOOD + "{[1, 2]: x}: 1\n", "s.yaml:19", id="flow-list-key"),
        pytest.param(GOOD + "? [a, b]\n: 1\n", "s.yaml:19", id="block-list-key"),
        pytest.param(edit(GOOD, "  family: vae", "  {a: 1}: 2\n  family: vae"), "s.yaml:2", id="mapping-key"),
        pytest.param(edit(GOOD, "  family: vae", "  3: 2\n  family: vae"), "s.yaml:2", id="integer-key"),
    ],
)
def test_a_key_that_is_not_a_string_is_one_line_naming_where(tmp_path: Path, text: str, where: str) -> None:
    path = write(tmp_path, "s.yaml", text)
    error = refused(path, "key", "string")
    assert where in str(error)


def test_merge_keys_are_refused_with_a_pointer_to_extends(tmp_path: Path) -> None:
    text = "base: &b {batch_size: 16, epochs: 1}\n" + edit(GOOD, "train: {batch_size", "train: {<<: *b, batch_size")
    error = refused(write(tmp_path, "s.yaml", text), "merge keys", "not supported")
    assert "extends" in str(error)


# --- 5. names are identifiers ---------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "../../x",
        "/etc/passwd",
        "a/b",
        "'a\\0b'",
        '"a\\0b"',
        ".hidden",
        "-flag",
        "''",
        "x" * 65,
        '"a\\nb"',
        "'with space'",
        "n" * 10_000,
    ],
)
def test_a_name_that_is_not_an_identifier_is_refused(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, "s.yaml", f"name: {name}\n" + GOOD)
    refused(path, "letters, digits", field="name")


@pytest.mark.parametrize("name", ["ae", "my_spec-2.v1", "X" * 64, "_private", "0day"])
def test_an_identifier_name_is_kept(tmp_path: Path, name: str) -> None:
    assert load_spec(write(tmp_path, "s.yaml", f"name: {name}\n" + GOOD)).name == name


def test_a_name_taken_from_an_unusable_file_name_says_so(tmp_path: Path) -> None:
    path = write(tmp_path, "my spec.yaml", GOOD)
    refused(path, "file name", "name:", field="name")


# --- 6. sizes that overflow or cannot fit ----------------------------------------------------


def test_a_latent_of_a_billion_is_refused_naming_the_field_and_the_need(tmp_path: Path) -> None:
    path = write(tmp_path, "s.yaml", LATENT_OF_A_BILLION)
    error = refused(path, "needs", "TB", "memory", field="model.latent.size")
    assert "float32" in str(error)


def test_a_batch_that_cannot_fit_names_the_batch_size(tmp_path: Path) -> None:
    text = f"extends: {builtin_specs_dir() / 'vae_conv.yaml'}\ntrain: {{batch_size: 100000000}}\n"
    path = write(tmp_path, "s.yaml", text)
    refused(path, "needs", "memory", field="train.batch_size")


@pytest.mark.parametrize(
    "old, new, field",
    [
        ("latent: {size: 2}", "latent: {size: 100000000000000000000}", "model.latent.size"),
        ("filters: 4", "filters: 9223372036854775808", "model.encoder[0].filters"),
        ("batch_size: 16", "batch_size: 99999999999999999999999", "train.batch_size"),
        ("epochs: 1", "epochs: 99999999999999999999999", "train.epochs"),
        ("seed: 0", "seed: 99999999999999999999999", "train.seed"),
        ("shape: [28, 28, 1]", "shape: [28, 28, 1, 100000000000000000000]", "model.decoder[1].shape"),
    ],
)
def test_integers_too_large_for_any_framework_are_refused_by_range(
    tmp_path: Path, old: str, new: str, field: str
) -> None:
    refused(write(tmp_path, "s.yaml", edit(GOOD, old, new)), "at most", field=field)


def test_validate_states_the_memory_a_spec_needs(capsys: pytest.CaptureFixture) -> None:
    assert main(["validate", "ae", "vae_conv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    for line in lines:
        assert "needs about" in line and "memory" in line and "float32" in line, line


# --- 7. extends from a user's own folder ---------------------------------------------------


def test_extends_finds_a_shipped_spec_from_a_users_own_folder(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, "mine.yaml", "name: mine\nextends: ae\ntrain: {epochs: 2}\n"))
    assert spec.train.epochs == 2 and spec.model == load_spec("ae").model


def test_a_spec_beside_the_file_wins_over_the_shipped_one(tmp_path: Path) -> None:
    write(tmp_path, "ae.yaml", edit(GOOD, "batch_size: 16", "batch_size: 7"))
    assert load_spec(write(tmp_path, "mine.yaml", "extends: ae\n")).train.batch_size == 7


def test_a_users_own_copy_named_like_a_shipped_spec_extends_the_shipped_one(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, "ae.yaml", "extends: ae\ntrain: {epochs: 3}\n"))
    assert (spec.name, spec.train.epochs, spec.model) == ("ae", 3, load_spec("ae").model)


def test_a_missing_parent_says_where_it_looked(tmp_path: Path) -> None:
    path = write(tmp_path, "mine.yaml", "extends: vae_cnv\n")
    error = refused(path, "no spec 'vae_cnv'", str(tmp_path / "vae_cnv.yaml"), "shipped", "did you mean 'vae_conv'")
    assert error.field == "extends"


@pytest.mark.parametrize("parent", ['"a\\0b"', "x" * 5000, "x" * 1000, "[1, 2]", ".", "/"])
def test_an_unusable_parent_name_is_one_line(tmp_path: Path, parent: str) -> None:
    refused(write(tmp_path, "mine.yaml", f"extends: {parent}\n"), field="extends")


# --- the command a user runs ---------------------------------------------------------------


def test_validate_gives_one_line_per_hostile_file_in_bounded_memory_and_time(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    targets = [
        write(tmp_path, "bomb.yaml", laughs(9) + "description: *l8\n"),
        write(tmp_path, "bomb_child.yaml", "extends: bomb\n"),
        write(tmp_path, "deep.yaml", "description: " + "[" * 20_000 + "]" * 20_000 + "\n"),
        write(tmp_path, "list_key.yaml", "{[1, 2]: x}: 1\n"),
        write(tmp_path, "merge.yaml", "base: &b {x: 1}\nother: {<<: *b}\n"),
        write(tmp_path, "digits.yaml", "epochs: " + "9" * 5000 + "\n"),
        write(tmp_path, "name.yaml", "name: ../../x\n" + GOOD),
        write(tmp_path, "latent.yaml", LATENT_OF_A_BILLION),
        fifo,
        "/dev/zero",
    ]
    start = time.monotonic()
    proc = validate_cli(*targets)
    elapsed = time.monotonic() - start
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert len(lines) == len(targets), proc.stderr[-2000:]
    for line, target in zip(lines, targets):
        named = tmp_path / "bomb.yaml" if target == tmp_path / "bomb_child.yaml" else target
        assert line.startswith(f"error: {named}"), line[:300]
        assert len(line) < 600, line[:300]
    assert elapsed < 30, f"validate took {elapsed:.1f} s"


def test_validate_of_a_spec_extending_a_shipped_one_from_elsewhere_works(tmp_path: Path) -> None:
    path = write(tmp_path, "mine.yaml", "name: mine\nextends: vae_dense\nmodel: {latent: {size: 8}}\n")
    proc = validate_cli(path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"ok: {path}: mine, family vae") and "needs about" in proc.stdout
