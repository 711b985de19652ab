"""Typed parsing of plain YAML data into frozen dataclasses, with one-line errors.

A dataclass field's annotation says what is allowed; ``field(metadata={"check": fn})``
adds a range check (``fn(value)`` returns an error text or None). Unions of dataclasses
are told apart by their first field, a ``Literal`` tag (``type: dense``, ``kind: gaussian``).
Every error names the file, the dotted field path and what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from collections.abc import Callable
from typing import Any, Literal, Union

from aebench.errors import SpecError

Check = Callable[[Any], "str | None"]

SHOWN_CHARS = 60
"""The longest a value from a file is quoted in an error message; the rest is cut."""

IDENTIFIER_CHARS = 64
_IDENTIFIER = re.compile(rf"[A-Za-z0-9_][A-Za-z0-9_.-]{{0,{IDENTIFIER_CHARS - 1}}}")
IDENTIFIER_RULE = (
    f"1 to {IDENTIFIER_CHARS} ASCII letters, digits, '_', '-' or '.', not starting with '.' or '-' "
    "(it names folders and files)"
)


def shown(value: Any, limit: int = SHOWN_CHARS) -> str:
    """``repr(value)`` cut to about ``limit`` characters, for quoting a user's value in a one-line error."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 3 * limit:
        return f"an integer of about {int(value.bit_length() * math.log10(2)) + 1} digits"
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def cut(text: str, limit: int = SHOWN_CHARS) -> str:
    """``text`` for a one-line error: control characters escaped, cut to about ``limit`` characters."""
    escaped = repr(text[: limit + 1])[1:-1]
    return escaped if len(text) <= limit else f"{escaped[:limit]}... ({len(text):,} characters)"


def is_identifier(value: str) -> bool:
    """True for a name that is safe as a folder or file name: see IDENTIFIER_RULE."""
    return _IDENTIFIER.fullmatch(value) is not None


def identifier(value: str) -> str | None:
    """A check for names that become folder and file names."""
    return None if is_identifier(value) else f"must be {IDENTIFIER_RULE}; got {shown(value)}"


