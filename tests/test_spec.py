"""The spec format: shipped specs, inheritance, and one-line errors for bad specs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cases import TEST_SIZES

from aebench.cli.main import main
from aebench.errors import SpecError
from aebench.losses import present_terms
from aebench.spec.load import SPEC_SETS, builtin_specs_dir, list_specs, load_spec
from aebench.spec.shapes import plan_model
from aebench.spec.types import Gaussian, Masking, SaltAndPepper

GOOD = """\
model:
  family: vae
  encoder:
    - {type: conv, filters: 4, kernel: 3, stride: 2, padding: same, activation: relu}
    - {type: flatten}
  latent: {size: 2}
  decoder:
    - {type: dense, units: 784}
    - {type: reshape, shape: [28, 28, 1]}
  output_activation: sigmoid
loss:
  reconstruction: {kind: bce, weight: 1.0, features: sum, batch: mean}
  kl: {beta: 1.0, features: sum, batch: mean}
data: {name: mnist, flatten: false}
init: {kernel: glorot_uniform, bias: zeros}
optimizer: {name: adam, learning_rate: 1e-3, beta1: 0.9, beta2: 0.999, epsilon: 1e-8}
train: {batch_size: 16, epochs: 1, seed: 0}
dtype: float32
"""


def test_every_shipped_spec_loads_and_plans(spec_name: str) -> None:
    spec = load_spec(spec_name)
    plan = plan_model(spec)
    assert spec.name == spec_name
    assert plan.params, "a spec without weights"


def test_every_test_size_is_its_shipped_spec_at_smaller_widths() -> None:
    """A test size (tests/test_sizes) follows its shipped spec: it extends it (or the test size of
    the spec that one extends, as beta_vae's extends vae_conv's), keeps its name, and differs from
    it only in the model's layers and sizes, the data's size and the batch."""
    for small in sorted(TEST_SIZES.glob("*.yaml")):
        name = small.stem
        assert name in list_specs(), small
        shipped_text = (builtin_specs_dir() / f"{name}.yaml").read_text()
        assert yaml.safe_load(small.read_text())["extends"] in (name, yaml.safe_load(shipped_text).get("extends")), (
            small
        )
        got, shipped = load_spec(small), load_spec(name)
        assert got.name == name, small
        for field in ("loss", "corruption", "optimizer", "init", "dtype"):
            assert getattr(got, field) == getattr(shipped, field), (small, field)
        same_model = ("family", "output_activation", "conditioning")
        assert [getattr(got.model, f) for f in same_model] == [getattr(shipped.model, f) for f in same_model], small
        assert plan_model(got).params


def test_the_ten_variants_of_the_design_are_shipped() -> None:
    names = {p.stem for p in builtin_specs_dir().glob("*.yaml")}
    assert {
        "ae",
        "denoising_ae",
        "sparse_ae",
        "contractive_ae",
        "vae_dense",
        "denoising_vae",
        "vae_conv",
        "beta_vae",
        "cvae",
        "vae_toy",
    } <= names


def test_beta_vae_is_vae_conv_with_beta_four() -> None:
    beta, base = load_spec("beta_vae"), load_spec("vae_conv")
    assert beta.loss.kl.beta == 4.0 and base.loss.kl.beta == 1.0
    assert beta.model == base.model and beta.optimizer == base.optimizer
    assert beta.extends == "vae_conv"


def test_a_child_that_changes_the_corruption_kind_replaces_it_whole() -> None:
    assert isinstance(load_spec("denoising_ae").corruption, Gaussian)
    assert load_spec("denoising_ae_masking").corruption == Masking("masking", 0.3)
    assert load_spec("denoising_ae_salt_pepper").corruption == SaltAndPepper("salt_and_pepper", 0.1)


def test_scientific_notation_without_a_dot_is_a_number(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(GOOD)
    assert load_spec(path).optimizer.learning_rate == 1e-3


def test_seed_numbers() -> None:
    assert load_spec("vae_dense").model.latent.size == 40
    assert load_spec("sparse_ae").loss.sparsity.rho == 0.01
    assert load_spec("denoising_ae").corruption.std == 0.4
    assert load_spec("denoising_vae").corruption.std == 0.2
    assert load_spec("vae_toy").model.encoder[0].activation.negative_slope == 0.3
    assert load_spec("cvae").model.conditional


def edit(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def residual(filters: str, padding: str = "padding: same", *more: str) -> str:
    """A residual block of one 3x3 convolution (``filters``, ``padding``) and ``more`` fields."""
    conv = f"{{type: conv, {filters}, kernel: 3, stride: 1, {padding}}}"
    return f"{{type: residual, layers: [{conv}]{''.join(', ' + m for m in more)}}}"


def with_block(block: str) -> str:
    """GOOD with ``block`` between its convolution (output 14x14x4) and its flatten."""
    return edit(GOOD, "    - {type: flatten}\n", f"    - {block}\n    - {{type: flatten}}\n")


# (case id, files to write {name: text}, the file to validate, text the error must contain)
BAD_SPECS = [
    (
        "unknown-key",
        {"s.yaml": edit(GOOD, "  latent: {size: 2}", "  latnt: {size: 2}")},
        "s.yaml",
        ["model.latnt", "did you mean 'latent'"],
    ),
    (
        "misplaced-key",
        {"s.yaml": GOOD + "epochs: 3\n"},
        "s.yaml",
        ["epochs: unknown key", "did you mean 'train.epochs'"],
    ),
    (
        "wrong-type",
        {"s.yaml": edit(GOOD, "batch_size: 16", "batch_size: sixteen")},
        "s.yaml",
        ["train.batch_size", "must be an integer"],
    ),
    (
        "bool-is-not-int",
        {"s.yaml": edit(GOOD, "batch_size: 16", "batch_size: true")},
        "s.yaml",
        ["train.batch_size", "must be an integer"],
    ),
    (
        "negative-std",
        {"s.yaml": GOOD + "corruption: {kind: gaussian, std: -0.1}\n"},
        "s.yaml",
        ["corruption.std", "must be > 0"],
    ),
    (
        "rho-outside-0-1",
        {
            "s.yaml": edit(
                edit(
                    edit(GOOD, "family: vae", "family: ae"),
                    "  kl: {beta: 1.0, features: sum, batch: mean}",
                    "  sparsity: {rho: 1.5, weight: 0.1, units: sum}",
                ),
                "latent: {size: 2}",
                "latent: {size: 2, activation: sigmoid}",
            )
        },
        "s.yaml",
        ["loss.sparsity.rho", "(0, 1)"],
    ),
    (
        "latent-size-zero",
        {"s.yaml": edit(GOOD, "latent: {size: 2}", "latent: {size: 0}")},
        "s.yaml",
        ["model.latent.size", "must be >= 1"],
    ),
    (
        "kernel-larger-than-input",
        {"s.yaml": edit(GOOD, "kernel: 3", "kernel: 29")},
        "s.yaml",
        ["model.encoder[0].kernel", "larger than its input 28x28"],
    ),
    (
        "decoder-shape-mismatch",
        {"s.yaml": edit(edit(GOOD, "units: 784", "units: 1568"), "shape: [28, 28, 1]", "shape: [28, 28, 2]")},
        "s.yaml",
        ["model.decoder", "outputs shape (28, 28, 2)", "has shape (28, 28, 1)"],
    ),
    (
        "reshape-size-mismatch",
        {"s.yaml": edit(GOOD, "units: 784", "units: 783")},
        "s.yaml",
        ["model.decoder[1].shape", "holds 784 values but its input (783,) holds 783"],
    ),
    ("missing-parent", {"s.yaml": "extends: vae_cnv\n"}, "s.yaml", ["extends", "no spec 'vae_cnv'"]),
    (
        "circular-parent",
        {"a.yaml": "extends: b\n", "b.yaml": "extends: a\n"},
        "a.yaml",
        ["b.yaml: extends", "circular inheritance: a -> b -> a"],
    ),
    ("yaml-syntax-error", {"s.yaml": "model: {family: vae\nloss: [\n"}, "s.yaml", ["s.yaml:", "YAML syntax error"]),
    ("empty-file", {"s.yaml": ""}, "s.yaml", ["empty spec"]),
    ("duplicate-key", {"s.yaml": GOOD + "dtype: float64\n"}, "s.yaml", ["dtype", "appears twice"]),
    (
        "leaky-relu-without-slope",
        {"s.yaml": edit(GOOD, "activation: relu}", "activation: leaky_relu}")},
        "s.yaml",
        ["model.encoder[0].activation", "negative_slope"],
    ),
    (
        "bce-needs-sigmoid",
        {"s.yaml": edit(GOOD, "output_activation: sigmoid", "output_activation: linear")},
        "s.yaml",
        ["loss.reconstruction.kind", "sigmoid"],
    ),
    (
        "unknown-choice",
        {"s.yaml": edit(GOOD, "dtype: float32", "dtype: float16")},
        "s.yaml",
        ["dtype", "one of float32, float64"],
    ),
    ("missing-epsilon", {"s.yaml": edit(GOOD, ", epsilon: 1e-8", "")}, "s.yaml", ["optimizer.epsilon", "is required"]),
    (
        "weight-decay-without-form",
        {"s.yaml": edit(GOOD, "epsilon: 1e-8}", "epsilon: 1e-8, weight_decay: {coefficient: 1e-4}}")},
        "s.yaml",
        ["optimizer.weight_decay.form", "is required (one of coupled, decoupled)"],
    ),
    (
        "weight-decay-without-coefficient",
        {"s.yaml": edit(GOOD, "epsilon: 1e-8}", "epsilon: 1e-8, weight_decay: {form: decoupled}}")},
        "s.yaml",
        ["optimizer.weight_decay.coefficient", "is required"],
    ),
    (
        "decoupled-decay-of-the-whole-weight",
        {
            "s.yaml": edit(
                edit(GOOD, "learning_rate: 1e-3", "learning_rate: 2"),
                "epsilon: 1e-8}",
                "epsilon: 1e-8, weight_decay: {form: decoupled, coefficient: 0.5}}",
            )
        },
        "s.yaml",
        ["optimizer.weight_decay.coefficient", "learning_rate * coefficient must be < 1"],
    ),
    (
        "schedule-without-per",
        {"s.yaml": edit(GOOD, "epsilon: 1e-8}", "epsilon: 1e-8, schedule: {name: exponential, gamma: 0.95}}")},
        "s.yaml",
        ["optimizer.schedule.per", "is required (one of epoch, step)"],
    ),
    (
        "schedule-gamma-out-of-range",
        {"s.yaml": edit(GOOD, "epsilon: 1e-8}", "epsilon: 1e-8, schedule: {name: exponential, gamma: 0, per: epoch}}")},
        "s.yaml",
        ["optimizer.schedule.gamma", "must lie in (0, 1]"],
    ),
    ("dense-on-images", {"s.yaml": edit(GOOD, "    - {type: flatten}\n", "")}, "s.yaml", ["model.encoder", "flat"]),
    (
        "residual-shape-mismatch",
        {"s.yaml": with_block(residual("filters: 8"))},
        "s.yaml",
        ["model.encoder[1].layers: output shape (14, 14, 8) differs from the block's input shape (14, 14, 4)"]
        + ["projection: true"],
    ),
    (
        "residual-without-layers",
        {"s.yaml": with_block("{type: residual, layers: []}")},
        "s.yaml",
        ["model.encoder[1].layers: must hold at least one layer"],
    ),
    (
        "residual-inner-layer-error",
        {"s.yaml": with_block(residual("filtrs: 4"))},
        "s.yaml",
        ["model.encoder[1].layers[0].filtrs: unknown key (did you mean 'filters'?)"],
    ),
    (
        "residual-projection-that-cannot-fit",
        {"s.yaml": with_block(residual("filters: 4", "padding: valid", "projection: true"))},
        "s.yaml",
        ["model.encoder[1].projection: no stride of a 1x1 convolution takes the block's input 14x14"],
    ),
    (
        "dropout-rate-of-one",
        {"s.yaml": edit(GOOD, "    - {type: flatten}\n", "    - {type: dropout, rate: 1.0}\n    - {type: flatten}\n")},
        "s.yaml",
        ["model.encoder[1].rate", "must lie in [0, 1), got 1.0"],
    ),
    (
        "dropout-negative-rate",
        {"s.yaml": edit(GOOD, "    - {type: flatten}\n", "    - {type: dropout, rate: -0.1}\n    - {type: flatten}\n")},
        "s.yaml",
        ["model.encoder[1].rate", "must lie in [0, 1), got -0.1"],
    ),
    (
        "dropout-without-rate",
        {"s.yaml": edit(GOOD, "    - {type: flatten}\n", "    - {type: dropout}\n    - {type: flatten}\n")},
        "s.yaml",
        ["model.encoder[1].rate", "is required"],
    ),
    (
        "categories-on-a-vae",
        {"s.yaml": edit(GOOD, "latent: {size: 2}", "latent: {size: 2, categories: 2}")},
        "s.yaml",
        ["model.latent.categories", "only allowed for family categorical; family is vae"],
    ),
    (
        "categorical-without-temperature",
        {"s.yaml": "extends: gumbel_vae\nmodel: {latent: {temperature: null}}\n"},
        "s.yaml",
        ["model.latent.temperature", "is required for family categorical", "initial, minimum, rate, interval"],
    ),
    (
        "categorical-without-hard",
        {"s.yaml": "extends: gumbel_vae\nmodel: {latent: {hard: null}}\n"},
        "s.yaml",
        ["model.latent.hard", "is required for family categorical", "straight-through"],
    ),
    (
        "categorical-hard-not-a-bool",
        {"s.yaml": "extends: gumbel_vae\nmodel: {latent: {hard: 1}}\n"},
        "s.yaml",
        ["model.latent.hard", "must be true or false"],
    ),
    (
        "categorical-size-not-whole-variables",
        {"s.yaml": "extends: gumbel_vae\nmodel: {latent: {size: 305}}\n"},
        "s.yaml",
        ["model.latent.size", "must be a multiple of model.latent.categories (10)", "got 305"],
    ),
    (
        "categorical-one-category",
        {"s.yaml": "extends: gumbel_vae\nmodel: {latent: {size: 30, categories: 1}}\n"},
        "s.yaml",
        ["model.latent.categories", "must be >= 2"],
    ),
    (
        "categorical-sigmoid-logits",
        {"s.yaml": "extends: gumbel_vae\nmodel: {latent: {activation: sigmoid}}\n"},
        "s.yaml",
        ["model.latent.activation", "must be linear for family categorical"],
    ),
    (
        "temperature-floor-zero",
        {"s.yaml": "extends: gumbel_vae\nmodel: {latent: {temperature: {minimum: 0}}}\n"},
        "s.yaml",
        ["model.latent.temperature.minimum", "must be > 0"],
    ),
    (
        "temperature-interval-zero",
        {"s.yaml": "extends: gumbel_vae\nmodel: {latent: {temperature: {interval: 0}}}\n"},
        "s.yaml",
        ["model.latent.temperature.interval", "must be >= 1"],
    ),
    (
        "categorical-without-its-kl",
        {"s.yaml": "extends: gumbel_vae\nloss: {categorical_kl: null}\n"},
        "s.yaml",
        ["loss.categorical_kl", "is required (for family categorical"],
    ),
    (
        "gaussian-kl-on-categorical",
        {"s.yaml": "extends: gumbel_vae\nloss: {kl: {beta: 1.0, features: sum, batch: mean}}\n"},
        "s.yaml",
        ["loss.kl", "only allowed for family vae"],
    ),
    (
        "categorical-kl-on-a-vae",
        {"s.yaml": edit(GOOD, "  kl: {beta", "  categorical_kl: {weight: 1, features: sum, batch: mean}\n  kl: {beta")},
        "s.yaml",
        ["loss.categorical_kl", "only allowed for family categorical"],
    ),
    (
        "samples-for-an-ae",
        {"s.yaml": "extends: ae\nmodel: {latent: {samples: 2}}\n"},
        "s.yaml",
        ["model.latent.samples", "must be 1 for family ae (only a VAE's posterior is sampled); got 2"],
    ),
    (
        "samples-for-a-categorical-latent",
        {"s.yaml": "extends: gumbel_vae\nmodel: {latent: {samples: 3}}\n"},
        "s.yaml",
        ["model.latent.samples", "must be 1 for family categorical", "got 3"],
    ),
    (
        "samples-zero",
        {"s.yaml": "extends: vae_dense\nmodel: {latent: {samples: 0}}\n"},
        "s.yaml",
        ["model.latent.samples", "must be >= 1, got 0"],
    ),
    (
        "samples-too-many",
        {"s.yaml": "extends: vae_dense\nmodel: {latent: {samples: 10001}}\n"},
        "s.yaml",
        ["model.latent.samples", "must be at most 10000, got 10001"],
    ),
    (
        "iwae-with-one-sample",
        {"s.yaml": "extends: iwae\nmodel: {latent: {samples: 1}}\n"},
        "s.yaml",
        ["model.latent.samples", "must be at least 2 with loss.iwae", "got 1"],
    ),
    (
        "iwae-for-an-ae",
        {"s.yaml": "extends: ae\nloss: {iwae: {weight: 1.0, likelihood: gaussian, variance: 0.5}}\n"},
        "s.yaml",
        ["loss.iwae", "only allowed for family vae"],
    ),
    (
        "iwae-gaussian-without-variance",
        {"s.yaml": "extends: iwae\nloss: {iwae: {likelihood: gaussian}}\n"},
        "s.yaml",
        ["loss.iwae.variance", "is required for likelihood gaussian"],
    ),
    (
        "iwae-bernoulli-with-variance",
        {"s.yaml": "extends: iwae\nloss: {iwae: {variance: 0.5}}\n"},
        "s.yaml",
        ["loss.iwae.variance", "only applies to likelihood gaussian"],
    ),
    (
        "iwae-bernoulli-without-sigmoid",
        {"s.yaml": "extends: iwae\nmodel: {output_activation: linear}\n"},
        "s.yaml",
        ["loss.iwae.likelihood", "bernoulli needs output_activation sigmoid"],
    ),
    (
        "minibatch-weighted-with-samples",
        {"s.yaml": "extends: beta_tcvae\nmodel: {latent: {samples: 2}}\n"},
        "s.yaml",
        ["model.latent.samples", "must be 1 with loss.mutual_information", "got 2"],
    ),
    (
        "dropout-in-a-contractive-encoder",
        {"s.yaml": "extends: contractive_ae\nmodel: {encoder: [{type: dropout, rate: 0.1}]}\n"},
        "s.yaml",
        [
            "model.encoder[0].type",
            "loss.contractive needs an encoder of layers whose Jacobian is their kernel",
            "dropout",
        ],
    ),
]


def vq_decoder(quantizer: str) -> str:
    """A spec extending vq_vae whose decoder's quantizer is ``quantizer`` (a YAML flow mapping's fields)."""
    return (
        "extends: vq_vae\nmodel:\n  decoder:\n    - {type: reshape, shape: [16, 64]}\n"
        f"    - {{type: vector_quantizer, {quantizer}}}\n    - {{type: flatten}}\n    - {{type: dense, units: 784}}\n"
    )


EMA = "codes: 512, update: ema, decay: 0.99, epsilon: 1.0e-5"  # vq_vae's own quantizer
BAD_SPECS += [
    (
        "vq-ema-without-decay",
        {"s.yaml": vq_decoder("codes: 512, update: ema, epsilon: 1.0e-5")},
        "s.yaml",
        ["model.decoder[1].decay: is required with update: ema"],
    ),
    (
        "vq-gradient-with-a-decay",
        {"s.yaml": vq_decoder("codes: 512, update: gradient, decay: 0.99")},
        "s.yaml",
        ["model.decoder[1].decay: is only for update: ema"],
    ),
    (
        "vq-no-codes",
        {"s.yaml": vq_decoder("codes: 0, update: gradient")},
        "s.yaml",
        ["model.decoder[1].codes", "must be >= 1"],
    ),
    (
        "vq-ema-with-the-codebook-term",
        {"s.yaml": vq_decoder(EMA) + "loss: {codebook: {weight: 1.0, features: mean, batch: mean}}\n"},
        "s.yaml",
        ["loss.codebook: is not used with update: ema (model.decoder[1] moves its codebook by moving averages)"],
    ),
    (
        "vq-gradient-without-the-codebook-term",
        {"s.yaml": vq_decoder("codes: 512, update: gradient")},
        "s.yaml",
        ["loss.codebook: is required (model.decoder[1] learns its codebook by gradient"],
    ),
    (
        "vq-without-the-commitment-term",
        {"s.yaml": "extends: vq_vae\nloss: {commitment: null}\n"},
        "s.yaml",
        ["loss.commitment: is required (model.decoder[1] quantizes the code"],
    ),
    (
        "codebook-term-without-a-quantizer",
        {"s.yaml": "extends: ae\nloss: {codebook: {weight: 1.0, features: mean, batch: mean}}\n"},
        "s.yaml",
        ["loss.codebook: needs a vector_quantizer layer in model.decoder"],
    ),
    (
        "vq-in-the-encoder",
        {
            "s.yaml": "extends: vq_vae\nmodel:\n  encoder:\n    - {type: reshape, shape: [49, 16]}\n"
            f"    - {{type: vector_quantizer, {EMA}}}\n    - {{type: flatten}}\n"
        },
        "s.yaml",
        ["model.encoder[1].type: vector_quantizer belongs in model.decoder"],
    ),
]


@pytest.mark.parametrize("files, target, expected", [pytest.param(f, t, e, id=i) for i, f, t, e in BAD_SPECS])
def test_bad_spec_gives_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture, files: dict, target: str, expected: list[str]
) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    path = tmp_path / target
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert str(tmp_path) in err
    for fragment in expected:
        assert fragment in err


def test_spec_error_names_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(edit(GOOD, "latent: {size: 2}", "latent: {size: -1}"))
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert (info.value.file, info.value.field) == (str(path), "model.latent.size")


def test_the_installed_command_exits_2_without_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(edit(GOOD, "batch_size: 16", "batch_size: -4"))
    proc = subprocess.run([sys.executable, "-m", "aebench.cli", "train", str(path)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"aebench: error: {path}: train.batch_size: must be >= 1, got -4"]


@pytest.mark.parametrize("name", [name for spec_set in SPEC_SETS for name in list_specs(spec_set)])
def test_a_spec_set_member_is_checked_through_its_parts(name: str) -> None:
    """A spec of a set (e.g. rgb64/wae_mmd_bn64) is the model of vae_conv_bn64 with the family and
    loss of its main-set namesake (wae_mmd): the same encoder, the same decoder after any layers
    of kinds the namesake's decoder has (a vector quantizer and the reshapes around it). The
    suite checks both parts on every backend, so it checks the member without computing its
    64x64 model again (the latent's size is a width, free to differ)."""
    member, model = load_spec(name), load_spec("vae_conv_bn64").model
    namesake = load_spec(member.name.removesuffix("_bn64"))
    assert member.model.encoder == model.encoder
    added = len(member.model.decoder) - len(model.decoder)
    assert added >= 0 and member.model.decoder[added:] == model.decoder
    assert {layer.type for layer in member.model.decoder[:added]} <= {layer.type for layer in namesake.model.decoder}
    assert member.model.family == namesake.model.family
    assert present_terms(member.loss) == present_terms(namesake.loss)
    assert name not in list_specs()


def test_samples_at_their_default_leave_the_resolved_spec_and_its_hash_as_they_were() -> None:
    """model.latent.samples is left out of the resolved YAML at 1, so every spec written before it
    existed keeps its spec_sha256 (recorded by bench cells and runs); k = 5 is written out."""
    from aebench.environment import spec_yaml

    assert "samples" not in spec_yaml(load_spec("vae_dense"))
    assert load_spec("vae_dense").model.latent.samples == 1
    resolved = load_spec("iwae").to_dict()
    assert resolved["model"]["latent"]["samples"] == 5
    assert "reconstruction" not in resolved["loss"] and "kl" not in resolved["loss"]
