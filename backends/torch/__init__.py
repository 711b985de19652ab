"""PyTorch backend: the plugin entry point. Importing this module does not import torch;
``PLUGIN.load()`` does, so a missing torch makes the backend unavailable, not a crash."""

from aebench.backend_api import Plugin


def _load():
    from .backend import TorchBackend

    return TorchBackend()


PLUGIN = Plugin(name="torch", framework="torch", load=_load,
                install_hint="pip install torch==2.13.0 'aebench[torch]'")
