"""The autoencoder spec: a typed, validated, framework-neutral description of one variant.

These frozen dataclasses are what a spec file says once ``extends`` is merged
(aebench.spec.load). Nothing has a hidden default that differs between frameworks: Adam's
epsilon, loss reductions and the leaky-relu slope are always written out.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Optional, Union

from aebench.layers import LAYER_SCHEMAS
from aebench.layers.activations import LINEAR, Activation
from aebench.layers.base import MAX_SIZE
from aebench.spec.schema import at_least, greater_than, identifier, in_interval, in_range, rule

MAX_SEED = 2**32 - 1
"""NumPy's classic seed range."""
MAX_EXAMPLES = 10_000_000
"""The most examples a generated data set may hold."""

if TYPE_CHECKING:
    Layer = Any
else:
    Layer = LAYER_SCHEMAS
"""One entry of an encoder or decoder list: any registered layer kind (aebench.layers)."""


@dataclass(frozen=True)
class Latent:
    """The code (family ae: a Dense layer of ``size`` units with ``activation``) or the
    Gaussian posterior (family vae: two linear Dense heads, mean and log-variance)."""

    size: int = field(metadata=rule(in_range(1, MAX_SIZE)))
    activation: Activation = LINEAR


@dataclass(frozen=True)
class Conditioning:
    """Joins the one-hot label to the encoder input ``[x, onehot]`` and to z ``[z, onehot]``."""

    labels: bool
    num_classes: int = field(default=10, metadata=rule(in_range(2, MAX_SIZE)))


@dataclass(frozen=True)
class Model:
    family: Literal["ae", "vae"]
    encoder: tuple[Layer, ...]
    latent: Latent
    decoder: tuple[Layer, ...]
    output_activation: Literal["sigmoid", "linear"]
    conditioning: Optional[Conditioning] = None

    @property
    def conditional(self) -> bool:
        return self.conditioning is not None and self.conditioning.labels


FeatureReduction = Literal["sum", "mean"]
BatchReduction = Literal["mean", "sum"]


@dataclass(frozen=True)
class Reconstruction:
    """mse compares x with sigmoid(logits) (or the linear output); bce uses the logits form."""

    kind: Literal["mse", "bce"]
    weight: float = field(metadata=rule(at_least(0)))
    features: FeatureReduction
    batch: BatchReduction


@dataclass(frozen=True)
class KL:
    """KL(q(z|x) || N(0, I)) = 0.5 * sum(exp(lv) + mu^2 - 1 - lv), weighted by beta."""

    beta: float = field(metadata=rule(at_least(0)))
    features: FeatureReduction
    batch: BatchReduction


@dataclass(frozen=True)
class Sparsity:
    """weight * reduce_j KL(rho || rho_hat_j), rho_hat = batch mean of the (sigmoid) code."""

    rho: float = field(metadata=rule(in_interval(0, 1, closed_low=False, closed_high=False)))
    weight: float = field(metadata=rule(at_least(0)))
    units: FeatureReduction


@dataclass(frozen=True)
class Contractive:
    """weight * ||J_f(x)||_F^2, the squared Frobenius norm of the code's Jacobian."""

    weight: float = field(metadata=rule(at_least(0)))
    batch: BatchReduction


@dataclass(frozen=True)
class Loss:
    reconstruction: Reconstruction
    kl: Optional[KL] = None
    sparsity: Optional[Sparsity] = None
    contractive: Optional[Contractive] = None


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


DataSpec = Union[Mnist, HeightWeight]


@dataclass(frozen=True)
class Init:
    """How training from scratch draws its start, in NumPy, the same for every backend."""

    kernel: Literal["glorot_uniform", "glorot_normal", "he_normal", "lecun_normal"]
    bias: Literal["zeros"]


@dataclass(frozen=True)
class Adam:
    """Adam with every hyperparameter explicit.

    implementation 'reference' is the shared Adam (docs/EQUIVALENCE.md, 'Adam': bias
    corrections on the host in float64, eps outside the square root), identical in every
    backend; 'stock' is the framework's own optimizer with these hyperparameters, recorded
    as such.
    """

    name: Literal["adam"]
    learning_rate: float = field(metadata=rule(greater_than(0)))
    beta1: float = field(metadata=rule(in_interval(0, 1, closed_low=True, closed_high=False)))
    beta2: float = field(metadata=rule(in_interval(0, 1, closed_low=True, closed_high=False)))
    epsilon: float = field(metadata=rule(greater_than(0)))
    implementation: Literal["reference", "stock"] = "reference"


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
        }
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value
