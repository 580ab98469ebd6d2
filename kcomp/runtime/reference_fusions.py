"""The reference executor's rules (kcomp.runtime.reference): how its schedule computes some nodes
together, each rule computing the same function as the nodes it replaces.

FUSIONS: a pair of nodes that runs as one torch call where the graph has both, as PyTorch's eager
loop calls it: a conv's two gradients from one convolution backward, a conv and its bias in one
convolution, a Dense product and its bias in one addmm, a gradient times a 0/1 mask in two passes,
not three. On a CPU the passes over a CNN's activations these save are most of a step's time. The
mask product is bit for bit; the convolutions and the Dense product within rounding, as torch may
sum in another order.

share_dropout_masks: dropouts that draw the same mask (a dropout and its gradient: same seed, rate,
step input and shape) draw it once; the others reuse it, bit for bit.

in_place_where_dead: relu and the mask products write over their input where nothing else reads it
and a step that makes new tensors made it (autograd's in-place ops), the same bits.

update_in_place_where_donated: a training step's optimizer update writes the new weights and slots
over the old ones, as torch's optimizers and kcomp's GPU kernels do, where its runner replaces that
state with them anyway: no new tensor per weight and slot each step, the same bits.

(tests/test_reference_fusions.py checks each against the nodes it replaces, NaN and inf included.)
"""

import torch

from kcomp.ir.graph import Graph, Node, Value
from kcomp.ir.ops.conv import conv2d_with_bias
from kcomp.ir.ops.conv_grad import conv2d_backprop_both
from kcomp.ir.ops.norm import dropout_draws, dropout_with_mask
from kcomp.ir.ops.optim import update_in_place
from kcomp.ir.optim import get
from kcomp.ir.registry import OPS
from kcomp.random import keep_mask
from kcomp.runtime.dense_products import is_narrow, narrow_dense, narrow_matmul


def _geometry(node: Node, size_attr: str) -> dict:
    return {k: v for k, v in node.attrs.items() if k != size_attr}


def _conv_backprop_pair(first: Node, second: Node):
    """conv2d_backprop_input(dy, kernel) and conv2d_backprop_filter(x, dy) of the same dy and geometry:
    one convolution backward (conv2d_backprop_both) gives (dx, dkernel)."""
    dy, kernel = first.inputs
    x, dy2 = second.inputs
    geometry = _geometry(first, "input_size")
    if dy2.id != dy.id or geometry != _geometry(second, "kernel_size"):
        return None
    return conv2d_backprop_both, (dy, kernel, x), geometry, (*first.outputs, *second.outputs)


def _conv_bias_pair(first: Node, second: Node):
    """bias_add(conv2d(x, kernel), bias): torch's convolution adds the bias as it writes its output."""
    if second.inputs[0].id != first.output.id:
        return None
    return conv2d_with_bias, (*first.inputs, second.inputs[1]), first.attrs, second.outputs


def _matmul_bias_pair(first: Node, second: Node):
    """bias_add(matmul(x, kernel), bias), x and kernel of rank 2 (Dense): torch.addmm adds the bias
    as it writes its output (kcomp/runtime/dense_products.py). In 32 and 64 bits only: in a 16-bit
    dtype addmm rounds the product and the bias once where Keras rounds the product before adding
    the bias, a difference of bfloat16's 2^-8, not float32's 2^-24 (a mixed_bfloat16 fit's accuracy
    moved by one sample of 32 against Keras's)."""
    x, kernel = first.inputs
    if (second.inputs[0].id != first.output.id or x.rank != 2 or kernel.rank != 2
            or x.dtype not in ("float32", "float64")):
        return None
    bias = second.inputs[1]
    if is_narrow(x, kernel):
        return narrow_dense, (x, kernel, bias), {}, second.outputs
    return torch.addmm, (bias, x, kernel), {}, second.outputs


