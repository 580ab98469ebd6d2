"""The training step as ONE graph: forward, loss, backward, optimizer update, metrics.

Inputs, in order: the model's inputs, one target per output, the per-sample
weights and the learning rate. Parameters: the model's training state, by the
names kcomp.training.state gives it: the weights, the optimizer's slots, its
iteration count (the training step adds one itself, so per step the host
writes nothing but the batch) and the epoch's running sums. Outputs: the new
values of every updated weight, slot, moving statistic and running sum (the
batch's loss reaches the host only through its running sum, as Keras logs it).
The evaluation step is the same without gradients and weight updates (forward
in inference mode). The running sums are added to inside the step, so a
captured step leaves nothing for the host to launch per batch but its inputs.
An output that carries a Keras mask (a sequence from Embedding(mask_zero=True) or Masking)
weighs its loss and its mean metrics by the mask, as Keras's Loss and MeanMetricWrapper do.
"""

from dataclasses import dataclass, field

from kcomp import losses, ops
from kcomp.errors import ShapeError, format_shape
from kcomp.ir.builder import GraphBuilder
from kcomp.ir.graph import Graph, Value
from kcomp.ir.types import BATCH
from kcomp.ir.verify import verify
from kcomp.metrics import Metric
from kcomp.metrics.base import per_sample as weights_per_sample
from kcomp.optimizers.loss_scale import LOSS_SCALE, LOSS_SCALE_STEPS
from kcomp.passes.autodiff import gradients
from kcomp.training.state import ITERATIONS, accumulator_name, slot_name


@dataclass
class Step:
    graph: Graph
    metric_names: list[str]  # the logs' names after "loss": each output's loss (several outputs), then the metrics
    # The training-state name (kcomp.training.state) each output is the new value of, in output order.
    writes: list[str] = field(default_factory=list)
    # The running sums the step adds each batch into, the loss's first, then one per metric:
    # (parameter name, shape, values counted per sample).
    accumulators: list[tuple] = field(default_factory=list)
    runner: object = None  # what runs it (kcomp.training.runners), made at its first batch
    metrics: list = field(default_factory=list)  # the Metric of each of metric_names (its result())
    # The training step's gradients as the optimizer update reads them (before clipping), one per
    # updated weight in `writes` order: where a data-parallel run reduces them across processes.
    gradients: list = field(default_factory=list)
    masked_losses: list = field(default_factory=list)  # the outputs whose loss is averaged over a Keras mask


def _target_input(b: GraphBuilder, spec, index: int) -> Value:
    shape, dtype = spec
    return b.input((BATCH, *shape), dtype, f"target_{index}")


def _total_loss(model, compiled, outputs, targets, sample_weight, masks):
    """The loss the optimizer minimizes (each output's loss times its loss weight, summed), and
    each output's own loss by name (Keras logs them as <output>_loss when a model has several)."""
    total, per_output = None, []
    names = output_names(model)
    for i, (loss, weight, out, y, mask) in enumerate(zip(compiled.losses, compiled.loss_weights, outputs, targets, masks)):
        if loss is None:
            continue
        values = loss.values(y, out)
        if values.rank and values.shape[0] != BATCH:  # one value per sample, or one for the batch (Dice)
            raise ShapeError(f"loss {loss.name} for output {i} returned shape {format_shape(values.shape)}; expected one value per sample")
        # Keras's reductions; "none" in a compiled model sums, as Keras's compiled loss does.
        reduction = "sum" if loss.reduction in ("none", None) else loss.reduction
        if mask is not None:
            value = losses.reduce_masked(values, mask, sample_weight, reduction, f"loss {loss.name} for output {i}")
        else:
            weights = weights_per_sample(sample_weight, values)
            value = losses.reduce_values(ops.multiply(values, weights), reduction, weights)
        per_output.append((f"{names[i]}_loss", value))
        if weight != 1.0:
            value = ops.multiply(value, float(weight))
        total = value if total is None else ops.add(total, value)
    return total, (per_output if len(per_output) > 1 else [])  # Keras logs them when several outputs have a loss


def _as_float32(outputs: list) -> list:
    """The outputs as the losses and metrics read them: Keras's Loss and Metric convert y_pred to
    their dtype (float32) first, so a mixed-precision model's 16-bit outputs are scored in float32."""
    return [ops.cast(out, "float32") if out.dtype in ("float16", "bfloat16") else out for out in outputs]


def output_names(model) -> list[str]:
    """Keras's output names: the names of the layers whose calls made the model's outputs."""
    names = getattr(model, "output_names", None)
    return list(names) if names else [t.call.layer.name for t in model.outputs]


