"""Quality of a trained model on the test split, the same computation for every backend.

Everything is computed in NumPy float64 from the backend's ``encode`` and ``decode`` (the
contract of backend_api), with noise drawn from fixed NumPy streams, so every framework is
scored on the same numbers. The metrics (all per test example, means over the examples):

- ``recon_sse``: squared error summed over the features between clean x and the decoded
  posterior mean (family vae), posterior mode (family categorical: each variable's most
  probable category, one-hot) or code (family ae) of the encoder's input (corrupted for
  denoising specs): latent_point; ``recon_mse`` is the same per feature.
- ``recon_term``: the spec's own (unweighted) reconstruction term (aebench.losses.decoder_term)
  on the test split, as
  training evaluates it (train.evaluate: sampled z, the TEST noise stream); for a spec whose
  decoder term is ``iwae`` that is the negative k-sample importance-weighted bound.
- ``psnr`` (specs with corruption): mean per-image PSNR of the restored images against the
  clean ones, data range 1 (MNIST, image folders and synthetic data all lie in [0, 1]);
  ``psnr_corrupted`` is the corrupted input's PSNR, the baseline the denoiser has to beat.
- ``neg_elbo`` (family vae and categorical): E_q[-log p(x|z)] + KL(q(z|x) || p(z)), the
  expectation estimated with the same k samples as the NLL, the KL in closed form, beta = 1.
- ``nll_is`` (family vae and categorical): -log p(x) estimated by importance sampling with the
  encoder as proposal, -log (1/k) sum_i w_i, w_i = p(x|z_i) p(z_i) / q(z_i|x), z_i ~ q(z|x),
  k = 200 by default, on the first ``nll_examples`` test examples (200 by default: on a CPU the
  conv decoder takes about a second per example at k = 200; pass None for the whole split).
  Per example it is never above the mean of -log w over the same samples (Jensen), a
  Monte Carlo estimate of the negative ELBO.
  Family vae: p(z) = N(0, I), q(z|x) the Gaussian posterior. Family categorical: the discrete
  model the relaxation stands in for: z_i exact one-hot draws of the categorical posterior
  (the Gumbel-max trick, argmax(logits + g), aebench.categorical.posterior_codes), p(z) uniform
  over each variable's K categories, KL(q || Uniform) in closed form. Training optimises the
  relaxed objective at its temperature (soft z) or the straight-through estimate; these two
  score the decoder on one-hot codes, the codes the prior samples of the figures are.
- the present loss terms' own metrics (LossTerm.quality), from the clean encodings of the first
  ``term_examples`` test examples and the model's weights in float64: e.g. ``test_mmd``, or
  ``test_code_perplexity`` and ``test_codes_used`` (the commitment term: the codes the
  decoder's quantizers pick, the decoder run in NumPy up to them).

Decoder likelihoods, in nats:
- BCE specs: Bernoulli, log p(x|z) = sum_d x_d log p_d + (1 - x_d) log(1 - p_d), p = decoded
  probabilities clipped to [eps, 1 - eps] of their dtype (a float32 sigmoid saturates to
  exactly 1 beyond logit 16.6). MNIST here is not binarised (nor are images or synthetic
  data), so for grey pixels this is the cross-entropy the spec trains with, not a normalised
  density: compare these numbers between frameworks, not with binarised-MNIST results in papers.
- MSE specs: Gaussian with the fixed variance whose negative log-density has the spec's
  (unweighted) reconstruction term as its quadratic part: sigma^2 = 1/2 for ``features: sum``,
  D/2 for ``features: mean``; the normalising constant (D/2) log(2 pi sigma^2) is included.
- Specs whose decoder term is another (``iwae``): that term's likelihood (LossTerm.log_likelihood:
  Bernoulli as above, or the Gaussian of the variance it states).

Loss terms add their own metrics (LossTerm.quality: term_metrics), such as ``iwae``'s
``test_nll_k5000``, the k = 5000 importance-sampled NLL of the IWAE paper.

No metric needs labels or MNIST's digits: labels are used only to condition a conditional spec
(which needs MNIST), so every metric applies to image folders and synthetic data as they are.

The encoder sees clean x for the ELBO and the NLL (a property of the generative model), and
the corrupted input for the reconstruction error and the PSNR (the denoiser at work).
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

from aebench.categorical import kl_to_uniform, log_density_ratio, mode_code, posterior_codes
from aebench.data.datasets import Dataset, one_hot
from aebench.data.noise import TEST_STREAM, corrupt, draw_noise, stream
from aebench.losses import LOSS_TERMS, decoder_log_likelihood, decoder_term, present_terms, term_quality
from aebench.losses.base import QualityInputs
from aebench.plugins.backend_api import Backend
from aebench.scoring import QualitySettings
from aebench.spec.shapes import ModelPlan
from aebench.spec.types import Spec
from aebench.train.evaluate import evaluate

RECONSTRUCTION_STREAM_KEY = 100  # stream(seed, TEST_STREAM, 100): corruption of the scored inputs
IMPORTANCE_STREAM_KEY = 101  # stream(seed, TEST_STREAM, 101): the importance samples
TERM_QUALITY_STREAM_KEY = 102  # stream(seed, TEST_STREAM, 102): the loss terms' own metrics
LOG_2PI = float(np.log(2.0 * np.pi))


def quality_metrics(
    backend: Backend,
    model: object,
    spec: Spec,
    plan: ModelPlan,
    data: Dataset,
    settings: QualitySettings = QualitySettings(),
) -> dict[str, float]:
    """Every quality metric that applies to the spec (see the module docstring), by name."""
    labels = _labels(spec, data.y_test)
    metrics = reconstruction_error(backend, model, spec, plan, data.x_test, labels, settings.decode_rows)
    metrics["recon_term"] = evaluate(backend, model, spec, plan, data.x_test, labels)[decoder_term(spec.loss)]
    if spec.model.generative:
        n = settings.examples(len(data.x_test))
        sub_labels = None if labels is None else labels[:n]
        log_w, recon_nll, kl = importance_log_weights(
            backend, model, spec, data.x_test[:n], sub_labels, settings.k, settings.decode_rows
        )
        metrics["neg_elbo"] = float(np.mean(recon_nll.mean(axis=1) + kl))
        metrics["nll_is"] = float(np.mean(nll_from_log_weights(log_w)))
    metrics.update(term_metrics(backend, model, spec, plan, data.x_test[: settings.term_examples], labels))
    return metrics


def latent_point(spec: Spec, encoded: dict[str, np.ndarray]) -> np.ndarray:
    """The latent point a reconstruction is decoded from: the posterior mean (family vae), the
    posterior's mode as one-hot codes (family categorical: aebench.categorical.mode_code) or
    the code (family ae)."""
    if "logits" in encoded:
        categories = spec.model.latent.categories
        assert categories is not None, "family categorical has categories"
        return mode_code(encoded["logits"], categories)
    return encoded["mean"] if "mean" in encoded else encoded["code"]


def term_metrics(
    backend: Backend, model: object, spec: Spec, plan: ModelPlan, x: np.ndarray, labels: Optional[np.ndarray]
) -> dict[str, float]:
    """The present loss terms' own metrics (LossTerm.quality) on the clean encodings of x, with
    the trained decoder (QualityInputs.decode) for those that decode samples and the model's
    canonical weights in float64 (for terms that run layers in NumPy)."""
    if not any(LOSS_TERMS[name].quality for name in present_terms(spec.loss)):
        return {}
    x = x[: pairwise_examples(plan.latent_size)]
    lb = None if labels is None else labels[: len(x)]
    encoded = {k: np.asarray(v, np.float64) for k, v in backend.encode(model, x, lb).items()}
    weights = {k: np.asarray(v, np.float64) for k, v in backend.get_weights(model).items()}
    rng = stream(spec.train.seed, TEST_STREAM, TERM_QUALITY_STREAM_KEY)

    def decode(z: np.ndarray) -> np.ndarray:
        n, s, latent = z.shape
        repeated = None if lb is None else np.repeat(lb[:n], s, axis=0)
        return np.asarray(backend.decode(model, z.reshape(n * s, latent), repeated))  # its dtype: clipping reads it

    labels64 = None if lb is None else np.asarray(lb, np.float64)
    inputs = QualityInputs(spec, plan, encoded, rng, np.asarray(x, np.float64), decode, weights, labels64)
    return term_quality(spec.loss, inputs)


PAIRWISE_VALUES = 20_000_000
"""The most values of one n x n x latent array the terms' metrics may build (160 MB in float64):
their estimators compare every pair of examples per latent dimension."""


def pairwise_examples(latent: int) -> int:
    """How many examples the terms' metrics read at most: n with n^2 latent <= PAIRWISE_VALUES
    (1,000 at latent 20, 395 at latent 128)."""
    return max(2, math.isqrt(PAIRWISE_VALUES // max(1, latent)))


def reconstruction_error(
    backend: Backend,
    model: object,
    spec: Spec,
    plan: ModelPlan,
    x: np.ndarray,
    labels: Optional[np.ndarray],
    rows: int = 2000,
) -> dict[str, float]:
    """recon_sse and recon_mse; psnr and psnr_corrupted for specs with corruption."""
    rng = stream(spec.train.seed, TEST_STREAM, RECONSTRUCTION_STREAM_KEY)
    sse, psnr, psnr_in = [], [], []
    for start in range(0, len(x), rows):
        xb = x[start : start + rows]
        lb = None if labels is None else labels[start : start + rows]
        x_in = corrupt(spec.corruption, xb, draw_noise(spec, plan, len(xb), rng, training=False).corruption)
        encoded = backend.encode(model, x_in, lb)
        restored = np.asarray(backend.decode(model, latent_point(spec, encoded), lb), np.float64)
        sse.append(per_example_sse(xb, restored))
        if spec.corruption is not None:
            psnr.append(per_image_psnr(xb, restored))
            psnr_in.append(per_image_psnr(xb, x_in))
    sse_all = np.concatenate(sse)
    features = int(np.prod(x.shape[1:]))
    metrics = {"recon_sse": float(sse_all.mean()), "recon_mse": float(sse_all.mean() / features)}
    if spec.corruption is not None:
        metrics["psnr"] = float(np.concatenate(psnr).mean())
        metrics["psnr_corrupted"] = float(np.concatenate(psnr_in).mean())
    return metrics


def per_example_sse(clean: np.ndarray, restored: np.ndarray) -> np.ndarray:
    diff = (np.asarray(restored, np.float64) - np.asarray(clean, np.float64)).reshape(len(clean), -1)
    return (diff**2).sum(axis=1)


def per_image_psnr(clean: np.ndarray, restored: np.ndarray, data_range: float = 1.0) -> np.ndarray:
    """10 log10(range^2 / MSE) per image; a perfect image is capped at MSE = 1e-10 (100 dB)."""
    mse = per_example_sse(clean, restored) / np.prod(clean.shape[1:])
    return 10.0 * np.log10(data_range**2 / np.maximum(mse, 1e-10))


def importance_log_weights(
    backend: Backend, model: object, spec: Spec, x: np.ndarray, labels: Optional[np.ndarray], k: int, rows: int = 2000
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(log w, -log p(x|z), KL) for each example: log w and -log p(x|z) of shape (n, k), one
    column per sample z_i ~ q(z|x); KL(q(z|x) || p(z)) of shape (n,), in closed form (family vae:
    to N(0, I); family categorical: to the uniform prior, with one-hot samples)."""
    rng = stream(spec.train.seed, TEST_STREAM, IMPORTANCE_STREAM_KEY)
    per_call = QualitySettings(k=k, decode_rows=rows).examples_per_decode()
    parts = []
    for start in range(0, len(x), per_call):
        xb = x[start : start + per_call]
        lb = None if labels is None else labels[start : start + per_call]
        parts.append(_batch_log_weights(backend, model, spec, xb, lb, k, rng))
    return tuple(np.concatenate(arrays) for arrays in zip(*parts))  # type: ignore[return-value]


