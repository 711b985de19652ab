"""Quality metrics: formulas checked on models whose likelihood is known exactly, and the same
numbers from every backend."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from aebench.check import oracle
from aebench.data.datasets import Dataset, load_dataset
from aebench.layers.activations import sigmoid
from aebench.losses import decoder_log_likelihood
from aebench.losses.reconstruction import bce_with_logits, reconstruction_loss
from aebench.plugins.backend_api import Batch, Noise
from aebench.plugins.canonical import init_weights
from aebench.spec.load import load_spec
from aebench.spec.shapes import plan_model
from aebench.train.quality import (
    QualitySettings,
    importance_log_weights,
    nll_from_log_weights,
    per_image_psnr,
    quality_metrics,
)


class LinearGaussianVAE:
    """A NumPy model with a closed-form marginal: z ~ N(0, I), x | z ~ N(W z + b, I) (vae_toy's
    MSE with features: mean over D = 2 is the unit-variance Gaussian), and an encoder that
    returns the exact posterior, shifted by ``posterior_shift`` and widened by ``posterior_widen``."""

    name = "linear-gaussian"

    def __init__(self, posterior_shift: float = 0.0, posterior_widen: float = 1.0):
        self.w = np.array([[2.0, 0.0], [0.0, 0.5]])  # orthogonal columns: a diagonal posterior
        self.b = np.array([0.3, -0.2])
        self.shift, self.widen = posterior_shift, posterior_widen

    def encode(self, model, x, labels):
        cov = np.linalg.inv(np.eye(2) + self.w.T @ self.w)
        mean = (x - self.b) @ self.w @ cov + self.shift
        return {"mean": mean, "log_var": np.log(np.diag(cov) * self.widen)[None, :].repeat(len(x), axis=0)}

    def decode(self, model, z, labels):
        return z @ self.w.T + self.b

    def exact_nll(self, x):
        cov = self.w @ self.w.T + np.eye(2)
        diff = x - self.b
        maha = np.einsum("ni,ij,nj->n", diff, np.linalg.inv(cov), diff)
        return 0.5 * (maha + np.log(np.linalg.det(cov)) + 2 * np.log(2 * np.pi))


def toy_spec(seed: int = 0):
    spec = load_spec("vae_toy")
    return spec.replace(train=dataclasses.replace(spec.train, seed=seed))


def test_importance_sampling_is_exact_with_the_exact_posterior() -> None:
    model = LinearGaussianVAE()
    x = np.random.default_rng(0).normal(size=(20, 2)) * 2
    log_w, _, _ = importance_log_weights(model, None, toy_spec(), x, None, k=3)
    np.testing.assert_allclose(nll_from_log_weights(log_w), model.exact_nll(x), rtol=1e-12)


def test_importance_sampling_converges_and_never_exceeds_the_sample_elbo() -> None:
    model = LinearGaussianVAE(posterior_shift=0.4, posterior_widen=1.8)
    x = np.random.default_rng(1).normal(size=(10, 2)) * 2
    log_w, recon_nll, kl = importance_log_weights(model, None, toy_spec(), x, None, k=20000)
    nll = nll_from_log_weights(log_w)
    np.testing.assert_allclose(nll, model.exact_nll(x), atol=0.02)
    assert np.all(nll <= -log_w.mean(axis=1))
    neg_elbo = recon_nll.mean(axis=1) + kl
    assert np.all(neg_elbo > model.exact_nll(x) + 0.01)  # a wrong posterior costs ELBO, not NLL


class OneDimensionalBernoulliVAE:
    """p(x|z) = prod_d Bernoulli(sigmoid(a_d z_0 + c_d)) on 784 pixels, only z_0 used; the
    encoder is the Gaussian matched to the true posterior of z_0 (prior for the others).
    log p(x) by quadrature over z_0."""

    def __init__(self, rng: np.random.Generator):
        self.a, self.c = rng.normal(0, 0.15, 784), rng.normal(0, 1.0, 784)
        self.grid = np.linspace(-8, 8, 8001)

    def sample(self, z0: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return (rng.random((len(z0), 784)) < sigmoid(z0[:, None] * self.a + self.c)).astype(np.float64)

    def log_joint(self, x: np.ndarray) -> np.ndarray:
        logits = self.grid[:, None] * self.a + self.c  # log Bernoulli = x * logit - softplus(logit)
        ll = x @ logits.T - np.logaddexp(0.0, logits).sum(axis=1)
        return ll - 0.5 * self.grid**2 - 0.5 * np.log(2 * np.pi)

    def exact_nll(self, x: np.ndarray) -> np.ndarray:
        lj = self.log_joint(x)
        top = lj.max(axis=1, keepdims=True)
        return -(top[:, 0] + np.log(np.trapezoid(np.exp(lj - top), self.grid, axis=1)))

    def encode(self, model, x, labels):
        lj = self.log_joint(x)
        post = np.exp(lj - lj.max(axis=1, keepdims=True))
        post /= post.sum(axis=1, keepdims=True)
        mean0 = post @ self.grid
        var0 = post @ self.grid**2 - mean0**2
        mean, log_var = np.zeros((len(x), 40)), np.zeros((len(x), 40))
        mean[:, 0], log_var[:, 0] = mean0, np.log(var0)
        return {"mean": mean, "log_var": log_var}

    def decode(self, model, z, labels):
        return sigmoid(z[:, :1] * self.a + self.c)


def test_bernoulli_nll_matches_quadrature() -> None:
    rng = np.random.default_rng(2)
    model = OneDimensionalBernoulliVAE(rng)
    x = model.sample(rng.normal(size=6), rng)
    log_w, _, _ = importance_log_weights(model, None, load_spec("vae_dense"), x, None, k=2000)
    np.testing.assert_allclose(nll_from_log_weights(log_w), model.exact_nll(x), atol=0.02)


class MixtureCategoricalModel:
    """Family categorical with one variable of three categories and a closed-form marginal:
    z ~ Uniform(3), x | z = k ~ N(mu_k, I) (vae_toy's MSE with features: mean over D = 2, the
    unit-variance Gaussian); the encoder returns the exact posterior's logits, shifted by
    ``posterior_shift`` on the first category."""

    name = "mixture"

    def __init__(self, posterior_shift: float = 0.0):
        self.mu = np.array([[-2.0, 0.0], [1.0, 1.5], [2.0, -1.0]])
        self.shift = posterior_shift

    def log_likelihoods(self, x: np.ndarray) -> np.ndarray:
        return -0.5 * ((x[:, None, :] - self.mu[None]) ** 2).sum(axis=2) - np.log(2 * np.pi)

    def encode(self, model, x, labels):
        return {"logits": self.log_likelihoods(x) + np.array([self.shift, 0.0, 0.0])}

    def decode(self, model, z, labels):
        return z @ self.mu

    def exact_nll(self, x: np.ndarray) -> np.ndarray:
        ll = self.log_likelihoods(x)
        top = ll.max(axis=1, keepdims=True)
        return -(top[:, 0] + np.log(np.exp(ll - top).mean(axis=1)))


def categorical_toy_spec():
    text = "extends: vae_toy\nmodel: {family: categorical, latent: {size: 3, categories: 3, hard: false, "
    text += "temperature: {initial: 1.0, minimum: 0.5, rate: 0.0, interval: 1}}}\n"
    text += "loss: {kl: null, categorical_kl: {weight: 1.0, features: sum, batch: mean}}\n"
    return text


def test_categorical_importance_sampling_is_exact_with_the_exact_posterior(tmp_path) -> None:
    """One-hot draws of the exact posterior make every importance weight p(x): the NLL is exact
    from three samples; a wrong posterior costs the ELBO (closed-form KL to the uniform prior
    plus the sampled reconstruction) and not the NLL."""
    path = tmp_path / "categorical_toy.yaml"
    path.write_text(categorical_toy_spec())
    spec = load_spec(path)
    x = np.random.default_rng(5).normal(size=(12, 2)) * 2
    exact = MixtureCategoricalModel()
    log_w, _, _ = importance_log_weights(exact, None, spec, x, None, k=3)
    np.testing.assert_allclose(nll_from_log_weights(log_w), exact.exact_nll(x), rtol=1e-12)
    wrong = MixtureCategoricalModel(posterior_shift=1.5)
    log_w, recon_nll, kl = importance_log_weights(wrong, None, spec, x, None, k=20000)
    np.testing.assert_allclose(nll_from_log_weights(log_w), exact.exact_nll(x), atol=0.02)
    q = np.exp(wrong.encode(None, x, None)["logits"])
    q /= q.sum(axis=1, keepdims=True)
    neg_elbo = (q * -wrong.log_likelihoods(x)).sum(axis=1) + (q * np.log(3 * q)).sum(axis=1)
    np.testing.assert_allclose(recon_nll.mean(axis=1) + kl, neg_elbo, atol=0.05)
    assert np.all(neg_elbo > exact.exact_nll(x)) and np.mean(neg_elbo - exact.exact_nll(x)) > 0.05


def test_bernoulli_likelihood_is_minus_the_bce_of_the_logits() -> None:
    rng = np.random.default_rng(3)
    logits, x = rng.normal(0, 4, (5, 784)), rng.random((5, 784))
    ll = decoder_log_likelihood(load_spec("vae_dense").loss, x, sigmoid(logits))
    np.testing.assert_allclose(ll, -bce_with_logits(logits, x).sum(axis=1), rtol=1e-9)


@pytest.mark.parametrize("features", ["sum", "mean"])
def test_gaussian_likelihood_has_the_spec_reconstruction_term_as_its_quadratic_part(features: str) -> None:
    spec = load_spec("ae")
    spec = spec.replace(
        loss=dataclasses.replace(
            spec.loss, reconstruction=dataclasses.replace(spec.loss.reconstruction, features=features)
        )
    )
    rng = np.random.default_rng(4)
    x, out = rng.random((3, 784)), rng.random((3, 784))
    variance = 0.5 if features == "sum" else 0.5 * 784
    constant = 0.5 * 784 * np.log(2 * np.pi * variance)
    terms = [reconstruction_loss(spec.loss.reconstruction, "linear", out[i : i + 1], x[i : i + 1]) for i in range(3)]
    np.testing.assert_allclose(-decoder_log_likelihood(spec.loss, x, out) - constant, terms, rtol=1e-12)


def test_psnr_of_a_known_error() -> None:
    clean = np.full((2, 784), 0.5)
    np.testing.assert_allclose(per_image_psnr(clean, clean + 0.1), [20.0, 20.0])
    np.testing.assert_allclose(per_image_psnr(clean, clean + np.array([[0.01], [0.1]])), [40.0, 20.0])


def small_split(spec, n_test: int) -> Dataset:
    data = load_dataset(spec)
    return Dataset(data.x_train[:8], data.y_train[:8], data.x_test[:n_test], data.y_test[:n_test], data.source)


class OracleBackend:
    """The NumPy float64 oracle behind the encode/decode/loss_terms part of the backend
    contract: the reference every backend's quality numbers are held to."""

    name = "oracle"

    def __init__(self, spec):
        self.spec, self.plan = spec, plan_model(spec)

    def encode(self, weights, x, labels):
        batch = Batch(x, labels, Noise(eps=np.zeros((len(x), self.plan.latent_size))))
        fwd = oracle.forward(self.spec.replace(corruption=None), weights, batch, self.plan)
        return {"mean": fwd.mean, "log_var": fwd.log_var} if fwd.mean is not None else {"code": fwd.code}

    def decode(self, weights, z, labels):
        joined = z if labels is None else np.concatenate([z, labels], axis=1)
        return oracle.output(self.spec, oracle.run_stack(self.plan.decoder, weights, joined))

    def loss_terms(self, weights, batch, training=True):
        return oracle.loss_terms(self.spec, weights, batch, self.plan, training)


def test_every_backend_scores_what_the_oracle_scores(backend) -> None:
    spec = load_spec("denoising_vae")
    plan = plan_model(spec)
    weights = init_weights(plan, spec.init.kernel, spec.train.seed)
    model = backend.build(spec)
    backend.set_weights(model, weights)
    data, settings = small_split(spec, 24), QualitySettings(k=16, nll_examples=12)
    got = quality_metrics(backend, model, spec, plan, data, settings)
    want = quality_metrics(OracleBackend(spec), weights, spec, plan, data, settings)
    assert set(got) == {"recon_sse", "recon_mse", "recon_term", "psnr", "psnr_corrupted", "neg_elbo", "nll_is"}
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-4), key
