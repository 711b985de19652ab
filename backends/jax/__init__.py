"""JAX backend (Flax layers, Optax or the reference Adam, jit-compiled steps): the plugin
entry point. Importing this module does not import jax; ``PLUGIN.load()`` does."""

from aebench.plugins.plugin import Plugin

# JAX preallocates 75% of a GPU per process: a second process (a Keras-on-JAX worker, the
# next cell) then cannot allocate. Allocating on demand lets processes share the device.
SHARE_GPU = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}


def _load():
    from .backend import JaxBackend

    return JaxBackend()


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
    name="jax",
    framework="jax",
    load=_load,
    bench=_bench,
    peak=_peak,
    precision=_precision,
    distributions=("jax", "jaxlib", "flax", "optax"),
    reference_rank=1,
    install_hint="pip install 'aebench[jax]'",
    requires=("jax", "flax", "optax"),
    environment=SHARE_GPU,
)
