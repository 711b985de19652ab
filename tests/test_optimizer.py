"""Weight decay and the exponential learning-rate schedule (docs/EQUIVALENCE.md, 'Adam').

A tiny height/weight VAE trains STEPS steps, EPOCH_STEPS a schedule epoch, on every backend,
and is compared with backend.gradients followed by the NumPy reference Adam in float64 at the
trajectory tolerances. Each convention is then swapped in the NumPy update alone, and the
backend's run must be off from it by more than that tolerance (and 100 times its own error):
the test would catch a backend that swapped it.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import textwrap
from dataclasses import replace
from itertools import islice
from pathlib import Path
from typing import Optional

import numpy as np
import pytest
import yaml
from cases import cheap_backend  # tests/ is on sys.path (pytest prepend import mode)

from aebench.bench.data import make_bench_data
from aebench.check import equivalence as eq
from aebench.check.tolerances import (
    LOSS_FLOOR_OF_TOTAL,
    TRAJECTORY_EPOCH_STEPS,
    TRAJECTORY_STEPS,
    TRAJECTORY_WEIGHT_TOL,
)
from aebench.data.datasets import load_dataset
from aebench.data.noise import CHECK_STREAM, draw_noise, stream
from aebench.errors import AebenchError
from aebench.plugins.adam import NumpyAdam, learning_rates, scalar_tables
from aebench.plugins.backend_api import Batch, Step, loss_term_names
from aebench.plugins.bench_api import Precision
from aebench.plugins.registry import load_backend, plugin
from aebench.spec.load import load_spec
from aebench.spec.schema import Parser
from aebench.spec.types import Adam, ExponentialSchedule, Spec, WeightDecay
from aebench.train import loop

EPOCH_STEPS = 4  # n_train 64 / batch 16
STEPS = 10  # epochs of 4, 4 and 2 updates: two schedule boundaries
LEAKY = {"name": "leaky_relu", "negative_slope": 0.3}
TINY = {
    "model": {
        "encoder": [{"type": "dense", "units": 8, "activation": LEAKY}],
        "decoder": [{"type": "dense", "units": 8, "activation": LEAKY}, {"type": "dense", "units": 2}],
    },
    "data": {"name": "height_weight", "n_train": 64, "n_test": 16, "seed": 0},
    "optimizer": {
        "learning_rate": 1.0e-2,
        "schedule": {"name": "exponential", "gamma": 0.5, "per": "epoch"},
    },
    "train": {"batch_size": 16, "epochs": 3, "seed": 42},
    "dtype": "float64",
}
FORMS = ("coupled", "decoupled")
STOCK_TOL = 5e-5
"""Stock against the reference, float64, weights relative to each array's largest: Keras'
epsilon hat (measured <= 6.6e-6), optax's own order of operations (1.0e-8), torch (3e-16,
the same arithmetic); every swapped convention below is off by more than 8e-2."""


def merged(base: dict, override: dict) -> dict:
    """``override`` on ``base``, mappings key by key (what ``extends`` does)."""
    out = dict(base)
    for key, value in override.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


@functools.cache
def tiny_spec(form: str, implementation: str = "reference") -> Spec:
    """vae_toy shrunk to 2-8-2 on 64 examples, Adam with ``form`` decay and an epoch schedule."""
    optimizer = {"implementation": implementation, "weight_decay": {"form": form, "coefficient": 0.05}}
    override = merged(TINY, {"name": f"tiny_{form}", "optimizer": optimizer})
    return Parser("<tiny>").parse_dataclass(Spec, merged(load_spec("vae_toy").to_dict(), override), "")


@functools.cache
def tiny_case(form: str, implementation: str = "reference") -> eq.Case:
    return eq.make_case(tiny_spec(form, implementation))


def tiny_steps(case: eq.Case) -> list[Step]:
    """STEPS consecutive batches of 16 (four an epoch), the VAE's noise drawn per step."""
    rng = stream(3, CHECK_STREAM)
    n = len(case.train_x)
    return [Step(np.arange(16 * i, 16 * (i + 1)) % n, draw_noise(case.spec, case.plan, 16, rng)) for i in range(STEPS)]


def backend_run(backend, case: eq.Case) -> eq.Trajectory:
    model = eq.built(backend, case)
    losses = backend.trainer(model, case.train_x, case.train_labels, EPOCH_STEPS).run(tiny_steps(case))
    return eq.Trajectory(losses, backend.get_weights(model))


