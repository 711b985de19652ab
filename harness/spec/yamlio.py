"""Strict, safe YAML reading for spec files.

Built on ``yaml.SafeLoader`` (no Python objects are ever constructed) with the fixes a
spec author expects: a key written twice in one mapping is an error instead of the last
one silently winning, and ``1e-3`` is a float (YAML 1.1 would read it as a string).

It is also built for hostile input: a file is refused before it is read whole when it is
larger than MAX_FILE_BYTES or not a regular file; nesting deeper than MAX_DEPTH and more
than MAX_VALUES values once aliases are expanded (a "billion laughs" bomb) are refused
while the YAML is composed, before anything is expanded; an alias inside its own anchor,
merge keys (``<<``), keys that are not strings and integers of more than MAX_NUMBER_CHARS
characters are refused too. Each refusal is one SpecError line naming the file and line.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import yaml

from aebench.errors import SpecError
from aebench.spec.schema import cut, shown

MAX_FILE_BYTES = 256 * 1024
"""The largest YAML file read; the shipped specs are about 1 KB."""
MAX_DEPTH = 32
"""The deepest nesting of lists and mappings, aliases expanded; a spec nests about 5 deep."""
MAX_VALUES = 20_000
"""The most values (scalars, lists, mappings) a file may hold, aliases expanded; a spec holds a few hundred."""
MAX_NUMBER_CHARS = 100
"""The longest integer literal (longer ones cannot be sizes, and Python refuses to convert 4,300 digits)."""

_MERGE_TAG = "tag:yaml.org,2002:merge"
_INT_TAG = "tag:yaml.org,2002:int"

_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)


class Refused(yaml.YAMLError):
    """A YAML document this reader will not construct: where (mark), which key if any, and why."""

    def __init__(self, mark: yaml.Mark, message: str, key: str = ""):
        super().__init__(message)
        self.mark, self.message, self.key = mark, message, key


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys and reads 1e-3 as a float, within the limits above."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0
        self._expanded: dict[yaml.Node, tuple[int, int]] = {}  # node -> (values, height) with aliases expanded

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node:
        """Compose as PyYAML does, counting depth and expanded size as each node completes."""
        mark = self.peek_event().start_mark
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            node = super().compose_node(parent, index)
            if node not in self._expanded:
                raise Refused(mark, "an alias inside its own anchor (a loop); aliases must refer to finished values")
            return node
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise Refused(mark, f"lists and mappings nest deeper than {MAX_DEPTH} levels; a spec nests about 5 deep")
        node = super().compose_node(parent, index)
        self._depth -= 1
        self._measure(node, mark)
        return node

    def _measure(self, node: yaml.Node, mark: yaml.Mark) -> None:
        children = _children(node)
        values = 1 + sum(self._expanded[child][0] for child in children)
        height = 1 + max((self._expanded[child][1] for child in children), default=0)
        expanded = " once its aliases are expanded" if self._aliases else ""
        if values > MAX_VALUES:
            hint = "; aliases may only repeat small values" if self._aliases else ""
            too_many = f"this value holds more than {MAX_VALUES:,} values{expanded}{hint}"
            raise Refused(mark, f"{too_many} (a spec holds a few hundred)")
        if height > MAX_DEPTH:
            raise Refused(mark, f"lists and mappings nest deeper than {MAX_DEPTH} levels{expanded}")
        self._expanded[node] = (values, height)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:float"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
StrictLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def _construct_mapping(loader: StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen = set()
    for key_node, _ in node.value:
        key = _string_key(loader, key_node)
        if key in seen:
            raise Refused(key_node.start_mark, "key appears twice in the same mapping; keep one", key=cut(key))
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


def _string_key(loader: StrictLoader, key_node: yaml.Node) -> str:
    """A mapping key, refused unless it is a plain string (spec keys are field names)."""
    if key_node.tag == _MERGE_TAG:
        raise Refused(
            key_node.start_mark,
            "merge keys (<<) are not supported; use extends: NAME to build on another spec, or write the fields out",
        )
    if not isinstance(key_node, yaml.ScalarNode):
        kind = "list" if isinstance(key_node, yaml.SequenceNode) else "mapping"
        raise Refused(key_node.start_mark, f"a {kind} as a mapping key; keys must be strings (field names)")
    key = loader.construct_object(key_node, deep=True)
    if not isinstance(key, str):
        raise Refused(
            key_node.start_mark,
            f"mapping keys must be strings (field names); {shown(key_node.value)} reads as {type(key).__name__} "
            f"{shown(key)}: quote it to use it as a name",
        )
    return key


def _construct_int(loader: StrictLoader, node: yaml.ScalarNode) -> int:
    if len(node.value) > MAX_NUMBER_CHARS:
        raise Refused(
            node.start_mark, f"an integer of {len(node.value):,} characters; at most {MAX_NUMBER_CHARS} are read"
        )
    return yaml.SafeLoader.construct_yaml_int(loader, node)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
StrictLoader.add_constructor(_INT_TAG, _construct_int)


def read_mapping(path: Path) -> dict:
    """The top-level mapping of a YAML file, or a one-line SpecError naming the file.

    The file must be a regular file of at most MAX_FILE_BYTES, read without reading more.
    """
    name = str(path)
    text = _read_text(path, name)
    try:
        data = yaml.load(text, Loader=StrictLoader)  # noqa: S506 - StrictLoader is a SafeLoader
    except Refused as exc:
        raise SpecError(f"{name}:{exc.mark.line + 1}:{exc.mark.column + 1}", exc.key, exc.message) from None
    except yaml.YAMLError as exc:
        raise SpecError(_located(name, exc), "", f"YAML syntax error: {_problem(exc)}") from None
    if data is None:
        raise SpecError(name, "", "empty spec; expected a mapping with keys such as name, extends, model, loss")
    if not isinstance(data, dict):
        raise SpecError(name, "", f"must be a mapping of fields; got a {type(data).__name__}")
    return data


def _read_text(path: Path, name: str) -> str:
    """The file's text; refuses folders, devices, pipes and files over MAX_FILE_BYTES before reading them."""
    try:
        _check_file(path.stat(), name)
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a pipe swapped in cannot block
        with os.fdopen(descriptor, "rb") as file:
            _check_file(os.fstat(file.fileno()), name)
            data = file.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise SpecError(name, "", "no such file") from None
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or shown(str(exc))
        raise SpecError(name, "", f"cannot be read: {reason}") from None
    if len(data) > MAX_FILE_BYTES:
        raise SpecError(name, "", _too_large())
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(name, "", f"is not UTF-8 text (byte {exc.start:,} cannot be decoded)") from None


def _check_file(info: os.stat_result, name: str) -> None:
    if stat.S_ISDIR(info.st_mode):
        raise SpecError(name, "", "is a folder, not a YAML file")
    if not stat.S_ISREG(info.st_mode):
        raise SpecError(name, "", "is not a regular file (a device, pipe or socket); expected a YAML file")
    if info.st_size > MAX_FILE_BYTES:
        raise SpecError(name, "", _too_large(info.st_size))


def _too_large(size: int | None = None) -> str:
    actual = f"{size:,} bytes, " if size is not None else ""
    return f"is {actual}larger than the {MAX_FILE_BYTES // 1024} KiB a YAML file may have (a spec is about 1 KB)"


def _located(name: str, exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    return f"{name}:{mark.line + 1}:{mark.column + 1}" if mark is not None else name


def _problem(exc: yaml.YAMLError) -> str:
    parts = [getattr(exc, "context", None), getattr(exc, "problem", None)]
    text = "; ".join(p for p in parts if p)
    return cut(" ".join((text or str(exc)).split()), 200)
