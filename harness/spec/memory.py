"""What training a spec holds in memory, estimated from its plan and its data set's size, and the
check that it fits this machine.

Loading a spec enforces it with the least data train reads unasked (MNIST as the subset shipped
with aebench, SHIPPED_MNIST_EXAMPLES; one image of each split for an image folder);
`aebench validate` and `aebench train` check it again, before any framework loads, with the
examples of the MNIST file or image folder train would read (datasets.split_sizes), and train
with its --dtype and --nll-k."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Optional

from aebench.errors import SpecError
from aebench.layers import kind_of, spec_path, walk
from aebench.scoring import QualitySettings
from aebench.spec.shapes import LayerPlan, ModelPlan, plan_model
from aebench.spec.types import HeightWeight, Images, Mnist, Spec, Synthetic

BYTES_PER_VALUE = {"float32": 4, "float64": 8}
HOST_BYTES_PER_VALUE = 8
"""The data set, its one-hot labels and the quality step's arrays are NumPy float64 (or int64
labels) whatever the spec's dtype."""

SHIPPED_MNIST_EXAMPLES = (10_000, 2_000)
"""Training and test examples of the MNIST subset shipped with aebench (datasets.bundled_mnist_path),
the least MNIST train reads unasked."""
LEAST_IMAGE_EXAMPLES = (1, 1)
"""Training and test examples of the smallest image folder or npz aebench reads (loading a spec
does not list its folder)."""

FALLBACK_MEMORY_BYTES = 1 << 40
"""The memory assumed where the operating system does not say how much it has."""


@dataclass(frozen=True)
class MemoryNeed:
    """What training a spec holds in memory at its peak, in bytes (an estimate from below).

    Trainable parameters count four times (the weights, their gradients, Adam's two moments),
    state (running statistics) once, and the data
    set once (data_values), for the whole run. On top of them comes the larger of two phases,
    which never overlap: a training step's activations, counted twice (every layer's output at
    the spec's batch size, kept for the backward pass, and its gradient; the decoder's, the noise
    and z k times per example for k = model.latent.samples, with x and the labels repeated k
    times for the loss terms when k > 1), and the quality step's
    scoring (scoring_values). Framework workspaces, the framework's own copy of the data in the
    spec's dtype (on a GPU, or where it cannot share NumPy's), the allocator's slack and the
    figures come on top.
    """

    dtype: str
    batch_size: int
    weights: int
    activations_per_example: int
    examples: int = 0
    """Training plus test examples of the data set."""
    data_values: int = 0
    """Values of the data set as training holds it, float64 whatever the spec's dtype: every
    example's features and label, and for a conditional spec the one-hot label rows of both
    splits (examples x model.conditioning.num_classes; loop.train keeps both for the run)."""
    nll_k: int = 0
    """Importance samples per example of the NLL the quality step estimates (0: none, family ae)."""
    scoring_values: int = 0
    """Values, float64, the quality step holds beyond the data set while it scores the trained
    model: the test split's one-hot labels once more (conditional specs) plus the larger of one
    NLL decode chunk and the NLL's log weights (family vae and categorical; see nll_values)."""
    state_values: int = 0
    """Non-trainable values (running statistics): held once, no gradient and no Adam state."""

    @property
    def parameter_bytes(self) -> int:
        return (4 * self.weights + self.state_values) * BYTES_PER_VALUE[self.dtype]

    @property
    def activation_bytes(self) -> int:
        return 2 * self.activations_per_example * self.batch_size * BYTES_PER_VALUE[self.dtype]

    @property
    def data_bytes(self) -> int:
        return self.data_values * HOST_BYTES_PER_VALUE

    @property
    def scoring_bytes(self) -> int:
        return self.scoring_values * HOST_BYTES_PER_VALUE

    @property
    def total_bytes(self) -> int:
        return self.parameter_bytes + self.data_bytes + max(self.activation_bytes, self.scoring_bytes)

    def describe(self) -> str:
        """'needs about 1.7 MB of memory in float32 (...)' on one line, for `aebench validate` and errors."""
        training = f"{human_bytes(self.activation_bytes)} for activations at batch {self.batch_size}"
        scoring = "the quality step's scoring" + (f" with the NLL at k = {self.nll_k:,}" if self.nll_k else "")
        peak = f"the larger of {training} and {human_bytes(self.scoring_bytes)} for {scoring}"
        return (
            f"needs about {human_bytes(self.total_bytes)} of memory in {self.dtype}, an estimate from below "
            f"({human_bytes(self.parameter_bytes)} for weights, gradients and Adam state, "
            f"{human_bytes(self.data_bytes)} for the data set of {self.examples:,} examples in float64, "
            f"{peak if self.scoring_values else training})"
        )