def numpy_run(
    backend,
    case: eq.Case,
    opt: Adam,
    decays_biases: bool = True,
    steps: Optional[list[Step]] = None,
    steps_per_epoch: int = EPOCH_STEPS,
) -> eq.Trajectory:
    """backend.gradients followed by NumpyAdam(opt) on ``steps`` (default tiny_steps);
    ``decays_biases=False`` runs the biases through an Adam without weight decay (the swap of
    'every parameter is decayed')."""
    probe, weights, losses = eq.built(backend, case), dict(case.weights), []
    biases = {k for k in weights if k.endswith(".bias") and not decays_biases}
    adams = {
        True: NumpyAdam(opt, {k: v for k, v in weights.items() if k not in biases}, steps_per_epoch),
        False: NumpyAdam(replace(opt, weight_decay=None), {k: weights[k] for k in biases}, steps_per_epoch),
    }
    for step in tiny_steps(case) if steps is None else steps:
        backend.set_weights(probe, weights)
        terms, grads = backend.gradients(probe, Batch(case.train_x[step.indices], None, step.noise))
        losses.append([terms[t] for t in loss_term_names(case.spec)])
        for decayed, adam in adams.items():
            part = {k: v for k, v in weights.items() if (k not in biases) == decayed}
            weights.update(adam.update(part, {k: grads[k] for k in part}))
    return eq.Trajectory(np.array(losses), weights)


def disagreement(backend, got: eq.Trajectory, want: eq.Trajectory, case: eq.Case) -> list[str]:
    """The failures of aebench check's float64 trajectory comparison (1e-8; a backend's known
    gaps, keras-torch's float32 Dense layers, replace it with theirs)."""
    return eq.failures(eq.compare_trajectories(eq.Judge(backend.name, "float64"), got, want, eq.term_names(case)))


def trajectory_error(got: eq.Trajectory, want: eq.Trajectory) -> float:
    """The largest error that comparison measures (losses relative, weights scaled), before any gap."""
    floor = LOSS_FLOOR_OF_TOTAL * np.abs(want.losses[:, 0]).max()
    losses = eq.relative_error(got.losses, want.losses, floor)
    return max(losses, *(eq.scaled_error(got.weights[k], w) for k, w in want.weights.items()))


def follows(backend, case: eq.Case, got: eq.Trajectory, opt: Adam, *swaps: eq.Trajectory) -> None:
    """``got`` passes the trajectory check against the NumPy update of ``opt``, and is off by
    more than that check's bound (and by 100 times its own error) from each swapped update."""
    want = numpy_run(backend, case, opt)
    assert not disagreement(backend, got, want, case)
    bound = max(TRAJECTORY_WEIGHT_TOL["float64"], 100 * trajectory_error(got, want))
    for swapped in swaps:
        assert trajectory_error(got, swapped) > bound


def worst_weight_error(got: eq.Trajectory, want: eq.Trajectory) -> float:
    return max(eq.scaled_error(got.weights[k], w) for k, w in want.weights.items())


def swapped_form(opt: Adam) -> Adam:
    other = {"coupled": "decoupled", "decoupled": "coupled"}
    return replace(opt, weight_decay=replace(opt.weight_decay, form=other[opt.weight_decay.form]))


@pytest.mark.parametrize("form", FORMS)
def test_coupled_and_decoupled_decay_are_told_apart(backend, form: str) -> None:
    """Coupled: L2 added to the gradient before the moments (torch Adam(weight_decay=));
    decoupled: p *= 1 - lr_t wd (AdamW). The run follows its own form, not the other."""
    case = tiny_case(form)
    follows(
        backend,
        case,
        backend_run(backend, case),
        case.spec.optimizer,
        numpy_run(backend, case, swapped_form(case.spec.optimizer)),
    )


def test_decoupled_decay_is_multiplied_by_the_scheduled_learning_rate(backend) -> None:
    """torch AdamW, optax.adamw and Keras AdamW decay by lr_t * wd; the AdamW paper's form (the
    schedule's multiplier lr_t / lr only) is the reference with coefficient wd / lr."""
    case = tiny_case("decoupled")
    opt = case.spec.optimizer
    paper = replace(
        opt, weight_decay=replace(opt.weight_decay, coefficient=opt.weight_decay.coefficient / opt.learning_rate)
    )
    follows(backend, case, backend_run(backend, case), opt, numpy_run(backend, case, paper))


@pytest.mark.parametrize("form", FORMS)
def test_weight_decay_applies_to_the_biases_too(backend, form: str) -> None:
    """As torch (every parameter given), optax (no mask) and Keras (nothing excluded) do. The
    case's biases are drawn non-zero, so skipping them shows."""
    case = tiny_case(form)
    opt = case.spec.optimizer
    follows(backend, case, backend_run(backend, case), opt, numpy_run(backend, case, opt, decays_biases=False))


