"""The autoencoder spec: a typed, validated, framework-neutral description of one variant.

A spec file is YAML. ``extends: NAME`` takes another spec (``NAME.yaml`` beside the file,
or a path) and overrides the fields given: mappings merge key by key, lists and scalars
are replaced whole, and a mapping whose ``kind`` or ``type`` changes is replaced whole
(``corruption: {kind: masking, fraction: 0.3}`` drops the parent's gaussian std). After merging, the result must be a complete spec: nothing has a
hidden default that differs between frameworks (Adam's epsilon, loss reductions and the
leaky-relu slope are always written out).
"""

from __future__ import annotations

import dataclasses
import importlib.resources
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional, Union

from .errors import SpecError
from .schema import Parser, at_least, checked, did_you_mean, greater_than, in_interval
from .yamlio import read_mapping

ActivationName = Literal["linear", "relu", "leaky_relu", "sigmoid", "tanh"]


@dataclass(frozen=True)
class Activation:
    """An activation: a name, or ``{name: leaky_relu, negative_slope: 0.3}``.

    leaky_relu must state its slope: Keras defaults to 0.3, PyTorch to 0.01.
    """

    name: ActivationName
    negative_slope: Optional[float] = None

    @classmethod
    def from_yaml(cls, parser: Parser, value: Any, path: str) -> "Activation":
        if isinstance(value, str):
            value = {"name": value}
        act = parser.parse_dataclass(cls, value, path)
        if act.name == "leaky_relu" and act.negative_slope is None:
            parser.fail(path, "leaky_relu needs an explicit slope (Keras' default is 0.3, PyTorch's 0.01): "
                              "write {name: leaky_relu, negative_slope: 0.3}")
        if act.name != "leaky_relu" and act.negative_slope is not None:
            parser.fail(f"{path}.negative_slope", f"only allowed with leaky_relu, not {act.name}")
        if act.negative_slope is not None and act.negative_slope < 0:
            parser.fail(f"{path}.negative_slope", f"must be >= 0, got {act.negative_slope!r}")
        return act

    def to_yaml(self) -> Any:
        return self.name if self.negative_slope is None else dataclasses.asdict(self)


LINEAR = Activation("linear")
Padding = Literal["same", "valid"]


@dataclass(frozen=True)
class Dense:
    type: Literal["dense"]
    units: int = checked(at_least(1))
    activation: Activation = LINEAR


@dataclass(frozen=True)
class _Convolution:
    type: str
    filters: int = checked(at_least(1))
    kernel: int = checked(at_least(1))
    stride: int = checked(at_least(1))
    padding: Padding
    activation: Activation = LINEAR


@dataclass(frozen=True)
class Conv(_Convolution):
    """2-D convolution on NHWC images; 'same' pads as TensorFlow does (extra at bottom/right)."""

    type: Literal["conv"]


@dataclass(frozen=True)
class ConvTranspose(_Convolution):
    """2-D transposed convolution; kernel layout (kh, kw, out, in) as in Keras."""

    type: Literal["conv_transpose"]


@dataclass(frozen=True)
class Flatten:
    """Flattens NHWC features in (H, W, C) order, as Keras does."""

    type: Literal["flatten"]


@dataclass(frozen=True)
class Reshape:
    """Reshapes flat features to (H, W, C)."""

    type: Literal["reshape"]
    shape: tuple[int, ...] = checked(lambda s: None if s and min(s) >= 1 else
                                     f"must be a non-empty list of sizes >= 1, got {list(s)}")


Layer = Union[Dense, Conv, ConvTranspose, Flatten, Reshape]


@dataclass(frozen=True)
class Latent:
    """The code (family ae: a Dense layer of ``size`` units with ``activation``) or the
    Gaussian posterior (family vae: two linear Dense heads, mean and log-variance)."""

    size: int = checked(at_least(1))
    activation: Activation = LINEAR


@dataclass(frozen=True)
class Conditioning:
    """Joins the one-hot label to the encoder input ``[x, onehot]`` and to z ``[z, onehot]``."""

    labels: bool
    num_classes: int = checked(at_least(2), default=10)


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
    weight: float = checked(at_least(0))
    features: FeatureReduction
    batch: BatchReduction