def _batch_log_weights(
    backend: Backend,
    model: object,
    spec: Spec,
    x: np.ndarray,
    labels: Optional[np.ndarray],
    k: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    encoded = {key: np.asarray(value, np.float64) for key, value in backend.encode(model, x, labels).items()}
    if spec.model.family == "categorical":
        z, log_ratio, kl = _categorical_samples(spec, encoded, k, rng)
    else:
        z, log_ratio, kl = _gaussian_samples(encoded, k, rng)
    n = len(x)
    repeated = None if labels is None else np.repeat(labels, k, axis=0)
    decoded = backend.decode(model, z.reshape(n * k, -1), repeated)
    recon_ll = decoder_log_likelihood(spec.loss, np.repeat(x, k, axis=0), decoded).reshape(n, k)
    return recon_ll + log_ratio, -recon_ll, kl


def _gaussian_samples(
    encoded: dict[str, np.ndarray], k: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Family vae: k samples z ~ q(z|x) per example (n, k, latent), log p(z) - log q(z|x) of
    each (n, k) under N(0, I), and KL(q(z|x) || N(0, I)) (n,)."""
    mean, log_var = encoded["mean"], encoded["log_var"]
    n, latent = mean.shape
    eps = rng.standard_normal((n, k, latent))
    z = mean[:, None, :] + np.exp(0.5 * log_var)[:, None, :] * eps
    log_prior = -0.5 * (z**2).sum(axis=2) - 0.5 * latent * LOG_2PI
    log_posterior = -0.5 * (eps**2 + log_var[:, None, :]).sum(axis=2) - 0.5 * latent * LOG_2PI
    kl = 0.5 * (np.exp(log_var) + mean**2 - 1.0 - log_var).sum(axis=1)
    return z, log_prior - log_posterior, kl


def _categorical_samples(
    spec: Spec, encoded: dict[str, np.ndarray], k: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Family categorical: k one-hot draws of the categorical posterior per example
    (n, k, N K), log p(z) - log q(z|x) of each under the uniform prior, and the closed-form
    KL(q || Uniform) (the module docstring)."""
    categories = spec.model.latent.categories
    assert categories is not None, "family categorical has categories"
    logits = encoded["logits"]
    codes = posterior_codes(rng, logits, k, categories)
    return codes, log_density_ratio(logits, codes, categories), kl_to_uniform(logits, categories).sum(axis=1)


def nll_from_log_weights(log_w: np.ndarray) -> np.ndarray:
    """-log (1/k) sum_i exp(log_w_i) per row, computed stably."""
    top = log_w.max(axis=1, keepdims=True)
    return -(top[:, 0] + np.log(np.exp(log_w - top).mean(axis=1)))


def _labels(spec: Spec, y: Optional[np.ndarray]) -> Optional[np.ndarray]:
    return one_hot(y, spec.model.conditioning.num_classes) if spec.model.conditional else None
