"""Generator for the optimizer template: one launch updates every parameter (multi-tensor).

The body is one optimizer_update node (kcomp/ir/ops/optim.py). Its inputs are
found among the kernel's by value, not by position: the fusion pass passes each
distinct value once, and two gradients may be one value. Its outputs (the new
parameters, then the new slots) are the kernel's outputs, except those nothing
reads, which fusion leaves out; the kernel writes every one, so those get
scratch buffers.

The algorithm is a record (kcomp/ir/optim/<name>.py) with a Triton update; the
generated `update` hook binds it for this node: the kernel's generic scalars
h0..h7 to the update's named ones (their values, computed by the record, are
the module constant HYPER) and its flags as constexprs.
"""

from kcomp.codegen.generated import Generated
from kcomp.ir.optim import MAX_KERNEL_SCALARS, get as algorithm_record

IMPORTS = ("from kcomp.kernels.optimizer import address_table, candidate_configs, check_operands, kernel_arguments, "
           "optimizer_kernel, scalar_arguments, triton_update")


def generate(body) -> Generated:
    (node,) = [n for n in body.nodes if n.op != "constant"]
    assert node.op == "optimizer_update", node.op
    a = node.attrs
    n, algorithm = a["count"], a["algorithm"]
    record = algorithm_record(algorithm)
    hyper = record.resolve(a["hyper"])
    k = record.slot_count(hyper)
    scalars, constexprs = record.triton_arguments(hyper)
    names = {v.id: f"in{i}" for i, v in enumerate(body.inputs)}
    args = [names[v.id] for v in node.inputs]
    params, grads, slots, (lr, step) = args[:n], args[n : 2 * n], args[2 * n : 2 * n + n * k], args[2 * n + n * k :]
    launch = f"""    # check: {_count(n, "parameter")}, their gradients and {_slot_names(record.slot_names(hyper))}, float32 on one device
    params, grads, slots = check_operands({_tuple(params)}, {_tuple(grads)}, {_tuple(slots)}, {lr}, {step})
{_allocate(node, body)}    # grid
    config = config or candidate_configs(interpret={lr}.device.type == "cpu")[0]
    # one program per BLOCK elements of each parameter; the tables say which (kept per set of addresses)
    table, owners = address_table(params, grads, slots, news, config["BLOCK"])
    # launch
    optimizer_kernel[(owners.numel(),)](
        table, owners, {lr}, {step}, *HYPER, UPDATE=update, K={k},
        BLOCK=config["BLOCK"], num_warps=config["num_warps"],
    )
    return out
"""
    h = [f"h{i}" for i in range(MAX_KERNEL_SCALARS)]
    bound = [f"{name}={h[i]}" for i, name in enumerate(scalars)] + [f"K={k}"] + [f"{name}={value!r}" for name, value in constexprs.items()]
    settings = ", ".join(f"{name}={value!r}" for name, value in hyper.items())
    expression = (
        f"# {algorithm}: {settings}\n"
        f"# its update (kcomp/ir/optim), and the scalars it takes (in float64 from the record) in h0..h{len(h) - 1}\n"
        f"algorithm_update = triton_update({algorithm!r})\n"
        f"SCALARS, _ = kernel_arguments({algorithm!r}, {a['hyper']!r})  # its flags are written in `update`\n"
        f"HYPER = scalar_arguments(SCALARS.values())\n\n\n"
        "@triton.jit\n"
        f"def update(row, offs, mask, p, g, lr, step, {', '.join(h)}):\n"
        f"    return algorithm_update(row, offs, mask, p, g, lr, step, {', '.join(bound)})\n"
    )
    return Generated(IMPORTS, expression, launch)


def _allocate(node, body) -> str:
    """The allocate step: `out` as the plan passes it (one tensor, or a tuple), and `news`, every
    output of the op in its order (new params, then new slots), scratch where nothing reads one."""
    n = node.attrs["count"]
    sources = [f"params[{i}]" for i in range(n)] + [f"slots[{j}]" for j in range(len(node.outputs) - n)]
    position = {v.id: j for j, v in enumerate(body.outputs)}
    single = len(body.outputs) == 1
    kept = [sources[i] for i, v in enumerate(node.outputs) if v.id in position]
    everything = len(kept) == len(node.outputs)
    if everything and not single:
        allocation = "tuple(torch.empty_like(t) for t in (*params, *slots))"
    elif single:
        allocation = f"torch.empty_like({kept[0]})"
    else:
        allocation = _tuple([f"torch.empty_like({s})" for s in kept])
    lines = "    # allocate: the new parameters, then the new slots\n"
    lines += f"    if out is None:\n        out = {allocation}\n"
    if everything:
        return lines + f"    news = {'(out,)' if single else 'out'}\n"
    news = [
        ("out" if single else f"out[{position[v.id]}]") if v.id in position else f"torch.empty_like({sources[i]})"
        for i, v in enumerate(node.outputs)
    ]
    lines += "    # outputs nothing reads are written to scratch buffers\n"
    return lines + f"    news = {_tuple(news)}\n"


def _slot_names(names) -> str:
    """ "2 slots each (m, v)", in the op's slot order."""
    return f"{_count(len(names), 'slot')} each ({', '.join(names)})" if names else "no slots"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _tuple(items) -> str:
    return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"  # () when empty
