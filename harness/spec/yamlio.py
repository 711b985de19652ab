"""Strict, safe YAML reading for spec files.

Built on ``yaml.SafeLoader`` (no Python objects are ever constructed) with two fixes a
spec author expects: a key written twice in one mapping is an error instead of the last
one silently winning, and ``1e-3`` is a float (YAML 1.1 would read it as a string).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from aebench.errors import SpecError

_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys and reads 1e-3 as a float."""


StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:float"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
StrictLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


class DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, mark: yaml.Mark):
        self.key, self.mark = key, mark


def _construct_mapping(loader: StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise DuplicateKey(key, key_node.start_mark)
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_mapping(path: Path) -> dict:
    """The top-level mapping of a YAML file, or a one-line SpecError naming the file."""
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(name, "", "no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(name, "", f"cannot be read: {exc}") from None
    try:
        data = yaml.load(text, Loader=StrictLoader)  # noqa: S506 - StrictLoader is a SafeLoader
    except DuplicateKey as exc:
        raise SpecError(
            f"{name}:{exc.mark.line + 1}", str(exc.key), "key appears twice in the same mapping; keep one"
        ) from None
    except yaml.YAMLError as exc:
        raise SpecError(_located(name, exc), "", f"YAML syntax error: {_problem(exc)}") from None
    if data is None:
        raise SpecError(name, "", "empty spec; expected a mapping with keys such as name, extends, model, loss")
    if not isinstance(data, dict):
        raise SpecError(name, "", f"must be a mapping of fields; got a {type(data).__name__}")
    return data


def _located(name: str, exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    return f"{name}:{mark.line + 1}:{mark.column + 1}" if mark is not None else name


def _problem(exc: yaml.YAMLError) -> str:
    parts = [getattr(exc, "context", None), getattr(exc, "problem", None)]
    text = "; ".join(p for p in parts if p)
    return " ".join((text or str(exc)).split())