def test_the_schedule_steps_once_an_epoch_not_every_step(backend) -> None:
    """ExponentialLR stepped after each epoch (PyTorch-VAE); stepping it every update, or
    decaying smoothly as optax's and Keras' schedules do by default (staircase=False: per step
    with gamma^(1/epoch)), is another run."""
    case = tiny_case("decoupled")
    opt = case.spec.optimizer
    gamma = opt.schedule.gamma
    per_step = replace(opt, schedule=ExponentialSchedule("exponential", gamma, "step"))
    smooth = replace(opt, schedule=ExponentialSchedule("exponential", gamma ** (1 / EPOCH_STEPS), "step"))
    swaps = [numpy_run(backend, case, swapped) for swapped in (per_step, smooth)]
    follows(backend, case, backend_run(backend, case), opt, *swaps)


def test_the_equivalence_trajectory_crosses_epochs_of_its_own(backend) -> None:
    """aebench check's 50-step trajectory gives the trainer an epoch of TRAJECTORY_EPOCH_STEPS
    updates (the spec's epoch may outlast the trajectory), so a schedule's boundaries are in
    the compared run: it follows the NumPy update with that epoch, not one without a boundary."""
    case = tiny_case("decoupled")
    got = eq.trajectory(backend, case)
    steps, opt = eq.trajectory_steps(case), case.spec.optimizer
    no_boundary = numpy_run(backend, case, opt, steps=steps, steps_per_epoch=TRAJECTORY_STEPS)
    want = numpy_run(backend, case, opt, steps=steps, steps_per_epoch=TRAJECTORY_EPOCH_STEPS)
    assert not disagreement(backend, got, want, case)
    assert trajectory_error(got, no_boundary) > max(TRAJECTORY_WEIGHT_TOL["float64"], 100 * trajectory_error(got, want))


@pytest.mark.parametrize("form", FORMS)
def test_the_stock_optimizer_decays_and_schedules_alike(backend, form: str) -> None:
    """implementation: stock (torch Adam/AdamW with ExponentialLR, optax.adam after
    add_decayed_weights / optax.adamw with exponential_decay(staircase=True), Keras Adam with
    the L2 gradient / AdamW with ExponentialDecay(staircase=True)) lands within STOCK_TOL of the
    reference; the same update with the other form, stepped every update or decaying smoothly
    (those schedules' default, staircase=False) does not."""
    case = tiny_case(form, "stock")
    opt = case.spec.optimizer
    got = backend_run(backend, case)
    want = numpy_run(backend, case, opt)
    assert worst_weight_error(got, want) < STOCK_TOL
    if backend.name == "torch":  # the reference is torch's arithmetic
        assert not disagreement(backend, got, want, case)
    gamma = opt.schedule.gamma
    per_step = replace(opt, schedule=ExponentialSchedule("exponential", gamma, "step"))
    smooth = replace(opt, schedule=ExponentialSchedule("exponential", gamma ** (1 / EPOCH_STEPS), "step"))
    for swapped in (swapped_form(opt), per_step, smooth):
        assert worst_weight_error(got, numpy_run(backend, case, swapped)) > 100 * STOCK_TOL


BENCH_MODE = {"jax": "compiled", "keras-jax": "compiled"}
"""JAX's eager mode (disable_jit) is its slowest; its compiled mode reads the same tables."""
BENCH_PROBE = textwrap.dedent("""
    import json, sys
    import numpy as np
    from aebench.bench.cell import bench_steps
    from aebench.bench.data import make_bench_data
    from aebench.data.datasets import load_dataset
    from aebench.plugins.bench_api import Precision
    from aebench.plugins.registry import load_backend, plugin
    from aebench.spec.load import load_spec

    name, steps, worst = sys.argv[1], int(sys.argv[3]), {}
    backend = load_backend(name)
    for path in sys.argv[4:]:
        spec = load_spec(path)
        data = make_bench_data(spec, load_dataset(spec), 16, steps)
        runner = plugin(name).bench().prepare(backend, spec, sys.argv[2], data, Precision(), 1)
        handles = [runner.dispatch() for _ in range(steps)]
        runner.wait(handles[-1])
        model = backend.build(spec)
        backend.set_weights(model, data.weights)
        trainer = backend.trainer(model, data.x, data.labels, data.steps_per_epoch)
        replay = trainer.run(bench_steps(data, steps))[:, 0]
        error = np.abs(runner.losses(handles) - replay) / np.abs(replay)
        worst[spec.name] = [data.steps_per_epoch, float(error.max())]
    print(json.dumps(worst))
""")


