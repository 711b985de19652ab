"""What a cell's numbers depend on besides its key, and what a resumed campaign does about it.

A cell's key names its spec, backend, mode, batch size, dtype and precision. Its numbers also
depend on the timing protocol, the steps per call, the data file, the spec's contents (a spec
file edited since) and the framework versions. ``cell_settings`` flattens all of these to
strings; every cell records them, and a campaign resumed with settings that differ from a
recorded cell's refuses (``SettingsChanged``, naming each difference) unless asked to rerun
those cells (``--rerun-changed``) or given a new ``--name``.
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict
from typing import Optional, Protocol

import aebench
from aebench.bench.timing import Protocol as TimingProtocol
from aebench.data.datasets import find_mnist
from aebench.data.images import images_digest
from aebench.environment import file_sha256, installed_versions, spec_sha256
from aebench.errors import AebenchError
from aebench.plugins.discovery import registered_plugins
from aebench.spec.load import load_spec
from aebench.spec.types import HeightWeight, Images, Spec, Synthetic


class Cell(Protocol):
    """What this module reads of a cell (aebench.bench.cell.Cell, which imports this module)."""

    key: str
    spec: str
    backend: str
    dtype: Optional[str]
    steps_per_call: int
    verify: bool
    mnist: Optional[str]
    protocol: TimingProtocol


NOT_RECORDED = "(not recorded)"
MAX_LISTED = 4  # differences named in the error line; the rest are counted


def cell_settings(cell: Cell) -> dict[str, str]:
    """Everything besides the key that changes the cell's numbers, as flat strings:
    ``protocol.*``, ``steps_per_call``, ``verify``, ``spec_sha256`` (of the resolved spec),
    ``data`` (data_setting: the data file's or image folder's sha256, or that it is generated),
    ``version.<distribution>`` of the backend's framework, and ``aebench``'s version. A spec
    that does not load gives its error as its value (its cell then fails saying why)."""
    settings = {f"protocol.{k}": str(v) for k, v in asdict(cell.protocol).items()}
    settings.update(steps_per_call=str(cell.steps_per_call), verify=str(cell.verify), aebench=aebench.__version__)
    try:
        spec = load_spec(cell.spec)
        if cell.dtype:
            spec = spec.replace(dtype=cell.dtype)
        settings["spec_sha256"] = spec_sha256(spec)
    except AebenchError as exc:
        settings["spec_sha256"] = f"does not load: {exc}"
        spec = None
    if spec is not None:
        try:
            settings["data"] = data_setting(spec, cell.mnist)
        except (AebenchError, OSError) as exc:
            settings["data"] = f"not readable: {exc}"
    plugin = registered_plugins().get(cell.backend)
    distributions = plugin.distributions if plugin is not None else ()
    settings.update({f"version.{k}": v for k, v in installed_versions(distributions).items()})
    return settings


def data_setting(spec: Spec, mnist: Optional[str]) -> str:
    """What a cell's data is: generated from the spec (the table, synthetic data), or the sha256 of
    the image folder or npz (images.images_digest) or MNIST file it reads."""
    if isinstance(spec.data, (HeightWeight, Synthetic)):
        return "generated from the spec"
    if isinstance(spec.data, Images):
        return images_data_digest(spec.data)
    return data_digest(mnist)


@functools.lru_cache(maxsize=8)
def images_data_digest(cfg: Images) -> str:
    """images_digest of an images spec's data (a campaign asks once per data set)."""
    return images_digest(cfg)


@functools.lru_cache(maxsize=8)
def data_digest(explicit: Optional[str]) -> str:
    """sha256 of the MNIST file a cell would read (a campaign asks once per data file)."""
    return file_sha256(find_mnist(explicit))


def recorded_settings(row: dict) -> dict[str, str]:
    """The settings a cell record holds ({} for a record of an aebench before they were recorded)."""
    raw = row.get("settings")
    try:
        settings = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in settings.items()} if isinstance(settings, dict) else {}


def differences(recorded: dict[str, str], wanted: dict[str, str]) -> list[str]:
    """'name: recorded -> wanted' for every setting that differs (all of them marked not
    recorded when the record has none)."""
    names = sorted(set(recorded) | set(wanted))
    return [
        f"{name}: {recorded.get(name, NOT_RECORDED)} -> {wanted.get(name, NOT_RECORDED)}"
        for name in names
        if recorded.get(name) != wanted.get(name)
    ]


class SettingsChanged(AebenchError):
    """A resumed campaign would mix cells measured under different settings."""


def changed_cells(cells: list[Cell], records: dict[str, dict]) -> dict[str, list[str]]:
    """For each planned cell already recorded with other settings: its key and the differences."""
    changed = {}
    for cell in cells:
        if cell.key in records:
            found = differences(recorded_settings(records[cell.key]), cell_settings(cell))
            if found:
                changed[cell.key] = found
    return changed


def refuse_changed(campaign: str, changed: dict[str, list[str]]) -> None:
    """SettingsChanged naming the campaign, how many cells and what differs; nothing when none."""
    if not changed:
        return
    distinct = list(dict.fromkeys(d for found in changed.values() for d in found))
    more = len(distinct) - MAX_LISTED
    shown = "; ".join(distinct[:MAX_LISTED]) + (f"; and {more} more" if more > 0 else "")
    raise SettingsChanged(
        f"campaign {campaign}: {len(changed)} recorded cell(s) were measured with other settings ({shown}); "
        "rerun them with --rerun-changed, or keep them and measure into another --name"
    )