@dataclass(frozen=True)
class KL:
    """KL(q(z|x) || N(0, I)) = 0.5 * sum(exp(lv) + mu^2 - 1 - lv), weighted by beta."""

    beta: float = checked(at_least(0))
    features: FeatureReduction
    batch: BatchReduction


@dataclass(frozen=True)
class Sparsity:
    """weight * reduce_j KL(rho || rho_hat_j), rho_hat = batch mean of the (sigmoid) code."""

    rho: float = checked(in_interval(0, 1, closed_low=False, closed_high=False))
    weight: float = checked(at_least(0))
    units: FeatureReduction


@dataclass(frozen=True)
class Contractive:
    """weight * ||J_f(x)||_F^2, the squared Frobenius norm of the code's Jacobian."""

    weight: float = checked(at_least(0))
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
    std: float = checked(greater_than(0))
    clip: Optional[tuple[float, float]] = None


@dataclass(frozen=True)
class Masking:
    """Each input value is set to 0 with probability ``fraction`` (u < fraction)."""

    kind: Literal["masking"]
    fraction: float = checked(in_interval(0, 1, closed_low=False, closed_high=False))


@dataclass(frozen=True)
class SaltAndPepper:
    """With probability fraction/2 a value becomes 0 (u < f/2), with fraction/2 it becomes 1."""

    kind: Literal["salt_and_pepper"]
    fraction: float = checked(in_interval(0, 1, closed_low=False, closed_high=True))


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
    n_train: int = checked(at_least(2), default=1024)
    n_test: int = checked(at_least(1), default=256)
    seed: int = checked(at_least(0), default=0)


DataSpec = Union[Mnist, HeightWeight]


@dataclass(frozen=True)
class Init:
    """How training from scratch draws its start, in NumPy, the same for every backend."""

    kernel: Literal["glorot_uniform", "glorot_normal", "he_normal", "lecun_normal"]
    bias: Literal["zeros"]


@dataclass(frozen=True)
class Adam:
    """Adam with every hyperparameter explicit.

    implementation 'reference' is the shared Adam (EQUIVALENCE.md: bias corrections on the
    host in float64, eps outside the square root), identical in every backend; 'stock' is
    the framework's own optimizer with these hyperparameters, recorded as such.
    """

    name: Literal["adam"]
    learning_rate: float = checked(greater_than(0))
    beta1: float = checked(in_interval(0, 1, closed_low=True, closed_high=False))
    beta2: float = checked(in_interval(0, 1, closed_low=True, closed_high=False))
    epsilon: float = checked(greater_than(0))
    implementation: Literal["reference", "stock"] = "reference"


@dataclass(frozen=True)
class Train:
    batch_size: int = checked(at_least(1))
    epochs: int = checked(at_least(1))
    seed: int = checked(at_least(0))