def memory_need(
    spec: Spec,
    plan: Optional[ModelPlan] = None,
    batch_size: Optional[int] = None,
    sizes: Optional[tuple[int, int]] = None,
    quality: QualitySettings = QualitySettings(),
) -> MemoryNeed:
    """The memory training ``spec`` holds (see MemoryNeed), at its batch size unless given, on
    ``sizes`` (training, test) examples (default: least_sizes), scored with ``quality`` (the
    quality step's defaults unless given)."""
    plan = plan or plan_model(spec)
    n_train, n_test = sizes or least_sizes(spec)
    samples = spec.model.latent.samples  # the decoder runs on this many rows per example
    per_example = math.prod(plan.data_shape) + plan.label_size
    per_example += sum(kind_of(layer.layer).activation_values(layer) for layer in plan.encoder + plan.heads)
    per_example += samples * sum(kind_of(layer.layer).activation_values(layer) for layer in plan.decoder)
    if spec.model.generative:
        per_example += 2 * plan.latent_size * samples  # the noise and z
    if samples > 1:
        per_example += samples * (math.prod(plan.data_shape) + plan.label_size)  # x and labels repeated
    weights = sum(math.prod(p.shape) for p in plan.trainable)
    nll_k = quality.k if spec.model.generative else 0
    return MemoryNeed(
        spec.dtype,
        batch_size or spec.train.batch_size,
        weights,
        per_example,
        n_train + n_test,
        data_values(spec, plan, n_train + n_test),
        nll_k,
        plan.label_size * n_test + (nll_values(plan, quality, n_test) if nll_k else 0),
        state_values=sum(math.prod(p.shape) for p in plan.state),
    )


def least_sizes(spec: Spec) -> tuple[int, int]:
    """(training, test) examples of the least data train reads for ``spec`` unasked: a generated
    set's sizes (the table, synthetic data), one of each for an image folder or npz (what it holds
    is counted by datasets.split_sizes, which reads its listing), or the MNIST subset shipped with
    aebench."""
    if isinstance(spec.data, (HeightWeight, Synthetic)):
        return spec.data.n_train, spec.data.n_test
    if isinstance(spec.data, Images):
        return LEAST_IMAGE_EXAMPLES
    return SHIPPED_MNIST_EXAMPLES


def data_values(spec: Spec, plan: ModelPlan, examples: int) -> int:
    """Values the data set holds in training (datasets.load_dataset, loop.train): each example's
    features, its label where the data has labels (MNIST), and its one-hot label row for a
    conditional spec."""
    labels = 1 if isinstance(spec.data, Mnist) else 0
    return examples * (math.prod(plan.data_shape) + labels + plan.label_size)


def nll_values(plan: ModelPlan, quality: QualitySettings, n_test: int) -> int:
    """Values, float64, the NLL of quality.importance_log_weights holds at least at one time: the
    larger of one decode chunk (rows_per_decode rows of nll_row_values) and the log weights and log
    likelihoods of every scored example, each (examples, k), held twice while they are joined."""
    chunk = quality.rows_per_decode(n_test) * nll_row_values(plan)
    return max(chunk, 4 * quality.examples(n_test) * quality.k)


def nll_row_values(plan: ModelPlan) -> int:
    """Values, float64, one decoded row (an example's sample) of the NLL holds: its noise and z (family
    categorical: the Gumbel noise and the one-hot code), its label row, the example repeated, the
    decoded output and one temporary of the likelihood."""
    return 2 * plan.latent_size + plan.label_size + 3 * math.prod(plan.data_shape)