def _mul_by_mask(g, a, b):
    """g * greater(a, b) in two passes where the ops take three: torch.gt writes its 1.0 and 0.0
    straight into a tensor of g's dtype (no boolean tensor to convert), which g then multiplies in
    place. The same products, NaN and inf included (0 * inf is NaN either way)."""
    mask = torch.empty_like(g)
    torch.gt(a, b, out=mask)
    return mask.mul_(g)


def _mask_mul_pair(first: Node, second: Node):
    """mul(g, greater(a, b)) or mul(greater(a, b), g): relu's and the other masks' gradients."""
    mask = first.output.id
    others = [v for v in second.inputs if v.id != mask]
    if len(others) != 1 or not (others[0].shape == first.output.shape == second.output.shape):
        return None  # a factor broadcasts (or the mask is both): left as it is
    return _mul_by_mask, (others[0], *first.inputs), {}, second.outputs


# (first op, second op, match): match(first node, a later node of the second op) gives the fused
# step (function, input values, attrs, output values), or None. The step runs at the second's
# place where nothing else reads the first's outputs, else at the first's where the second's
# inputs are all there; an output the step does not produce must be one nothing else reads.
FUSIONS = [
    ("conv2d_backprop_input", "conv2d_backprop_filter", _conv_backprop_pair),
    ("conv2d", "bias_add", _conv_bias_pair),
    ("matmul", "bias_add", _matmul_bias_pair),
    ("greater", "mul", _mask_mul_pair),
]


def _dropout_drawing_mask(x, *step, rate, seed, training):
    """dropout(x, step), and the keep mask it drew, for the later dropouts of the same mask."""
    keep = keep_mask(x.shape, rate, seed, step[0] if step else None, x.device)
    return dropout_with_mask(x, keep, rate), keep


def _dropout_reusing_mask(x, keep, rate):
    return dropout_with_mask(x, keep, rate)


def share_dropout_masks(steps: list[tuple], new_id) -> list[tuple]:
    """`steps` with every dropout after the first of the same mask (seed, rate, step input, shape)
    reusing the first's mask: the first also outputs it, as a new boolean value (id from new_id())."""
    dropout = OPS["dropout"].reference
    first_of: dict[tuple, Value] = {}  # mask key -> the mask value the first dropout outputs
    counts: dict[tuple, int] = {}
    keys = []
    for fn, ins, attrs, _ in steps:
        key = None
        if fn is dropout and dropout_draws(attrs["rate"], attrs["training"]):
            key = (attrs["seed"], attrs["rate"], tuple(v.id for v in ins[1:]), ins[0].shape)
            counts[key] = counts.get(key, 0) + 1
        keys.append(key)
    shared = []
    for key, (fn, ins, attrs, outs) in zip(keys, steps, strict=True):
        if key is None or counts[key] < 2:
            shared.append((fn, ins, attrs, outs))
        elif key not in first_of:
            first_of[key] = Value(new_id(), ins[0].shape, "bool", "keep_mask")
            shared.append((_dropout_drawing_mask, ins, attrs, (*outs, first_of[key])))
        else:
            shared.append((_dropout_reusing_mask, (ins[0], first_of[key]), {"rate": attrs["rate"]}, outs))
    return shared


def _storages(tensors) -> list[int]:
    return [t.untyped_storage().data_ptr() for t in tensors]


def _update_over_donated(*values, n_inputs, donated, **attrs):
    """optimizer_update written over its parameters and slots (`donated`: their input positions) when
    none shares memory with another of them or with any other tensor the step reads or the run
    returns (`values` past n_inputs: the run's other outputs); else as the op's reference, new tensors."""
    inputs, others = values[:n_inputs], values[n_inputs:]
    targets = [inputs[i] for i in donated]
    kept = [t for i, t in enumerate(inputs) if i not in set(donated)] + list(others)
    mine = _storages(targets)
    if len(set(mine)) == len(mine) and not set(mine) & set(_storages(kept)) and all(t.is_contiguous() for t in targets):
        return update_in_place(*inputs, **attrs)
    return OPS["optimizer_update"].reference(*inputs, **attrs)