def did_you_mean(word: str, choices: typing.Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest choice, or '' when none is close."""
    choices = list(choices)
    if len(str(word)) > 4 * SHOWN_CHARS:  # no choice is that long; spare difflib the work
        return ""
    by_leaf = {c.rpartition(".")[2]: c for c in choices}
    close = difflib.get_close_matches(str(word), choices, n=1, cutoff=0.6)
    if not close:
        close = [by_leaf[m] for m in difflib.get_close_matches(str(word), list(by_leaf), n=1, cutoff=0.6)]
    return f" (did you mean '{close[0]}'?)" if close else ""


def rule(check: Check) -> dict[str, Check]:
    """Field metadata whose check the parsed value must pass: ``field(metadata=rule(at_least(1)))``."""
    return {"check": check}


def at_least(low: float) -> Check:
    return lambda v: None if v >= low else f"must be >= {low:g}, got {shown(v)}"


def greater_than(low: float) -> Check:
    return lambda v: None if v > low else f"must be > {low:g}, got {shown(v)}"


def in_range(low: int, high: int) -> Check:
    """Checks low <= v <= high for an integer; ``high`` keeps sizes, counts and seeds in what frameworks take."""

    def check(v: int) -> str | None:
        if v < low:
            return f"must be >= {low}, got {shown(v)}"
        return None if v <= high else f"must be at most {high}, got {shown(v)}"

    return check


def in_interval(low: float, high: float, *, closed_low: bool, closed_high: bool) -> Check:
    """Checks low <(=) v <(=) high and states the interval in the error."""
    left, right = "[" if closed_low else "(", "]" if closed_high else ")"

    def check(v: float) -> str | None:
        ok_low = v >= low if closed_low else v > low
        ok_high = v <= high if closed_high else v < high
        return None if ok_low and ok_high else f"must lie in {left}{low:g}, {high:g}{right}, got {shown(v)}"

    return check


class Parser:
    """Parses values for one file; ``file`` is named in every error."""

    def __init__(self, file: str):
        self.file = file

    def fail(self, path: str, message: str) -> typing.NoReturn:
        raise SpecError(self.file, path, message)

    def parse(self, tp: Any, value: Any, path: str) -> Any:
        """Convert ``value`` to the annotation ``tp`` or raise SpecError at ``path``."""
        origin = typing.get_origin(tp)
        if tp is Any:
            return value
        if origin in (Union, types.UnionType):
            return self._parse_union(typing.get_args(tp), value, path)
        if origin is Literal:
            return self._parse_literal(typing.get_args(tp), value, path)
        if origin is tuple:
            return self._parse_tuple(typing.get_args(tp), value, path)
        if dataclasses.is_dataclass(tp):
            if hasattr(tp, "from_yaml"):
                return tp.from_yaml(self, value, path)
            return self.parse_dataclass(typing.cast(type, tp), value, path)
        scalar = {bool: self._bool, int: self._int, float: self._float, str: self._str}.get(tp)
        if scalar is None:
            raise TypeError(f"schema cannot parse annotation {tp!r}")
        return scalar(value, path)

    def parse_dataclass(self, cls: type, value: Any, path: str) -> Any:
        names = [f.name for f in dataclasses.fields(cls)]
        if not isinstance(value, dict):
            self.fail(path, f"must be a mapping with keys {', '.join(names)}; got {_kind(value)}")
        for key in value:
            if key not in names:
                hint = did_you_mean(key, names) or did_you_mean(key, _nested_names(cls))
                self.fail(_join(path, cut(str(key))), f"unknown key{hint}; allowed: {', '.join(names)}")
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for f in dataclasses.fields(cls):
            sub = _join(path, f.name)
            if f.name not in value:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    self.fail(sub, f"is required ({_describe(hints[f.name])})")
                continue
            parsed = self.parse(hints[f.name], value[f.name], sub)
            check = f.metadata.get("check")
            if check is not None and parsed is not None:
                problem = check(parsed)
                if problem:
                    self.fail(sub, problem)
            kwargs[f.name] = parsed
        return cls(**kwargs)

    def _parse_union(self, options: tuple, value: Any, path: str) -> Any:
        if value is None and type(None) in options:
            return None
        options = tuple(o for o in options if o is not type(None))
        if len(options) == 1:
            return self.parse(options[0], value, path)
        return self._parse_tagged(options, value, path)

    def _parse_tagged(self, options: tuple, value: Any, path: str) -> Any:
        tag = dataclasses.fields(options[0])[0].name
        by_tag = {typing.get_args(typing.get_type_hints(o)[tag])[0]: o for o in options}
        if not isinstance(value, dict):
            self.fail(path, f"must be a mapping with '{tag}' one of {', '.join(by_tag)}; got {_kind(value)}")
        if tag not in value:
            self.fail(_join(path, tag), f"is required (one of {', '.join(by_tag)})")
        chosen = by_tag.get(value[tag])
        if chosen is None:
            self.fail(
                _join(path, tag),
                f"must be one of {', '.join(by_tag)}; got {shown(value[tag])}{did_you_mean(value[tag], by_tag)}",
            )
        return self.parse(chosen, value, path)

    def _parse_literal(self, choices: tuple, value: Any, path: str) -> Any:
        if value in choices and not isinstance(value, bool):
            return value
        allowed = ", ".join(str(c) for c in choices)
        self.fail(path, f"must be one of {allowed}; got {shown(value)}{did_you_mean(value, map(str, choices))}")

    def _parse_tuple(self, args: tuple, value: Any, path: str) -> tuple:
        if not isinstance(value, list):
            self.fail(path, f"must be a list; got {_kind(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(self.parse(args[0], v, f"{path}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            self.fail(path, f"must be a list of {len(args)} items; got {len(value)}")
        return tuple(self.parse(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value)))

    def _bool(self, value: Any, path: str) -> bool:
        if not isinstance(value, bool):
            self.fail(path, f"must be true or false; got {_kind(value)}")
        return value

    def _int(self, value: Any, path: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(path, f"must be an integer; got {_kind(value)}")
        return value

    def _float(self, value: Any, path: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(path, f"must be a number; got {_kind(value)}")
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            self.fail(path, f"must be a finite number; got {shown(value)}")
        return number

    def _str(self, value: Any, path: str) -> str:
        if not isinstance(value, str):
            self.fail(path, f"must be a string; got {_kind(value)}")
        return value


def _nested_names(cls: type) -> list[str]:
    """'field.sub' for the fields of dataclass-typed fields: ``epochs`` -> ``train.epochs``."""
    hints = typing.get_type_hints(cls)
    out: list[str] = []
    for f in dataclasses.fields(cls):
        options = typing.get_args(hints[f.name]) or (hints[f.name],)
        for option in options:
            if dataclasses.is_dataclass(option):
                out.extend(f"{f.name}.{sub.name}" for sub in dataclasses.fields(option))
    return out


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _kind(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, (dict, list)):
        return f"a {type(value).__name__}"
    return f"{type(value).__name__} {shown(value)}"


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(str(c) for c in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp) if a is not type(None))
    if origin is tuple:
        return "a list"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))
