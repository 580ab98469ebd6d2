"""The data fit, evaluate and train_on_batch take, checked before any step runs: inputs and targets
as tensors (any numeric or bool dtype, as Keras takes them), class ids a sparse loss reads, sample
and class weights, batch sizes. A call refused here has changed nothing.
"""

import math

import numpy as np
import torch

from kcomp.errors import ArgumentError, KcompError, ShapeError
from kcomp.training.step import output_names
from kcomp.support.arrays import numeric_array


def targets(model, y) -> list[torch.Tensor]:
    """The targets, one per output: a list in output order, a dict keyed by output name, or one array."""
    if isinstance(y, dict):
        names = output_names(model)
        missing = [name for name in names if name not in y]
        if missing or set(y) - set(names):
            raise ArgumentError(f"Targets given for {sorted(y)}; the model's outputs are {names}: give one array for each.")
        y = [y[name] for name in names]
    return as_tensors(y, len(model.outputs), "targets")


def as_tensors(data, count: int, what: str) -> list[torch.Tensor]:
    items = list(data) if isinstance(data, (list, tuple)) and count > 1 else [data]
    if len(items) != count:
        raise ArgumentError(f"The model has {count} {what}, received {len(items)} arrays.")
    tensors = []
    for item in items:
        t = target_tensor(item)
        if checkable(t) and not all_finite(t):
            raise KcompError(f"The {what} hold NaN or infinite values; clean the data before training.")
        tensors.append(t)
    return tensors


def target_tensor(item) -> torch.Tensor:
    """Targets of any numeric or bool dtype, as Keras takes them: floats become float32 (Keras's
    losses compute in float32), integers and bools int64 (exact; a loss casts them to the
    predictions' dtype, a sparse loss reads them as class ids)."""
    if not isinstance(item, torch.Tensor):
        array = numeric_array(item, "targets")
        if array.dtype == np.uint64 and array.size and array.max() > np.iinfo(np.int64).max:
            raise ArgumentError(f"Targets hold {array.max()}, beyond int64; give labels that fit in int64.")
        item = torch.as_tensor(np.ascontiguousarray(array.astype(np.int64) if array.dtype.kind in "biu" else array))
    if item.is_complex():
        raise ArgumentError(f"Targets of dtype {item.dtype} cannot be learned from; give real numbers.")
    if item.is_floating_point():
        return item if item.dtype == torch.float32 else item.float()
    return item if item.dtype == torch.int64 else item.long()


def checkable(t: torch.Tensor) -> bool:
    """Data to check for NaN here: float tensors in host memory. Checking a GPU tensor would make
    the host wait for the GPU on every train_on_batch; there TerminateOnNaN watches the loss."""
    return t.is_floating_point() and t.device.type == "cpu"


def all_finite(t: torch.Tensor) -> bool:
    """Whether a float tensor holds no NaN and no inf. A NaN or an inf makes the sum NaN or inf, so
    one sum, a pass that writes nothing, answers for almost all data; only when the sum is not
    finite (a NaN, an inf, or finite values whose sum overflows) are the elements checked one by one.
    Measured on fit's 2560x784 float32 inputs (2 threads): 0.06 ms against 2.8 ms for
    isfinite(t).all(), which writes three temporaries. fit, evaluate and train_on_batch check their data."""
    total = t.sum(dtype=torch.float32 if t.element_size() < 4 else None)  # 16-bit data: a float32 sum
    # The sum read back as a Python float and tested there: torch.isfinite on it is another op (on a
    # 32x100 batch 1.9 us against 6.8 us, which train_on_batch pays every call).
    return math.isfinite(total.item()) or bool(torch.isfinite(t).all())


def model_inputs(model, x) -> list[torch.Tensor]:
    """The inputs as predict takes them (shapes checked against the model's), free of NaN."""
    tensors = model._prepare_inputs(x)
    for t in tensors:
        if checkable(t) and not all_finite(t):
            raise KcompError("The inputs hold NaN or infinite values; clean the data before training.")
    return tensors


