"""The autoencoder spec: a typed, validated, framework-neutral description of one variant.

These frozen dataclasses are what a spec file says once ``extends`` is merged
(aebench.spec.load). Nothing has a hidden default that differs between frameworks: Adam's
epsilon, loss reductions and the leaky-relu slope are always written out.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Optional, Union

from aebench.layers import LAYER_SCHEMAS
from aebench.layers.activations import LINEAR, Activation
from aebench.layers.base import MAX_SIZE
from aebench.losses import LOSS_SCHEMA
from aebench.spec.schema import Parser, at_least, greater_than, identifier, in_interval, in_range, rule

MAX_SEED = 2**32 - 1
"""NumPy's classic seed range."""
MAX_EXAMPLES = 10_000_000
"""The most examples a generated data set may hold."""
MAX_SAMPLES = 10_000
"""The most posterior samples per example a VAE may draw (model.latent.samples)."""
OMITTED_AT_DEFAULT = {"omitted_at_default": True}
"""Field metadata: the resolved spec (Spec.to_dict) leaves the field out while it holds its
default, so adding such a field kept the YAML, and the spec_sha256, of every existing spec."""

if TYPE_CHECKING:
    Layer = Any
else:
    Layer = LAYER_SCHEMAS
"""One entry of an encoder or decoder list: any registered layer kind (aebench.layers)."""