def _regularization(b: GraphBuilder, variables) -> Value | None:
    penalty = None
    for var in variables:
        reg = var.regularizer
        if reg is None or not (reg.l1 or reg.l2):
            continue
        w = ops._as_value(var, b)
        term = None
        if reg.l1:
            term = ops.multiply(ops.sum(ops.abs(w)), reg.l1)
        if reg.l2:
            l2 = ops.multiply(ops.sum(ops.square(w)), reg.l2)
            term = l2 if term is None else ops.add(term, l2)
        penalty = term if penalty is None else ops.add(penalty, term)
    return penalty


def _metric_states(model, compiled, outputs, targets, sample_weight, masks) -> tuple[list, list[str], list]:
    """What each metric adds to its running state this batch (Metric.state: weighted metrics weigh
    by the sample weights; a mean metric of a masked output by the mask), its name in the logs
    (<output>_<metric> when the model has several outputs, as Keras names them) and the metric."""
    states, names, metrics = [], [], []
    out_names = output_names(model)
    for i, (output_metrics, out, y, mask) in enumerate(zip(compiled.metrics, outputs, targets, masks)):
        for metric in output_metrics:
            weights = sample_weight if metric.weighted else None
            if mask is not None and metric.reads_mask():
                states.append(metric.masked_state(y, out, mask, weights))
                metric = metric.weighted_copy(metric.name)  # its state is a weighted one: [sum of values, of weights]
            else:
                states.append(metric.state(y, out, weights))
            names.append(metric.name if len(outputs) == 1 else f"{out_names[i]}_{metric.name}")
            metrics.append(metric)
    return states, names, metrics


class _PerOutputLoss(Metric):
    """An output's own loss in the logs: its batch means, weighed by batch size, averaged."""


def _logged(per_output, metric_names, metrics) -> tuple[list[str], list]:
    """The logs' names after "loss" (each output's loss, then the metrics) and their metrics."""
    names = [name for name, _ in per_output] + metric_names
    return names, [_PerOutputLoss(name) for name, _ in per_output] + metrics


def _running_sums(b: GraphBuilder, kind: str, total: Value, per_output, sample_weight: Value, metric_states) -> tuple:
    """(new values, their names, Step.accumulators) of the epoch's running sums: the loss times the
    batch size (Keras's loss log weighs each batch by its size), each output's loss likewise,
    and each metric's state."""
    batch = ops.emit("count", sample_weight, axes=(0,))
    increments = [(ops.multiply(total, batch), 1)] + [(ops.multiply(value, batch), 1) for _, value in per_output]
    increments += metric_states
    news, names, accumulators = [], [], []
    for i, (increment, per_sample) in enumerate(increments):
        if increment.dtype != "float32":
            increment = ops.cast(increment, "float32")
        name = accumulator_name(kind, None if i == 0 else i - 1)
        running = b.param(("accumulator", name), increment.shape, "float32", name, trainable=False)
        news.append(ops.add(running, increment))
        names.append(name)
        accumulators.append((name, increment.shape, per_sample))
    return news, names, accumulators


def moving_statistics(model, b: GraphBuilder, forward_nodes) -> tuple[list[Value], list]:
    """BatchNormalization in training: moving = moving * momentum + batch * (1 - momentum).
    The new values and the Variable each replaces."""
    news, variables_updated = [], []
    variables = {v.id: var for var, v in b._param_by_key.items() if hasattr(var, "path")}
    pairs = [pair for node in forward_nodes if node.op == "batch_norm_train"
             for pair in ((node.inputs[1], node.outputs[1]), (node.inputs[2], node.outputs[2]))]
    pairs += b.batch_statistics  # a synchronized BatchNormalization's statistics over the whole job
    for moving, batch in pairs:
        # The layer that owns the moving statistic: found the same way inside nested models.
        momentum = variables[moving.id].owner.momentum
        kept = ops.multiply(moving, float(momentum))
        news.append(ops.add(kept, ops.multiply(batch, 1.0 - float(momentum))))
        variables_updated.append(variables[moving.id])
    return news, variables_updated


