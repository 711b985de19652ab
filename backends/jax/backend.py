"""The JAX backend (aebench.plugins.backend_api.Backend).

Precision: the process's, set once as jax_default_matmul_precision when the backend loads
(precision.py; ieee-fp32 is Precision.HIGHEST, no TF32 on GPUs); every layer is built at that
level. float64 specs switch on jax_enable_x64 when they are built (a float32 spec keeps explicit
float32 dtypes either way).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from aebench.layers import check_implemented
from aebench.plugins.backend_api import Batch, Noise, Weights, loss_term_names
from aebench.spec.shapes import ENCODED_NAMES, ModelPlan, plan_model
from aebench.spec.types import Spec

from . import weights as canonical
from .losses import TERMS, loss_terms, output
from .model import BUILDERS, Autoencoder, Params
from .precision import allow_float64
from .train import JaxTrainer, grad_fn


@dataclass
class JaxModel:
    spec: Spec
    plan: ModelPlan
    net: Autoencoder
    dtype: jnp.dtype
    params: Params = None  # type: ignore[assignment]  # set_weights sets it before any use
    compiled: dict = field(default_factory=dict)


class JaxBackend:
    name = "jax"

    def __init__(self) -> None:
        self._device = jax.devices()[0]

    def versions(self) -> dict[str, str]:
        import flax
        import jaxlib
        import optax

        return {
            "jax": jax.__version__,
            "jaxlib": jaxlib.__version__,
            "flax": flax.__version__,
            "optax": optax.__version__,
        }

    def device(self) -> str:
        d = self._device
        return d.platform if d.platform == "cpu" else f"{d.platform}:{d.id} ({d.device_kind})"

    def layer_kinds(self) -> frozenset[str]:
        return frozenset(BUILDERS)

    def loss_term_kinds(self) -> frozenset[str]:
        return frozenset(TERMS)

    def build(self, spec: Spec) -> JaxModel:
        check_implemented(self.name, BUILDERS, plan_model(spec).layers)
        allow_float64(spec.dtype)
        dtype = jnp.float64 if spec.dtype == "float64" else jnp.float32
        plan = plan_model(spec)
        return JaxModel(spec, plan, Autoencoder(plan, dtype), dtype)

    def set_weights(self, model: JaxModel, weights: Weights) -> None:
        model.params = canonical.to_params(model.plan, weights, model.dtype, self._device)

    def get_weights(self, model: JaxModel) -> Weights:
        return canonical.to_weights(model.plan.params, model.params)

    def _inputs(self, model: JaxModel, batch: Batch) -> tuple:
        def put(a):
            return None if a is None else jax.device_put(jnp.asarray(a, dtype=model.dtype), self._device)

        noise = batch.noise
        draws = {name: put(draw) for name, draw in noise.draws.items()}
        return put(batch.x), put(batch.labels), put(noise.eps), put(noise.corruption), draws

    def _compiled(self, model: JaxModel, key: str, make):
        if key not in model.compiled:
            model.compiled[key] = jax.jit(make())
        return model.compiled[key]

    def loss_terms(self, model: JaxModel, batch: Batch, training: bool = True) -> dict[str, float]:
        """The terms in training mode (batch statistics, the batch's layer draws; the updated
        state is dropped, model.params kept) or evaluation mode."""

        def terms_of(params, x, labels, eps, corruption, draws):
            return loss_terms(model.net, model.spec, params, x, labels, eps, corruption, draws, training=training)

        fn = self._compiled(model, "loss" if training else "eval-loss", lambda: terms_of)
        terms = fn(model.params, *self._inputs(model, batch))  # a jitted dict comes back key-sorted
        return {name: float(terms[name]) for name in loss_term_names(model.spec)}

    def gradients(self, model: JaxModel, batch: Batch) -> tuple[dict[str, float], Weights]:
        fn = self._compiled(model, "grad", lambda: grad_fn(model.net, model.spec))
        terms, grads, _ = fn(model.params, *self._inputs(model, batch))  # the state is left as it was
        values = np.asarray(terms, dtype=np.float64).tolist()
        return dict(zip(loss_term_names(model.spec), values)), canonical.to_weights(model.plan.trainable, grads)

    def trainer(
        self, model: JaxModel, x: np.ndarray, labels: Optional[np.ndarray], steps_per_epoch: Optional[int] = None
    ) -> JaxTrainer:
        def keep(params: Params) -> None:
            model.params = params

        return JaxTrainer(
            model.net, model.spec, model.params, x, labels, self._device, model.dtype, keep, steps_per_epoch
        )

    def encode(self, model: JaxModel, x: np.ndarray, labels: Optional[np.ndarray]) -> dict[str, np.ndarray]:
        xs, ls, *_ = self._inputs(model, Batch(x, labels, Noise()))
        h = model.net.hidden(model.params, xs, ls)
        names = ENCODED_NAMES
        return {names[p.name]: np.asarray(model.net.head(model.params, p.name, h)) for p in model.plan.heads}

    def decode(self, model: JaxModel, z: np.ndarray, labels: Optional[np.ndarray]) -> np.ndarray:
        zs, ls, *_ = self._inputs(model, Batch(z, labels, Noise()))
        return np.asarray(output(model.spec, model.net.decode_logits(model.params, zs, ls)))