def check_lengths(*groups) -> int:
    lengths = {len(t) for group in groups for t in group}
    if len(lengths) != 1:
        raise ShapeError(f"x and y must have the same number of samples, received lengths {sorted(lengths)}.")
    n = lengths.pop()
    if n == 0:
        raise ArgumentError("x and y hold 0 samples; there is nothing to train on or evaluate. Pass at least one sample.")
    return n


def check_class_ids(model, compiled, ys) -> None:
    """Targets that a sparse loss reads as class ids must be whole numbers in [0, classes): all of
    them are checked before the first step, so a bad id in the last batch cannot fail a fit after
    earlier steps changed the weights (or select nothing and train at loss 0)."""
    names = output_names(model)
    for i, (y, out, loss) in enumerate(zip(ys, model.outputs, compiled.losses)):
        output_shape = tuple(out.shape)
        if loss is None or not loss.reads_class_ids(tuple(y.shape), output_shape) or y.device.type != "cpu":
            continue  # (a GPU tensor would cost a host sync here)
        classes = output_shape[-1]
        if _whole_ids_below(y, classes):
            continue
        whole = y if not y.is_floating_point() else y.floor()
        bad = (whole != y) | (whole < 0) | (whole >= classes)
        if bad.any():
            at = int(bad.reshape(-1).nonzero()[0])
            value = y.reshape(-1)[at].item()
            raise ArgumentError(
                f"Targets of output {names[i]!r} hold {value!r} (element {at}), which the loss {loss.name} reads as a class id; "
                f"ids must be whole numbers in [0, {classes}). Fix the labels, or use a loss for one-hot or real targets."
            )


def _whole_ids_below(y: torch.Tensor, classes: int) -> bool:
    """Whether every element of `y` is a whole number in [0, classes): one pass for the smallest and
    largest (and one more for float ids' fractions), where the element-wise mask check_class_ids
    words its error from takes five (a 32-label batch: 1.9 us against 11 us, every train_on_batch).
    `y` is int64 or float32 (target_tensor); a NaN gives False, and the caller looks element-wise."""
    if not _ids_below(y, classes):
        return False
    return not y.is_floating_point() or torch.equal(y.floor(), y)


def _ids_below(ids: torch.Tensor, limit: int) -> bool:
    """Whether every element of `ids` lies in [0, limit), from the smallest and the largest (one pass,
    no temporaries). A NaN compares False, so its caller looks element-wise and words the error.
    The sentiment LSTM's 32x500 int32 ids, checked at every predict_on_batch: 2.7-4.9 us against
    31-36 us for the element-wise mask (1 process, 2 threads)."""
    if not ids.numel():
        return True
    low, high = torch.aminmax(ids)
    return bool(low.item() >= 0 and high.item() < limit)


def check_embedding_ids(model, xs) -> None:
    """Ids an Embedding reads from a model input (as given, or cast to integers as Keras casts float
    ids) must lie in [0, input_dim): all of them are checked before the first step, on every
    backend, so a bad id in a late batch cannot fail a fit after earlier steps changed the weights,
    and a step captured on a GPU (which cannot read ids back to check them) never sees one."""
    graph = model.to_graph()
    for k, rows, node in _embedding_id_inputs(model, graph):
        if xs[k].device.type != "cpu" or not xs[k].numel():  # (a GPU tensor: a host sync)
            continue
        values = xs[k].to(torch.int64) if xs[k].is_floating_point() else xs[k]  # Keras's cast truncates
        if _ids_below(values, rows):  # the element-wise mask below only words the error
            continue
        bad = (values < 0) | (values >= rows)
        if bad.any():
            at = int(bad.reshape(-1).nonzero()[0])
            raise ShapeError(  # the class the embedding op's own check raises
                f"Input {graph.inputs[k].name!r} holds {xs[k].reshape(-1)[at].item()!r} (element {at}), an id for "
                f"the Embedding {node.origin or 'layer'} of input_dim={rows}; ids must lie in [0, {rows}). "
                "Raise input_dim or clip the ids."
            )


