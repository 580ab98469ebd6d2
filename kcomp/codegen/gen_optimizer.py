"""Generator for the optimizer template: one launch updates every parameter (multi-tensor).

The body is one optimizer_update node (kcomp/ir/ops/optim.py). Its inputs are
found among the kernel's by value, not by position: the fusion pass passes each
distinct value once, and two gradients may be one value. Its outputs (the new
parameters, then the new slots) are the kernel's outputs, except those nothing
reads, which fusion leaves out; the kernel writes every one, so those get
scratch buffers. The hyper-parameters become a module constant, HYPER.
"""

from kcomp.codegen.generated import Generated
from kcomp.ir.ops.optim import slots_per_param

IMPORTS = "from kcomp.kernels.optimizer import address_table, candidate_configs, check_operands, hyper_parameters, optimizer_kernel"
HYPER_PARAMETERS = ("momentum", "beta_1", "beta_2", "epsilon", "rho", "weight_decay")
SLOT_NAMES = {"sgd": "momentum", "adam": "m, v, v_hat", "adamw": "m, v, v_hat", "rmsprop": "v, momentum, average", "adagrad": "accumulator"}


def generate(body) -> Generated:
    (node,) = [n for n in body.nodes if n.op != "constant"]
    assert node.op == "optimizer_update", node.op
    a = node.attrs
    n = a["count"]
    k = slots_per_param(a["algorithm"], a["momentum"], a["amsgrad"], a["centered"])
    names = {v.id: f"in{i}" for i, v in enumerate(body.inputs)}
    args = [names[v.id] for v in node.inputs]
    params, grads, slots, (lr, step) = args[:n], args[n : 2 * n], args[2 * n : 2 * n + n * k], args[2 * n + n * k :]
    launch = f"""    # check: {_count(n, "parameter")}, their gradients and {_slot_names(a, k)}, float32 on one device
    params, grads, slots = check_operands({_tuple(params)}, {_tuple(grads)}, {_tuple(slots)}, {lr}, {step})
{_allocate(node, body)}    # grid
    config = config or candidate_configs(interpret={lr}.device.type == "cpu")[0]
    # one program per BLOCK elements of each parameter; the tables say which (kept per set of addresses)
    table, owners = address_table(params, grads, slots, news, config["BLOCK"])
    # launch
    optimizer_kernel[(owners.numel(),)](
        table, owners, {lr}, {step}, **HYPER,
        ALGORITHM="{a["algorithm"]}", K={k}, NESTEROV={a["nesterov"]}, AMSGRAD={a["amsgrad"]},
        MOMENTUM={bool(a["momentum"])}, CENTERED={a["centered"]},
        BLOCK=config["BLOCK"], num_warps=config["num_warps"],
    )
    return out
"""
    hyper = ", ".join(f"{name}={float(a[name])!r}" for name in HYPER_PARAMETERS)
    expression = (
        "# optimizer: no fused expression; the algorithm is a constexpr of the template, and these its scalars.\n"
        f"HYPER = hyper_parameters({hyper})\n"
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


def _slot_names(attrs, k: int) -> str:
    """ "2 slots each (m, v)", in the op's slot order."""
    if k == 0:
        return "no slots"
    names = SLOT_NAMES[attrs["algorithm"]].split(", ")
    if attrs["algorithm"] == "rmsprop":
        names = ["v"] + (["momentum"] if attrs["momentum"] else []) + (["average"] if attrs["centered"] else [])
    return f"{_count(k, 'slot')} each ({', '.join(names[:k])})"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _tuple(items) -> str:
    return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"  # () when empty
