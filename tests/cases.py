"""Equivalence cases shared by the test modules (tests/ is on sys.path: pytest's prepend mode)."""

from __future__ import annotations

import functools

from aebench.check import equivalence as eq
from aebench.spec.load import load_spec


@functools.cache
def case_for(spec_name: str, dtype: str) -> eq.Case:
    """The shipped spec's equivalence case in ``dtype``, built once per test session."""
    return eq.make_case(load_spec(spec_name).replace(dtype=dtype))
