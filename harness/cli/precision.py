"""``--precision {ieee-fp32,tf32}`` (and its alias ``--tf32``) of ``aebench train``, ``check`` and ``bench``.

The precision is the process's (aebench.plugins.precision): the command sets it before any
backend loads, and each backend applies it once, when it loads.
"""

from __future__ import annotations

import argparse
from typing import Optional

from aebench.plugins.bench_api import PRECISION_NAMES, Precision
from aebench.plugins.precision import set_process_precision


def add_precision_arguments(parser: argparse.ArgumentParser, default: str = "ieee-fp32") -> None:
    """``--precision NAME`` and ``--tf32`` (short for ``--precision tf32``); they exclude each other.
    ``default`` is only named in the help: a command without either reads ``chosen_precision`` None."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--precision",
        choices=PRECISION_NAMES,
        help=f"ieee-fp32: IEEE float32, TF32 off in every framework; tf32: TensorFloat-32 allowed "
        f"everywhere (Ampere and later GPUs). Set once per process, read back and recorded (default {default})",
    )
    group.add_argument("--tf32", dest="precision", action="store_const", const="tf32", help="--precision tf32")


def chosen_precision(args: argparse.Namespace) -> Optional[Precision]:
    """The precision given on the command line, or None where neither flag was given."""
    return Precision(args.precision) if args.precision else None


def set_precision_from(args: argparse.Namespace) -> Precision:
    """Set the process's precision from the command line (default ieee-fp32), before any backend
    loads; the precision set."""
    precision = chosen_precision(args) or Precision()
    set_process_precision(precision)
    return precision