def _embedding_id_inputs(model, graph) -> list[tuple[int, int, object]]:
    """(input position, the table's rows, the embedding node) for each Embedding that reads a model
    input's ids, as given or cast. Found once per traced graph: predict_on_batch asks on every call."""
    cached = getattr(model, "_embedding_id_inputs", None)
    if cached is not None and cached[0] is graph:
        return cached[1]
    position = {v.id: i for i, v in enumerate(graph.inputs)}
    producer = {v.id: node for node in graph.nodes for v in node.outputs}
    found = []
    for node in graph.nodes:
        if node.op != "embedding":
            continue
        ids, table = node.inputs
        cast = producer.get(ids.id)
        source = cast.inputs[0] if cast is not None and cast.op == "cast" else ids
        if source.id in position:
            found.append((position[source.id], table.shape[0], node))
    model._embedding_id_inputs = (graph, found)
    return found


def sample_weights(n, sample_weight, class_weight, ys):
    """Each sample's weight: sample_weight, or the weight class_weight gives its class (Keras takes
    one or the other, and class weights only for a model with one output), else 1."""
    if class_weight and sample_weight is not None:
        raise ArgumentError("Received both class_weight and sample_weight; Keras takes one or the other. "
                            "Fold the class weights into sample_weight.")
    if class_weight and len(ys) > 1:
        raise ArgumentError("class_weight is only supported for models with one output, as in Keras; "
                            "give sample_weight instead.")
    if sample_weight is None and not class_weight:
        # Every sample weighs 1: one element made where the targets are (a fill on the GPU, not a
        # copy from the host every train_on_batch), seen as n by a batch stride of 0, which tells a
        # step staging into captured buffers that every batch's weights are the same.
        return torch.ones((), dtype=torch.float32, device=ys[0].device).expand(n)
    if sample_weight is None:
        w = torch.ones(n, dtype=torch.float32)
    else:
        if isinstance(sample_weight, torch.Tensor):
            if sample_weight.is_complex():
                raise KcompError("The sample weights are complex numbers; give real numbers.")
            w = sample_weight.float()
        else:  # strings, None inside, ragged lists, complex: a KcompError naming them
            w = torch.as_tensor(np.ascontiguousarray(numeric_array(sample_weight, "sample weights")), dtype=torch.float32)
        if w.dim() == 2 and w.shape[1] == 1:
            w = w.reshape(-1)  # (N, 1), as Keras takes it
    if w.shape != (n,):
        raise ShapeError(f"sample_weight must have one weight per sample, shape ({n},); received {tuple(w.shape)}.")
    if not torch.isfinite(w).all():
        at = int((~torch.isfinite(w)).nonzero()[0])
        raise ArgumentError(f"sample_weight[{at}] is {w[at].item()}; sample weights must be finite numbers.")
    if class_weight:
        bad = {k: v for k, v in class_weight.items() if not (isinstance(v, (int, float, np.number)) and math.isfinite(v))}
        if bad:
            raise ArgumentError(f"class_weight holds {bad}; class weights must be finite numbers.")
        y = ys[0]
        labels = y.argmax(-1) if y.dim() > 1 and y.shape[-1] > 1 else y.reshape(n).round().long()
        w = w * torch.tensor([float(class_weight.get(int(c), 1.0)) for c in labels])
    return w


def batch_size(batch_size) -> int:
    batch_size = 32 if batch_size is None else batch_size
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
        raise ArgumentError(f"Received: batch_size={batch_size!r}. Expected a positive integer.")
    return int(batch_size)


def refuse_weights_with_masks(model, sample_weight, class_weight=None) -> None:
    """Keras 3 cannot weigh the samples of an output that carries a mask (its (batch,) weights meet
    the (batch, steps) mask in a product that does not broadcast), so kcomp refuses them too."""
    if sample_weight is None and not class_weight:
        return
    masked = [t.call.layer.name for t in model.outputs if getattr(t, "mask_shape", None) is not None]
    if masked:
        raise ArgumentError(
            f"Received {'sample_weight' if sample_weight is not None else 'class_weight'} for a model whose output "
            f"{masked[0]!r} carries a mask (from Embedding(mask_zero=True) or Masking): Keras 3 cannot combine "
            "per-sample weights with an output's mask, and neither does kcomp. The mask already leaves the padded "
            "steps out of the loss; drop the weights, or end the model in a layer that drops the mask."
        )