def build_train_step(model, compiled, target_specs) -> Step:
    b = GraphBuilder(f"{model.name}_train_step")
    done = b.param(("optimizer", "iterations"), (), "float32", ITERATIONS, trainable=False)
    with ops.tracing(b), b.scope("optimizer"):
        step_number = ops.add(done, 1.0)  # this step's number, counting from 1 (Keras's iterations + 1)
    b.rng_counter = step_number  # dropout draws its mask from (seed, step number): a new mask every step
    outputs = model.trace_into(b, training=True)
    masks = [b.masks.get(out.id) for out in outputs]
    forward_nodes = list(b.nodes)
    with ops.tracing(b), b.scope("loss"):
        outputs = _as_float32(outputs)
        targets = [_target_input(b, spec, i) for i, spec in enumerate(target_specs)]
        sample_weight = b.input((BATCH,), "float32", "sample_weight")
        lr = b.input((), "float32", "learning_rate")
        total, per_output = _total_loss(model, compiled, outputs, targets, sample_weight, masks)
        penalty = _regularization(b, model.trainable_weights)
        if penalty is not None:
            total = ops.add(total, penalty)
        metric_states, metric_names, metrics = _metric_states(model, compiled, outputs, targets, sample_weight, masks)
        moving, moving_variables = moving_statistics(model, b, forward_nodes)
        sums, sum_names, accumulators = _running_sums(b, "train", total, per_output, sample_weight, metric_states)
        log_names, log_metrics = _logged(per_output, metric_names, metrics)
    trainable = [(var, v) for var, v in b._param_by_key.items() if hasattr(var, "path") and v.id not in b.frozen_params]
    loss_scale = None
    if getattr(compiled.optimizer, "counts_on_device", False):  # a LossScaleOptimizer: gradients of loss * scale
        with ops.tracing(b), b.scope("optimizer"):
            loss_scale = (b.param(("optimizer", "dynamic_scale"), (), "float32", LOSS_SCALE, trainable=False),
                          b.param(("optimizer", "step_counter"), (), "float32", LOSS_SCALE_STEPS, trainable=False))
            total = ops.multiply(total, loss_scale[0])
    grads = gradients(b, total, [v for _, v in trainable])
    trainable = [(var, v, g) for (var, v), g in zip(trainable, grads) if g is not None]
    optimizer = compiled.optimizer
    optimizer.build([var for var, _, _ in trainable])
    with b.scope("optimizer"):
        slots = [
            [b.param(("slot", var.path, j), var.shape, var.dtype, slot_name(var.path, j), trainable=False)
             for j in range(optimizer.slots_per_param)]
            for var, _, _ in trainable
        ]
        if loss_scale is None:
            clipped = optimizer.clip(b, [g for _, _, g in trainable])
            new_params, new_slots = optimizer.emit_update(b, [v for _, v, _ in trainable], clipped, slots, lr, step_number)
            count, scale_state = step_number, []
        else:
            *updated, count, new_scale, new_good_steps = optimizer.emit_scaled_update(
                b, *loss_scale, [v for _, v, _ in trainable], [g for _, _, g in trainable], slots, lr, done, step_number)
            new_params, new_slots = updated
            scale_state = [new_scale, new_good_steps]
    writes = [var.path for var, _, _ in trainable]
    writes += [slot_name(var.path, j) for var, _, _ in trainable for j in range(optimizer.slots_per_param)]
    writes += [var.path for var in moving_variables] + sum_names + [ITERATIONS]
    writes += [LOSS_SCALE, LOSS_SCALE_STEPS][: len(scale_state)]
    flat_slots = [s for per in new_slots for s in per]
    graph = verify(b.finish([*new_params, *flat_slots, *moving, *sums, count, *scale_state], kind="step"))
    masked = [name for name, loss, mask in zip(output_names(model), compiled.losses, masks) if loss and mask is not None]
    return Step(graph, log_names, writes, accumulators, metrics=log_metrics, gradients=[g for _, _, g in trainable],
                masked_losses=masked)


def build_test_step(model, compiled, target_specs) -> Step:
    b = GraphBuilder(f"{model.name}_test_step")
    outputs = model.trace_into(b, training=False)
    masks = [b.masks.get(out.id) for out in outputs]
    with ops.tracing(b), b.scope("loss"):
        outputs = _as_float32(outputs)
        targets = [_target_input(b, spec, i) for i, spec in enumerate(target_specs)]
        sample_weight = b.input((BATCH,), "float32", "sample_weight")
        b.input((), "float32", "learning_rate")  # unused: the same inputs as the training step
        total, per_output = _total_loss(model, compiled, outputs, targets, sample_weight, masks)
        penalty = _regularization(b, model.trainable_weights)
        if penalty is not None:
            total = ops.add(total, penalty)
        metric_states, metric_names, metrics = _metric_states(model, compiled, outputs, targets, sample_weight, masks)
        sums, writes, accumulators = _running_sums(b, "test", total, per_output, sample_weight, metric_states)
        log_names, log_metrics = _logged(per_output, metric_names, metrics)
    return Step(verify(b.finish(sums, kind="step")), log_names, writes, accumulators, metrics=log_metrics)