def test_bench_steps_replay_on_the_trainer_across_epochs(backend_name: str, tmp_path: Path) -> None:
    """A bench has no epochs: a per-epoch schedule steps every len(train) // batch updates, in
    the reference's host step sizes and decay factors and in the stock optimizers' own
    schedules. The eager runner's losses over three such epochs equal the trainer's (the
    check every cell makes), for both forms and both implementations, in a process of the
    backend's own as a cell runs."""
    paths = []
    for form in FORMS:
        for implementation in ("reference", "stock"):
            spec = tiny_spec(form, implementation)
            path = tmp_path / f"{form}_{implementation}.yaml"
            path.write_text(yaml.safe_dump({**spec.to_dict(), "name": path.stem}, sort_keys=False))
            paths.append(str(path))
    out = subprocess.run(
        [sys.executable, "-c", BENCH_PROBE, backend_name, BENCH_MODE.get(backend_name, "eager"), str(STEPS), *paths],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    worst = json.loads(out.stdout.strip().splitlines()[-1])
    assert sorted(worst) == sorted(Path(p).stem for p in paths)
    for name, (steps_per_epoch, error) in worst.items():
        assert steps_per_epoch == EPOCH_STEPS, name
        assert error <= 1e-12, (name, error)


def test_torch_compiled_modes_refuse_a_stock_schedule_in_one_line() -> None:
    pytest.importorskip("torch", reason="torch is not installed")
    spec = tiny_spec("decoupled", "stock")
    data = make_bench_data(spec, load_dataset(spec), 16, STEPS)
    with pytest.raises(AebenchError, match="cannot run a stock Adam with a learning-rate schedule"):
        plugin("torch").bench().prepare(load_backend("torch"), spec, "compiled", data, Precision(), 1)


def test_bench_step_sizes_follow_the_schedule_with_a_bench_epoch() -> None:
    """Update t (1-based) has lr * gamma^((t - 1) // epoch) / (1 - beta1^t) and, decoupled,
    1 - lr_t wd; the epoch is the cell's len(train) // batch (32 at batch 2 here)."""
    spec = tiny_spec("decoupled")
    data = make_bench_data(spec, load_dataset(spec), 2, 70)
    opt = spec.optimizer
    t = np.arange(1, 71)
    lr = opt.learning_rate * opt.schedule.gamma ** ((t - 1) // 32)
    np.testing.assert_allclose(data.adam_step_size, lr / (1 - opt.beta1**t), rtol=1e-15)
    np.testing.assert_allclose(data.adam_decay_factor, 1 - lr * opt.weight_decay.coefficient, rtol=1e-15)


def test_learning_rates_are_the_previous_rate_times_gamma() -> None:
    """torch's ExponentialLR multiplies the current rate by gamma; lr * gamma**k differs in the
    last bit (from k = 6 for 1e-3 and 0.95). The reference keeps torch's products."""
    schedule = ExponentialSchedule("exponential", 0.95, "step")
    opt = replace(tiny_spec("coupled").optimizer, learning_rate=1e-3, schedule=schedule)
    rates = list(islice(learning_rates(opt, None), 30))
    products = [1e-3]
    for _ in rates[1:]:
        products.append(products[-1] * 0.95)
    assert rates == products
    assert [k for k in range(30) if rates[k] != 1e-3 * 0.95**k][0] == 6


def test_the_training_loop_gives_the_trainer_its_epoch(tmp_path: Path) -> None:
    """train() paces the schedule by its own epochs: len(x_train) // batch_size full batches."""
    seen = []

    class Spy:
        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def trainer(self, model, x, labels, steps_per_epoch=None):
            seen.append((len(x), steps_per_epoch))
            return self.inner.trainer(model, x, labels, steps_per_epoch)

    name = cheap_backend()
    spec = tiny_spec("coupled").replace(train=replace(tiny_spec("coupled").train, epochs=1))
    loop.train(spec, Spy(load_backend(name)), load_dataset(spec), tmp_path)
    assert seen == [(64, 4)]


def test_a_per_epoch_schedule_without_an_epoch_is_refused() -> None:
    with pytest.raises(ValueError, match="steps_per_epoch"):
        NumpyAdam(tiny_spec("coupled").optimizer, {}, None)
    assert scalar_tables(replace(tiny_spec("coupled").optimizer, schedule=None), None, 3)["step_size"].shape == (3,)


def test_weight_decay_and_schedule_round_trip_through_the_resolved_spec() -> None:
    opt = tiny_spec("decoupled").optimizer
    assert opt.weight_decay == WeightDecay("decoupled", 0.05)
    assert opt.schedule == ExponentialSchedule("exponential", 0.5, "epoch")
    assert tiny_spec("decoupled").to_dict()["optimizer"]["weight_decay"] == {"form": "decoupled", "coefficient": 0.05}
