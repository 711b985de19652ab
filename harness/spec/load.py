"""Loading specs: shipped names or paths, ``extends`` merging, validation of the whole.

A spec file is YAML. ``extends: NAME`` takes another spec (``NAME.yaml`` beside the file,
else the shipped spec NAME; or a path) and overrides the fields given: mappings merge key
by key, lists and scalars are replaced whole, and a mapping whose ``kind`` or ``type``
changes is replaced whole. After merging, the result must be a complete spec (see
aebench.spec.types) whose shapes fit together and whose training step fits in this
machine's memory (aebench.spec.shapes, aebench.spec.memory).
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import numpy as np

from aebench.errors import SpecError
from aebench.losses import LOSS_TERMS, stood_in_for
from aebench.spec.memory import check_memory_fits
from aebench.spec.schema import IDENTIFIER_RULE, Parser, cut, did_you_mean, is_identifier, shown
from aebench.spec.shapes import plan_model
from aebench.spec.types import LINEAR, Gaussian, Mnist, Model, Spec
from aebench.spec.yamlio import read_mapping

MAX_EXTENDS_DEPTH = 16
"""The longest chain of ``extends`` (the shipped specs use one level)."""
MAX_PARENT_CHARS = 1024
"""The longest ``extends`` value (a name or a path)."""


def builtin_specs_dir() -> Path:
    """The specs shipped with aebench (the repository's specs/ folder)."""
    return Path(str(importlib.resources.files("aebench.specs")))


SPEC_SETS = {
    "rgb64": "the zoo's loss terms on vae_conv_bn64's 64x64x3 model, for bench and train campaigns; "
    "the suite checks each through its parts (the MNIST spec of its loss, and vae_conv_bn64)",
}
"""Folders of shipped specs beside the main set, by name, with what they hold. Their specs are
named 'SET/name' (``aebench train rgb64/wae_mmd_bn64``) and are not among list_specs()."""


def list_specs(spec_set: str = "") -> list[str]:
    """Names of the shipped specs, sorted: the main set (what the suite checks one by one), or
    with ``spec_set`` (a key of SPEC_SETS) that folder's, each as 'SET/name'."""
    folder = builtin_specs_dir() / spec_set if spec_set else builtin_specs_dir()
    return sorted(f"{spec_set}/{p.stem}" if spec_set else p.stem for p in folder.glob("*.yaml"))


def spec_path(name_or_path: str | Path) -> Path:
    """A spec file path for a path or the name of a shipped spec."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or _exists(path):
        return path
    shipped = builtin_specs_dir() / f"{name_or_path}.yaml"
    if _exists(shipped):
        return shipped
    raise SpecError(
        cut(str(name_or_path), 200),
        "",
        "no such spec file or shipped spec"
        f"{did_you_mean(str(name_or_path), list_specs())}; shipped: {', '.join(list_specs())}",
    )


def _exists(path: Path) -> bool:
    """Path.exists, False for names the system cannot look up (too long, a NUL byte)."""
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


def _is_dir(path: Path) -> bool:
    """Path.is_dir, False for names the system cannot look up."""
    try:
        return path.is_dir()
    except (OSError, ValueError):
        return False


def load_spec(name_or_path: str | Path) -> Spec:
    """Read, merge (``extends``) and validate a spec; raises SpecError on any problem."""
    path = spec_path(name_or_path)
    merged = _merged(path, chain=())
    if "name" not in merged:
        merged["name"] = _name_from_file(path)
    parser = Parser(str(path))
    spec = parser.parse_dataclass(Spec, merged, "")
    _check_consistency(parser, spec)
    _check_representable(parser, spec.to_dict(), spec.dtype)
    check_memory_fits(spec, str(path), plan_model(spec, file=str(path)))
    return spec


def _name_from_file(path: Path) -> str:
    if not is_identifier(path.stem):
        raise SpecError(
            str(path),
            "name",
            f"is taken from the file name {shown(path.stem)}, which is not {IDENTIFIER_RULE}; "
            "add a line 'name: NAME' to the spec",
        )
    return path.stem


def _merged(path: Path, chain: tuple[Path, ...]) -> dict:
    data = read_mapping(path)
    parent = data.get("extends")
    if parent is None:
        return data
    if not isinstance(parent, str) or not parent or "\0" in parent or len(parent) > MAX_PARENT_CHARS:
        raise SpecError(
            str(path),
            "extends",
            "must name a spec (a file beside this one or a shipped spec, without .yaml, or a path); "
            f"got {shown(parent)}",
        )
    if len(chain) >= MAX_EXTENDS_DEPTH:
        raise SpecError(
            str(path),
            "extends",
            f"specs extend each other deeper than {MAX_EXTENDS_DEPTH} levels, starting at {cut(str(chain[0]), 200)}",
        )
    parent_path = _parent_path(path, parent)
    resolved = path.resolve()
    if parent_path.resolve() in chain + (resolved,):
        cycle = " -> ".join(p.stem for p in chain + (resolved, parent_path.resolve()))
        raise SpecError(str(path), "extends", f"circular inheritance: {cycle}")
    base = _merged(parent_path, chain + (resolved,))
    base.pop("name", None)
    base.pop("description", None)
    return _deep_merge(base, data)


def _parent_path(path: Path, parent: str) -> Path:
    """The file ``extends: parent`` names: beside ``path`` first (``path`` itself excepted: a user's own
    ``ae.yaml`` may extend the shipped ``ae``), then (a bare name) among the shipped specs."""
    candidate = Path(parent)
    if not candidate.suffix and candidate.name not in ("", ".", ".."):
        candidate = candidate.with_suffix(".yaml")
    if not candidate.is_absolute():
        candidate = path.parent / candidate
    if _exists(candidate) and _is_dir(candidate):
        raise SpecError(str(path), "extends", f"'{cut(parent)}' is a folder; name a spec (a YAML file)")
    itself = _exists(candidate) and candidate.resolve() == path.resolve()
    if _exists(candidate) and not itself:
        return candidate
    bare = Path(parent).name == parent and not Path(parent).suffix
    shipped = builtin_specs_dir() / f"{parent}.yaml"
    if bare and _exists(shipped):
        return shipped
    if itself:
        raise SpecError(str(path), "extends", f"a spec cannot extend itself; no shipped spec is named '{cut(parent)}'")
    raise _no_parent(path, parent, candidate, bare)


def _no_parent(path: Path, parent: str, candidate: Path, bare: bool) -> SpecError:
    """The error for an ``extends`` found nowhere: where it looked, and the closest name."""
    siblings = [p.stem for p in path.parent.glob("*.yaml")]
    looked = f"looked for {cut(str(candidate), 200)}"
    if bare:
        looked += f" and among the shipped specs ({', '.join(list_specs())})"
    hint = did_you_mean(parent, siblings + (list_specs() if bare else []))
    return SpecError(str(path), "extends", f"no spec '{cut(parent)}': {looked}{hint}")


_TAGS = ("type", "kind", "name")


def _deep_merge(base: dict, override: dict) -> dict:
    """Merge mappings key by key; a mapping that names another tag (kind, type) replaces."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and not _retagged(out[key], value):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _retagged(base: dict, override: dict) -> bool:
    return any(tag in override and override[tag] != base.get(tag) for tag in _TAGS)


def _check_representable(p: Parser, value: object, dtype: str, path: str = "") -> None:
    """Every number of the resolved spec fits the spec's dtype (a learning rate of 1e308 is
    infinite in float32, and the frameworks fail on it in their own ways)."""
    largest = float(np.finfo(dtype).max)
    if isinstance(value, dict):
        for key, item in value.items():
            _check_representable(p, item, dtype, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_representable(p, item, dtype, f"{path}[{i}]")
    elif isinstance(value, float) and abs(value) > largest:
        p.fail(path, f"{value:g} does not fit {dtype} (largest {largest:.4g})")


MNIST_CLASSES = 10  # the digits 0-9 label MNIST's images
CATEGORICAL_FIELDS = ("categories", "hard", "temperature")
"""The fields of model.latent that family categorical needs and no other family takes."""


def _check_latent(p: Parser, model: Model) -> None:
    """Family categorical's latent: linear logits, every categorical field, whole variables."""
    latent = model.latent
    given = [name for name in CATEGORICAL_FIELDS if getattr(latent, name) is not None]
    if model.family != "categorical":
        if given:
            p.fail(f"model.latent.{given[0]}", f"only allowed for family categorical; family is {model.family}")
        return
    for name in CATEGORICAL_FIELDS:
        if name not in given:
            p.fail(f"model.latent.{name}", f"is required for family categorical ({_CATEGORICAL_HELP[name]})")
    assert latent.categories is not None, "checked above"
    if latent.activation != LINEAR:
        p.fail("model.latent.activation", "must be linear for family categorical (the head gives logits)")
    if latent.size % latent.categories:
        p.fail(
            "model.latent.size",
            f"must be a multiple of model.latent.categories ({latent.categories}): size / categories variables "
            f"of that many categories each; got {latent.size}",
        )


_CATEGORICAL_HELP = {
    "categories": "an integer >= 2: the categories of each variable",
    "hard": "true: straight-through one-hot samples, false: the soft relaxed sample",
    "temperature": "a mapping initial, minimum, rate, interval: the annealed Gumbel-softmax temperature",
}


def _check_consistency(p: Parser, spec: Spec) -> None:
    """Rules that tie fields together (shapes are checked by shapes.plan_model)."""
    model = spec.model
    if model.family == "vae" and model.latent.activation != LINEAR:
        p.fail("model.latent.activation", "must be linear for family vae (the heads give mean and log-variance)")
    _check_latent(p, model)
    if model.family != "vae" and model.latent.samples != 1:
        p.fail(
            "model.latent.samples",
            f"must be 1 for family {model.family} (only a VAE's posterior is sampled); got {model.latent.samples}",
        )
    covered = stood_in_for(spec.loss)
    for name, term in LOSS_TERMS.items():
        cfg, needed = getattr(spec.loss, name), term.required(spec)
        if cfg is None and needed and name not in covered:
            p.fail(f"loss.{name}", f"is required ({needed})")
        if cfg is not None:
            term.rules(cfg, spec, p.fail)
    if isinstance(spec.corruption, Gaussian) and spec.corruption.clip is not None:
        low, high = spec.corruption.clip
        if not low < high:
            p.fail("corruption.clip", f"must be [low, high] with low < high; got [{low:g}, {high:g}]")
    if model.conditional and not isinstance(spec.data, Mnist):
        p.fail("model.conditioning", f"needs labelled data (mnist); {spec.data.name} has no labels")
    if model.conditional and isinstance(spec.data, Mnist) and model.conditioning.num_classes < MNIST_CLASSES:
        p.fail(
            "model.conditioning.num_classes",
            f"MNIST's labels are the digits 0-9; allowed: >= {MNIST_CLASSES}, got {model.conditioning.num_classes}",
        )
