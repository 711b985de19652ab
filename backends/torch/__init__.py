"""PyTorch backend: the plugin entry point. Importing this module does not import torch;
``PLUGIN.load()`` does, so a missing torch makes the backend unavailable, not a crash."""

from aebench.plugins.plugin import Plugin


def _load():
    from .backend import TorchBackend

    return TorchBackend()


def _bench():
    from . import bench

    return bench


def _peak():
    from . import peak

    return peak


def _precision():
    from . import precision

    return precision


PLUGIN = Plugin(
    name="torch",
    framework="torch",
    load=_load,
    bench=_bench,
    peak=_peak,
    precision=_precision,
    distributions=("torch",),
    reference_rank=0,
    install_hint="pip install torch==2.13.0 'aebench[torch]'",
)