@dataclass(frozen=True)
class Temperature:
    """The Gumbel-softmax temperature of family categorical, annealed per training step:

        tau_t = max(minimum, initial * exp(-rate * interval * floor(t / interval)))

    t the training step (0-based: the updates taken before it), so tau is updated every
    ``interval`` steps and held in between: Jang et al. 2017's tau = max(0.5, exp(-r t)),
    "updated every N steps" (initial 1, minimum 0.5, rate r, interval N). Computed on the host
    in float64 (aebench.data.noise) and injected with each batch, so every backend and the
    oracle use the same number at the same step. Evaluation (the test loss, quality, figures)
    uses ``minimum``, the schedule's last value, whatever the step: one fixed objective for
    every epoch's test loss.
    """

    initial: float = field(metadata=rule(greater_than(0)))
    minimum: float = field(metadata=rule(greater_than(0)))
    rate: float = field(metadata=rule(at_least(0)))
    interval: int = field(metadata=rule(in_range(1, MAX_SIZE)))

    def at(self, step: int) -> float:
        """tau at training step ``step`` (0-based)."""
        return max(self.minimum, self.initial * math.exp(-self.rate * self.interval * (step // self.interval)))

    @property
    def evaluation(self) -> float:
        """The temperature of evaluation batches: the schedule's floor."""
        return self.minimum


@dataclass(frozen=True)
class Latent:
    """The code (family ae: a Dense layer of ``size`` units with ``activation``), the Gaussian
    posterior (family vae: two linear Dense heads, mean and log-variance), or the categorical
    posterior (family categorical: one linear Dense head of ``size`` logits, size / categories
    variables of ``categories`` categories each, sampled by the Gumbel-softmax at
    ``temperature``, straight-through one-hot where ``hard``: aebench.categorical).
    ``categories``, ``hard`` and ``temperature`` belong to family categorical only.

    ``samples`` (family vae only): k, the posterior samples z drawn per example in training
    and evaluation. With k > 1 the reparameterisation noise is (B, k, size), z is flattened
    example-major to (B k, size) (rows i k .. i k + k - 1 belong to example i) and the decoder
    runs on every row; the loss terms read x repeated the same way (aebench.losses.base.Forward).
    """

    size: int = field(metadata=rule(in_range(1, MAX_SIZE)))
    activation: Activation = LINEAR
    samples: int = field(default=1, metadata={**rule(in_range(1, MAX_SAMPLES)), **OMITTED_AT_DEFAULT})
    categories: Optional[int] = field(default=None, metadata=rule(in_range(2, MAX_SIZE)))
    hard: Optional[bool] = None
    temperature: Optional[Temperature] = None

    @property
    def variables(self) -> int:
        """N, the categorical variables of family categorical (size / categories); else 0."""
        return self.size // self.categories if self.categories else 0


@dataclass(frozen=True)
class Conditioning:
    """Joins the one-hot label to the encoder input ``[x, onehot]`` and to z ``[z, onehot]``."""

    labels: bool
    num_classes: int = field(default=10, metadata=rule(in_range(2, MAX_SIZE)))


@dataclass(frozen=True)
class Model:
    """The network: ``family`` ae (a deterministic code), vae (a Gaussian posterior, z sampled
    with injected normal noise) or categorical (categorical variables, z sampled by the
    Gumbel-softmax with injected Gumbel noise: aebench.categorical); the encoder and decoder
    stacks around the latent heads (aebench.spec.shapes)."""

    family: Literal["ae", "vae", "categorical"]
    encoder: tuple[Layer, ...]
    latent: Latent
    decoder: tuple[Layer, ...]
    output_activation: Literal["sigmoid", "linear", "tanh"]
    conditioning: Optional[Conditioning] = None

    @property
    def conditional(self) -> bool:
        return self.conditioning is not None and self.conditioning.labels

    @property
    def generative(self) -> bool:
        """Family vae or categorical: a posterior sampled with injected noise and a prior to
        draw from (the quality step scores their NLL and ELBO; the figures decode prior samples)."""
        return self.family in ("vae", "categorical")


if TYPE_CHECKING:
    Loss = Any
else:
    Loss = LOSS_SCHEMA
"""The ``loss:`` mapping: one optional entry per registered loss term (aebench.losses)."""


@dataclass(frozen=True)
class Gaussian:
    """x + std * n with n ~ N(0, 1), then clipped to ``clip`` when given."""

    kind: Literal["gaussian"]
    std: float = field(metadata=rule(greater_than(0)))
    clip: Optional[tuple[float, float]] = None


@dataclass(frozen=True)
class Masking:
    """Each input value is set to 0 with probability ``fraction`` (u < fraction)."""

    kind: Literal["masking"]
    fraction: float = field(metadata=rule(in_interval(0, 1, closed_low=False, closed_high=False)))


@dataclass(frozen=True)
class SaltAndPepper:
    """With probability fraction/2 a value becomes 0 (u < f/2), with fraction/2 it becomes 1."""

    kind: Literal["salt_and_pepper"]
    fraction: float = field(metadata=rule(in_interval(0, 1, closed_low=False, closed_high=True)))


Corruption = Union[Gaussian, Masking, SaltAndPepper]


@dataclass(frozen=True)
class Mnist:
    """MNIST scaled to [0, 1]; flat (784,) or images (28, 28, 1)."""

    name: Literal["mnist"]
    flatten: bool = True


@dataclass(frozen=True)
class HeightWeight:
    """The (height, weight) table of seed 000, generated deterministically and standardised."""

    name: Literal["height_weight"]
    n_train: int = field(default=1024, metadata=rule(in_range(2, MAX_EXAMPLES)))
    n_test: int = field(default=256, metadata=rule(in_range(1, MAX_EXAMPLES)))
    seed: int = field(default=0, metadata=rule(in_range(0, MAX_SEED)))


MAX_IMAGE_SIDE = 1 << 15
"""The largest height or width an image data set is resized or cropped to."""
MAX_PATH_CHARS = 4096
"""The longest ``data.path`` (Linux's PATH_MAX)."""


def _image_size(size: tuple[int, ...]) -> Optional[str]:
    """A check for [H, W]: each side 1..MAX_IMAGE_SIDE."""
    if all(1 <= side <= MAX_IMAGE_SIDE for side in size):
        return None
    return f"each side must lie in 1..{MAX_IMAGE_SIDE}; got {list(size)}"


def _data_path(path: str) -> Optional[str]:
    """A check for a path to read: not empty, no NUL byte, at most MAX_PATH_CHARS characters."""
    if path and "\0" not in path and len(path) <= MAX_PATH_CHARS:
        return None
    return f"must be the path of a folder of PNG/JPEG files or of an npz (1 to {MAX_PATH_CHARS} characters, no NUL)"


def _synthetic_shape(shape: tuple[int, ...]) -> Optional[str]:
    """A check for a synthetic example's shape: [D] or [H, W, C] with C 1 or 3, every size >= 1."""
    rank_ok = len(shape) == 1 or (len(shape) == 3 and shape[2] in (1, 3))
    if rank_ok and all(1 <= size <= MAX_SIZE for size in shape):
        return None
    return f"must be [D] (flat) or [H, W, C] with C 1 or 3 (images), every size 1..{MAX_SIZE}; got {list(shape)}"


@dataclass(frozen=True)
class Images:
    """Images from a folder of PNG/JPEG files or an npz, as (H, W, C) in [0, 1] (aebench.data.images).

    Each image is converted to RGB (``channels: 3``) or L (``channels: 1``), centre-cropped to a
    ``center_crop`` square when given, resized to ``size`` [H, W] with Pillow's bilinear filter and
    divided by 255. The test split is the last ceil(N * test_fraction) images in sorted file-name
    order (an npz with x_train and x_test keeps its own split). ``path`` is relative to the working
    directory; ``aebench train --data`` replaces it.
    """

    name: Literal["images"]
    path: str = field(metadata=rule(_data_path))
    size: tuple[int, int] = field(metadata=rule(_image_size))
    channels: Literal[1, 3]
    center_crop: Optional[int] = field(default=None, metadata=rule(in_range(1, MAX_IMAGE_SIDE)))
    test_fraction: float = field(default=0.1, metadata=rule(in_interval(0, 1, closed_low=False, closed_high=False)))


@dataclass(frozen=True)
class Synthetic:
    """Examples drawn i.i.d. uniform in [0, 1) in NumPy from ``seed`` (throughput campaigns without a
    data set): n_train + n_test examples of ``shape`` in one draw, the first n_train for training."""

    name: Literal["synthetic"]
    shape: tuple[int, ...] = field(metadata=rule(_synthetic_shape))
    n_train: int = field(default=1024, metadata=rule(in_range(1, MAX_EXAMPLES)))
    n_test: int = field(default=256, metadata=rule(in_range(1, MAX_EXAMPLES)))
    seed: int = field(default=0, metadata=rule(in_range(0, MAX_SEED)))


DataSpec = Union[Mnist, HeightWeight, Images, Synthetic]


@dataclass(frozen=True)
class Init:
    """How training from scratch draws its start, in NumPy, the same for every backend."""

    kernel: Literal["glorot_uniform", "glorot_normal", "he_normal", "lecun_normal"]
    bias: Literal["zeros"]


@dataclass(frozen=True)
class WeightDecay:
    """Weight decay of every parameter, biases included (torch decays every parameter it is
    given; optax without a ``mask`` and Keras without ``exclude_from_weight_decay`` do too).

    coupled: ``coefficient * p`` is added to the gradient before Adam's moments (torch
    ``Adam(weight_decay=)``, L2 regularisation); the reported loss does not include it.
    decoupled: ``p <- p * (1 - lr_t * coefficient)`` before the Adam step, with lr_t the
    scheduled learning rate of the step (torch ``AdamW``, ``optax.adamw``, Keras ``AdamW``
    and Keras ``Adam(weight_decay=)``; the AdamW paper leaves lr out and keeps only the
    schedule's multiplier). docs/EQUIVALENCE.md, 'Adam'.
    """

    form: Literal["coupled", "decoupled"]
    coefficient: float = field(metadata=rule(in_interval(0, 1, closed_low=True, closed_high=True)))


@dataclass(frozen=True)
class ExponentialSchedule:
    """lr_t = learning_rate * gamma^k, k the periods (epochs or steps, ``per``) completed
    before update t: torch's ``ExponentialLR(gamma)`` stepped after each period, computed as
    it computes it (the previous rate times gamma, in float64 on the host)."""

    name: Literal["exponential"]
    gamma: float = field(metadata=rule(in_interval(0, 1, closed_low=False, closed_high=True)))
    per: Literal["epoch", "step"]


@dataclass(frozen=True)
class Adam:
    """Adam with every hyperparameter explicit.

    implementation 'reference' is the shared Adam (docs/EQUIVALENCE.md, 'Adam': bias
    corrections, the scheduled learning rate and the decoupled decay factor on the host in
    float64, eps outside the square root), identical in every backend; 'stock' is the
    framework's own optimizer and schedule with these hyperparameters, recorded as such.
    No ``weight_decay`` means none; no ``schedule`` means a constant learning rate.
    """

    name: Literal["adam"]
    learning_rate: float = field(metadata=rule(greater_than(0)))
    beta1: float = field(metadata=rule(in_interval(0, 1, closed_low=True, closed_high=False)))
    beta2: float = field(metadata=rule(in_interval(0, 1, closed_low=True, closed_high=False)))
    epsilon: float = field(metadata=rule(greater_than(0)))
    implementation: Literal["reference", "stock"] = "reference"
    weight_decay: Optional[WeightDecay] = None
    schedule: Optional[ExponentialSchedule] = None

    @classmethod
    def from_yaml(cls, parser: Parser, value: Any, path: str) -> Adam:
        """The fields, then the rule that ties two of them: decoupled decay keeps 1 - lr * coefficient > 0."""
        adam = parser.parse_dataclass(cls, value, path)
        decay = adam.weight_decay
        if decay is not None and decay.form == "decoupled" and adam.learning_rate * decay.coefficient >= 1:
            parser.fail(
                f"{path}.weight_decay.coefficient",
                f"decoupled decay multiplies the weights by 1 - learning_rate * coefficient each step, "
                f"so learning_rate * coefficient must be < 1; got {adam.learning_rate:g} * {decay.coefficient:g}",
            )
        return adam


@dataclass(frozen=True)
class Train:
    batch_size: int = field(metadata=rule(in_range(1, MAX_SIZE)))
    epochs: int = field(metadata=rule(in_range(1, MAX_SIZE)))
    seed: int = field(metadata=rule(in_range(0, MAX_SEED)))


@dataclass(frozen=True)
class Spec:
    """One autoencoder variant, fully resolved (``extends`` already applied).

    ``name`` becomes folder and file names, so it is an identifier (schema.IDENTIFIER_RULE).
    """

    name: str = field(metadata=rule(identifier))
    model: Model
    loss: Loss
    data: DataSpec
    init: Init
    optimizer: Adam
    train: Train
    dtype: Literal["float32", "float64"]
    corruption: Optional[Corruption] = None
    description: str = ""
    extends: Optional[str] = None

    def replace(self, **changes: Any) -> Spec:
        """A copy with top-level fields replaced (nested: use dataclasses.replace)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """The resolved spec as plain YAML-able data (what a file without extends would say)."""
        return _plain(self)


def _plain(value: Any) -> Any:
    if isinstance(value, Activation):
        return value.to_yaml()
    if dataclasses.is_dataclass(value):
        return {
            f.name: _plain(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if getattr(value, f.name) is not None
            and not (f.metadata.get("omitted_at_default") and getattr(value, f.name) == f.default)
        }
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value
