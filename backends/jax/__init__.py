"""JAX backend (Flax layers, Optax or the reference Adam, jit-compiled steps): the plugin
entry point. Importing this module does not import jax; ``PLUGIN.load()`` does."""

from aebench.backend_api import Plugin


def _load():
    from .backend import JaxBackend

    return JaxBackend()


PLUGIN = Plugin(name="jax", framework="jax", load=_load, install_hint="pip install 'aebench[jax]'")