@dataclass(frozen=True)
class Spec:
    """One autoencoder variant, fully resolved (``extends`` already applied)."""

    name: str
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

    def replace(self, **changes: Any) -> "Spec":
        """A copy with top-level fields replaced (nested: use dataclasses.replace)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """The resolved spec as plain YAML-able data (what a file without extends would say)."""
        return _plain(self)


def _plain(value: Any) -> Any:
    if isinstance(value, Activation):
        return value.to_yaml()
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)
                if getattr(value, f.name) is not None}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


# ---------------------------------------------------------------- loading


def builtin_specs_dir() -> Path:
    """The specs shipped with aebench (the repository's specs/ folder)."""
    return Path(str(importlib.resources.files("aebench.specs")))


def list_specs() -> list[str]:
    """Names of the shipped specs, sorted."""
    return sorted(p.stem for p in builtin_specs_dir().glob("*.yaml"))


def spec_path(name_or_path: str | Path) -> Path:
    """A spec file path for a path or the name of a shipped spec."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    shipped = builtin_specs_dir() / f"{name_or_path}.yaml"
    if shipped.exists():
        return shipped
    raise SpecError(str(name_or_path), "", "no such spec file or shipped spec"
                    f"{did_you_mean(str(name_or_path), list_specs())}; shipped: {', '.join(list_specs())}")


def load_spec(name_or_path: str | Path) -> Spec:
    """Read, merge (``extends``) and validate a spec; raises SpecError on any problem."""
    path = spec_path(name_or_path)
    merged = _merged(path, chain=())
    merged.setdefault("name", path.stem)
    parser = Parser(str(path))
    spec = parser.parse_dataclass(Spec, merged, "")
    from .shapes import plan_model  # shapes imports this module's classes

    _check_consistency(parser, spec)
    plan_model(spec, file=str(path))
    return spec


def _merged(path: Path, chain: tuple[Path, ...]) -> dict:
    data = read_mapping(path)
    parent = data.get("extends")
    if parent is None:
        return data
    if not isinstance(parent, str) or not parent:
        raise SpecError(str(path), "extends", f"must name a spec (a file beside this one, without .yaml); got {parent!r}")
    parent_path = _parent_path(path, parent)
    resolved = path.resolve()
    if parent_path.resolve() in chain + (resolved,):
        cycle = " -> ".join(p.stem for p in chain + (resolved, parent_path.resolve()))
        raise SpecError(str(path), "extends", f"circular inheritance: {cycle}")
    base = _merged(parent_path, chain + (resolved,))
    base.pop("name", None)
    base.pop("description", None)
    return _deep_merge(base, data)


def _parent_path(path: Path, parent: str) -> Path:
    candidate = Path(parent)
    if not candidate.suffix:
        candidate = candidate.with_suffix(".yaml")
    if not candidate.is_absolute():
        candidate = path.parent / candidate
    if not candidate.exists():
        siblings = [p.stem for p in path.parent.glob("*.yaml")]
        raise SpecError(str(path), "extends", f"no spec '{parent}' at {candidate}{did_you_mean(parent, siblings)}")
    return candidate


_TAGS = ("type", "kind", "name")


def _deep_merge(base: dict, override: dict) -> dict:
    """Merge mappings key by key; a mapping that names another tag (kind, type) replaces."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and not _retagged(out[key], value):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _retagged(base: dict, override: dict) -> bool:
    return any(tag in override and override[tag] != base.get(tag) for tag in _TAGS)


def _check_consistency(p: Parser, spec: Spec) -> None:
    """Rules that tie fields together (shapes are checked by shapes.plan_model)."""
    model, loss = spec.model, spec.loss
    if model.family == "vae":
        if loss.kl is None:
            p.fail("loss.kl", "is required for family vae (the ELBO's KL term; beta 0 switches it off)")
        if model.latent.activation != LINEAR:
            p.fail("model.latent.activation", "must be linear for family vae (the heads give mean and log-variance)")
    else:
        if loss.kl is not None:
            p.fail("loss.kl", "only allowed for family vae")
    if loss.reconstruction.kind == "bce" and model.output_activation != "sigmoid":
        p.fail("loss.reconstruction.kind", "bce needs output_activation sigmoid (it is computed from the logits)")
    if loss.sparsity is not None:
        if model.family != "ae" or model.latent.activation.name != "sigmoid":
            p.fail("loss.sparsity", "needs family ae with a sigmoid code (model.latent.activation: sigmoid), "
                                    "so that rho_hat lies in (0, 1)")
    if loss.contractive is not None:
        if model.family != "ae":
            p.fail("loss.contractive", "only allowed for family ae (the Jacobian of the deterministic code)")
        for i, layer in enumerate(model.encoder):
            if not isinstance(layer, Dense):
                p.fail(f"model.encoder[{i}].type", "loss.contractive needs an encoder of dense layers only")
    if isinstance(spec.corruption, Gaussian) and spec.corruption.clip is not None:
        low, high = spec.corruption.clip
        if not low < high:
            p.fail("corruption.clip", f"must be [low, high] with low < high; got [{low:g}, {high:g}]")
    if model.conditional and not isinstance(spec.data, Mnist):
        p.fail("model.conditioning", f"needs labelled data (mnist); {spec.data.name} has no labels")
