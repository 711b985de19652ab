"""Keras 3 backend: one plugin per Keras engine (keras = TensorFlow, keras-jax, keras-torch).

Keras picks its engine when it is first imported, so an engine other than the one already
imported in this process cannot load here: its loader raises NeedsOwnProcess and the
registry runs that backend in a worker process of its own. Importing this module does not
import keras.
"""

from __future__ import annotations

import os
import sys

from aebench.plugins.plugin import NeedsOwnProcess, Plugin

ENGINES = {"keras": "tensorflow", "keras-jax": "jax", "keras-torch": "torch"}
_FRAMEWORK = {"tensorflow": "keras+tensorflow", "jax": "keras+jax", "torch": "keras+torch"}
_DISTRIBUTIONS = {
    "tensorflow": ("keras", "tensorflow", "tensorflow-cpu"),
    "jax": ("keras", "jax", "jaxlib"),
    "torch": ("keras", "torch"),
}
# Set before the engine is imported, so that processes can share one GPU: JAX preallocates
# 75% of it per process, TensorFlow all of it, unless told to allocate on demand.
_SHARE_GPU = {
    "tensorflow": {"TF_FORCE_GPU_ALLOW_GROWTH": "true"},
    "jax": {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"},
    "torch": {},
}
_INSTALL = {
    "tensorflow": "pip install 'aebench[keras]'",
    "jax": "pip install 'aebench[keras,jax]'",
    "torch": "pip install torch==2.13.0 'aebench[keras,torch]'",
}


def _loader(engine: str):
    def load():
        if "keras" in sys.modules:
            active = sys.modules["keras"].backend.backend()
            if active != engine:
                raise NeedsOwnProcess(f"keras is already imported on its {active} engine in this process")
        else:
            os.environ["KERAS_BACKEND"] = engine
            if engine == "tensorflow":
                os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # oneDNN changes float rounding
                os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        from .backend import KerasBackend

        return KerasBackend(engine)

    return load


def _bench():
    from . import bench

    return bench


def _peak():
    from . import peak

    return peak


def _precision():
    from . import precision

    return precision


def _plugin(name: str, reference_rank: int) -> Plugin:
    engine = ENGINES[name]
    return Plugin(
        name=name,
        framework=_FRAMEWORK[engine],
        load=_loader(engine),
        bench=_bench,
        peak=_peak,
        precision=_precision,
        distributions=_DISTRIBUTIONS[engine],
        reference_rank=reference_rank,
        install_hint=_INSTALL[engine],
        requires=("keras", engine),
        environment=_SHARE_GPU[engine],
    )


PLUGIN = _plugin("keras", reference_rank=2)
PLUGIN_JAX = _plugin("keras-jax", reference_rank=3)
PLUGIN_TORCH = _plugin("keras-torch", reference_rank=4)