def update_in_place_where_donated(steps: list[tuple], graph: Graph, donated: dict[int, str]) -> list[tuple]:
    """`steps` with the optimizer update writing its new parameters and slots over the old ones
    (kcomp.ir.ops.optim.update_in_place: the same bits, no new tensors) where the caller donates them:
    `donated` maps output positions to the parameter each replaces (a training step's runner writes
    the outputs back as that state). Only where the update is the last step (nothing reads the old
    values after it), every parameter and slot it updates is a graph parameter whose new value is an
    output donated back to it, and its algorithm has an in-place form; else `steps` as they are."""
    fn, ins, attrs, outs = steps[-1] if steps else (None, (), {}, ())
    if fn is not OPS["optimizer_update"].reference or get(attrs["algorithm"]).reference_in_place is None:
        return steps
    if attrs.get("skip") or attrs.get("unscale"):  # a loss-scaled step's update has no in-place form
        return steps
    n, k = attrs["count"], get(attrs["algorithm"]).slot_count(get(attrs["algorithm"]).resolve(attrs["hyper"]))
    pairs = [(i, i) for i in range(n)] + [(2 * n + j, n + j) for j in range(n * k)]  # input position, output position
    params = {v.id: v.name for v in graph.params}
    replaces = {v.id: donated.get(j) for j, v in enumerate(graph.outputs)}
    if any(params.get(ins[i].id) is None or replaces.get(outs[o].id) != params[ins[i].id] for i, o in pairs):
        return steps
    made_here = {v.id for v in outs}
    others = tuple(v for v in graph.outputs if v.id not in made_here)
    over = (_update_over_donated, (*ins, *others), {**attrs, "n_inputs": len(ins), "donated": tuple(i for i, _ in pairs)}, outs)
    return [*steps[:-1], over]


# Ops whose reference always returns a new tensor of its own (never an input or a view of one) that its
# own torch backward does not keep, and the fused steps above, which do too: a value one of them makes,
# read by one step only, is that step's to overwrite. (softmax, sigmoid and tanh are left out: torch's
# backward of each reads its output, and the reference must stay differentiable by torch.autograd,
# which the gradient tests use.)
FRESH_OPS = ("add", "sub", "mul", "div", "matmul", "bias_add", "conv2d", "conv2d_backprop_input", "max_pool2d_grad",
             "softmax_cross_entropy", "softmax_cross_entropy_grad", "broadcast_like", "threshold_grad")


def _relu_over_input(x, **_):
    return torch.relu_(x)  # relu's reference, torch.relu, written over x (_plain_relu: default attributes)


def _threshold_grad_over_g(g, x, threshold):
    """threshold_grad's reference, torch's threshold_backward, written over g: one pass, no new tensor
    (a 128x26x26x32 float32 gradient, 1 thread: 876 us, against 1210 us out of place and 1276 us for
    the chunked mask product relu's gradient was before)."""
    return torch.ops.aten.threshold_backward.grad_input(g, x, threshold, grad_input=g)


MASK_CHUNK = 1 << 18  # elements of _mul_by_mask_over_g's mask: 1 MiB of float32, about a core's L2 cache


