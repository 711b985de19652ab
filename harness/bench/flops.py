"""FLOPs of one training step, counted from the spec's shapes (not measured, not guessed).

Convention (the one MFU figures use): the multiply-adds of every layer (each layer kind
counts its own: aebench.layers), two FLOPs each. A training step is the forward pass, the gradients of
every kernel (as many multiply-adds as the forward) and the gradients of every layer's
input, except the first encoder layer's, whose input is data. Bias adds, activations, loss
terms, the optimizer update and the contractive penalty's Jacobian are not counted, so the
achieved GFLOP/s of elementwise-heavy specs is a lower bound of the work done.
"""

from __future__ import annotations

from aebench.layers import kind_of, walk
from aebench.layers.base import LayerPlan
from aebench.spec.shapes import ModelPlan


def layer_macs(layer: LayerPlan) -> int:
    """Multiply-adds of one example through the layer's forward pass (0 for reshapes)."""
    return kind_of(layer.layer).macs(layer)


def data_input_layers(plan: ModelPlan) -> tuple[LayerPlan, ...]:
    """The layers that read the data itself (their input needs no gradient): the first
    encoder layer with weights of its own (inside a block that holds layers, its first such
    layer; the block's projection, which reads the data too, is counted with a gradient), or
    every latent head when the encoder has none."""
    for layer in walk(plan.encoder):
        if layer.params and not layer.children:
            return (layer,)
    return plan.heads


def training_step_flops(plan: ModelPlan, batch_size: int, samples: int = 1) -> int:
    """Forward + kernel gradients + input gradients (but not of the data); the decoder runs on
    ``samples`` rows per example (model.latent.samples: one per posterior sample z)."""
    macs = sum(layer_macs(layer) for layer in plan.encoder + plan.heads)
    macs += samples * sum(layer_macs(layer) for layer in plan.decoder)
    data_macs = sum(layer_macs(layer) for layer in data_input_layers(plan))
    return 2 * batch_size * (3 * macs - data_macs)