def largest_nll_k(spec: Spec, plan: ModelPlan, sizes: tuple[int, int], quality: QualitySettings, available: int) -> int:
    """The largest k (at least 1) whose NLL, with ``quality``'s other settings, fits ``available``
    bytes beside the rest of training ``spec``; k beyond quality.decode_rows gets one example per
    decode, so the chunk then grows by one row per sample."""
    rest = memory_need(spec, plan, sizes=sizes, quality=quality)
    left = available - rest.parameter_bytes - rest.data_bytes
    per_k = max(nll_row_values(plan), 4 * quality.examples(sizes[1])) * HOST_BYTES_PER_VALUE
    return max(1, (left - plan.label_size * sizes[1] * HOST_BYTES_PER_VALUE) // per_k)


def physical_memory_bytes() -> int:
    """This machine's physical memory (FALLBACK_MEMORY_BYTES where the system does not tell)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return FALLBACK_MEMORY_BYTES


def check_memory_fits(
    spec: Spec,
    file: str,
    plan: Optional[ModelPlan] = None,
    sizes: Optional[tuple[int, int]] = None,
    quality: QualitySettings = QualitySettings(),
) -> MemoryNeed:
    """The spec's MemoryNeed (see memory_need), or a SpecError naming the field to shrink when it
    exceeds physical memory."""
    plan = plan or plan_model(spec, file)
    sizes = sizes or least_sizes(spec)
    need = memory_need(spec, plan, sizes=sizes, quality=quality)
    available = physical_memory_bytes()
    if need.total_bytes <= available:
        return need
    fits_one_example = memory_need(spec, plan, 1, sizes, quality).total_bytes <= available
    field = "train.batch_size" if fits_one_example else _field_to_shrink(spec, plan, need)
    raise SpecError(file, field, f"the spec {need.describe()}; this machine has {human_bytes(available)} of memory")


def _field_to_shrink(spec: Spec, plan: ModelPlan, need: MemoryNeed) -> str:
    """Where even one example at a time does not fit: the field behind the largest part of the need."""
    one_step = need.parameter_bytes + need.activation_bytes // need.batch_size
    if need.data_bytes < max(one_step, need.scoring_bytes):
        return largest_size_field(plan)
    if plan.label_size > math.prod(plan.data_shape):
        return "model.conditioning.num_classes"
    if isinstance(spec.data, (HeightWeight, Synthetic)):
        return "data.n_train"
    return "data.size" if isinstance(spec.data, Images) else "data"


def largest_size_field(plan: ModelPlan) -> str:
    """The field that sets the largest output of a layer with weights of its own, not only those of
    layers inside it (or the label size): the one to shrink."""
    candidates = [(plan.label_size, "model.conditioning.num_classes")]
    for layer in walk(plan.layers):
        if layer.params and not layer.children and _declared(layer):
            candidates.append((math.prod(layer.out_shape), _size_field(layer)))
    return max(candidates, key=lambda candidate: candidate[0])[1]


def _declared(layer: LayerPlan) -> bool:
    """Whether the spec writes the layer (a list item, or the latent heads), not a layer that another
    plans for itself (a residual block's projection, whose size the block's own layers set)."""
    path = spec_path(layer.name)
    return path == "model.latent" or path.endswith("]")


def _size_field(layer: LayerPlan) -> str:
    path = spec_path(layer.name)
    if path == "model.latent":
        return "model.latent.size"
    size_field = kind_of(layer.layer).size_field
    return f"{path}.{size_field}" if size_field else path


def human_bytes(count: int) -> str:
    """A byte count in decimal units: '1.7 MB', '25.1 TB'; beyond an exabyte, its power of ten."""
    if count >= 10**18:
        return f"about 10^{int((count.bit_length() - 1) * math.log10(2))} bytes"
    value = float(count)
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if value < 1000 or unit == "PB":
            return f"{value:,.0f} {unit}" if unit == "bytes" else f"{value:,.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")