def _mul_by_mask_over_g(g, a, b):
    """_mul_by_mask written over g, the float mask made a chunk at a time into one small buffer that
    stays in cache: the same products (NaN, inf and -0.0 included) at about one pass's cost, where a
    mask as large as g is written out and read back (measured on a 128x26x26x32 gradient, 1 thread:
    1.7 ms of CPU, against 2.2 ms with a whole float mask and 3.9 ms multiplying by a bool mask)."""
    flat = g.is_contiguous() and a.is_contiguous() and a.shape == g.shape and (b.dim() == 0 or (b.is_contiguous() and b.shape == g.shape))
    if not flat or g.numel() <= MASK_CHUNK:  # one chunk: no views to cut
        mask = torch.empty_like(g)
        torch.gt(a, b, out=mask)
        return g.mul_(mask)
    g_flat, a_flat, b_flat = g.view(-1), a.view(-1), b if b.dim() == 0 else b.view(-1)
    mask = torch.empty(min(MASK_CHUNK, g_flat.numel()), dtype=g.dtype, device=g.device)
    for start in range(0, g_flat.numel(), MASK_CHUNK):
        g_part = g_flat[start : start + MASK_CHUNK]
        b_part = b_flat if b.dim() == 0 else b_flat[start : start + MASK_CHUNK]
        mask_part = mask[: g_part.numel()]
        torch.gt(a_flat[start : start + MASK_CHUNK], b_part, out=mask_part)
        g_part.mul_(mask_part)
    return g


def _add_over_first(x, y):
    return x.add_(y)  # add's and bias_add's reference, torch.add, written over x


def _sub_over_first(x, y):
    return x.sub_(y)


def _mul_over_first(x, y):
    return x.mul_(y)


# The functions of the steps that make a fresh tensor: FRESH_OPS' references and the fused steps above.
FRESH_STEPS = frozenset({OPS[name].reference for name in FRESH_OPS}
                        | {conv2d_with_bias, conv2d_backprop_both, _mul_by_mask, torch.addmm, narrow_matmul, narrow_dense})


def _plain_relu(fn, attrs) -> bool:
    return fn is OPS["relu"].reference and attrs == {"negative_slope": 0.0, "max_value": None, "threshold": 0.0}


# (does a step qualify, the in-place function, which input it overwrites)
IN_PLACE = [
    (_plain_relu, _relu_over_input, 0),
    # a + b, a - b, a * b over a where the output is a's shape and dtype (b broadcasts into it): the
    # bias add after a matmul, the loss's weighting, the optimizer-free arithmetic of the loss graph
    (lambda fn, attrs: fn is torch.add and not attrs, _add_over_first, 0),
    (lambda fn, attrs: fn is torch.sub and not attrs, _sub_over_first, 0),
    (lambda fn, attrs: fn is torch.mul and not attrs, _mul_over_first, 0),
    (lambda fn, attrs: fn is _mul_by_mask, _mul_by_mask_over_g, 0),
    (lambda fn, attrs: fn is OPS["threshold_grad"].reference, _threshold_grad_over_g, 0),
]


def in_place_where_dead(steps: list[tuple], graph: Graph) -> list[tuple]:
    """`steps` with the IN_PLACE steps writing over their input where that input is a value a FRESH_OPS
    step (or a fused one) made, of the same shape and dtype as the output, read by no other step and
    not a graph output: as autograd's in-place ops do, the pass writes no new tensor, so the allocator
    hands out (and the system faults in) fewer fresh pages per step."""
    made_by: dict[int, object] = {}
    readers: dict[int, int] = {}
    for fn, ins, _, outs in steps:
        for v in outs:
            made_by[v.id] = fn
        for v in {v.id for v in ins}:
            readers[v] = readers.get(v, 0) + 1
    kept = {v.id for v in (*graph.inputs, *graph.params, *graph.outputs)}
    rewritten = []
    for fn, ins, attrs, outs in steps:
        for qualifies, over, position in IN_PLACE:
            if qualifies(fn, attrs):
                x = ins[position]
                if (made_by.get(x.id) in FRESH_STEPS and readers[x.id] == 1 and x.id not in kept
                        and x.shape == outs[0].shape and x.dtype == outs[0].dtype
                        and sum(v.id == x.id for v in ins) == 1):
                    fn = over  # with the step's attributes (threshold_grad's threshold)
                break
        rewritten.append((fn, ins, attrs, outs))
    return rewritten
