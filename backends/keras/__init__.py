"""Keras 3 backend: one plugin per Keras engine (keras = TensorFlow, keras-jax, keras-torch).

Keras picks its engine when it is first imported, so an engine other than the one already
imported in this process cannot load here: its loader raises NeedsOwnProcess and the
registry runs that backend in a worker process of its own. Importing this module does not
import keras.
"""

from __future__ import annotations

import os
import sys

from aebench.backend_api import NeedsOwnProcess, Plugin

ENGINES = {"keras": "tensorflow", "keras-jax": "jax", "keras-torch": "torch"}
_FRAMEWORK = {"tensorflow": "keras+tensorflow", "jax": "keras+jax", "torch": "keras+torch"}
_INSTALL = {"tensorflow": "pip install 'aebench[keras]'", "jax": "pip install 'aebench[keras,jax]'",
            "torch": "pip install torch==2.13.0 'aebench[keras,torch]'"}


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


def _plugin(name: str) -> Plugin:
    engine = ENGINES[name]
    return Plugin(name=name, framework=_FRAMEWORK[engine], load=_loader(engine), install_hint=_INSTALL[engine],
                  requires=("keras", engine))


PLUGIN = _plugin("keras")
PLUGIN_JAX = _plugin("keras-jax")
PLUGIN_TORCH = _plugin("keras-torch")
