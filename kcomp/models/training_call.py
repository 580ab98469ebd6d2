"""model(x, training=True): the forward graph run in training mode, as Keras runs it (dropout
active, batch statistics), without updating any trainable weight."""

import torch

from kcomp.ir.builder import GraphBuilder
from kcomp.ir.verify import verify
from kcomp.ops import tracing
from kcomp.runtime.executor import make_executor


def call_in_training_mode(model, xs: list[torch.Tensor]):
    """Run the model on the prepared inputs `xs` as one batch in training mode; keeps each
    BatchNormalization's new moving statistics. Returns the output tensor(s)."""
    executor, moving = training_call_executor(model)
    model._training_calls += 1
    with torch.inference_mode():
        outs = executor.run([*xs, torch.tensor(float(model._training_calls))], model.params())
    n = len(model.outputs)
    for var, value in zip(moving, outs[n:]):
        var.value = value.clone()  # (a clone made outside inference mode: a weight a later step may update)
    return outs[0] if n == 1 else outs[:n]


def training_call_executor(model):
    """model(x, training=True) runs the forward graph in training mode, as Keras does: dropout draws
    its masks from one more input, the call's number (new masks every call), and the graph also
    returns each BatchNormalization's new moving statistics, which the call then keeps.
    Returns the executor and the moving-statistic weights its extra outputs update."""
    if True not in model._call_executors:
        from kcomp.training.step import moving_statistics

        builder = GraphBuilder(f"{model.name}_training_call")
        inputs = [builder.input(t.ir_shape, t.dtype, t.call.layer.name) for t in model.inputs]
        builder.rng_counter = builder.input((), "float32", "call_number")
        outputs = model._emit_calls(builder, inputs, True)
        with tracing(builder), builder.scope("moving_statistics"):
            news, moving = moving_statistics(model, builder, list(builder.nodes))
        graph = verify(builder.finish([*outputs, *news]))
        model._call_executors[True] = (make_executor(graph, model._backend, model._precision), moving)
    return model._call_executors[True]
