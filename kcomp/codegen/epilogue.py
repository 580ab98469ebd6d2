"""Generate the fused expression of a kernel: the epilogue of a matmul/conv tile,
or the body of a pointwise kernel, from the elementwise IR nodes it absorbed.

Output is the source of one small @triton.jit function, for example:

    @triton.jit
    def epilogue(acc, offs_m, offs_n, mask_m, mask_n, E0, E1, E2, E3, S0, S1, S2, S3):
        e0 = tl.load(E0 + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]  # dense/bias
        v1 = (acc + e0)  # dense: bias_add
        v2 = tl.maximum(v1, 0.0, propagate_nan=tl.PropagateNan.ALL)  # dense: relu
        return v2
"""

from kcomp.codegen.expr import RNG_IMPORT, draws_random, expression
from kcomp.errors import GraphError
from kcomp.ir.graph import Graph, Node, Value
from kcomp.ir.lowering import literal
from kcomp.ir.types import is_static
from kcomp.kernels.operands import Operand, flat_operand_kind, image_size, operand_kind

TILE_PARAMS = "acc, offs_m, offs_n, mask_m, mask_n, E0, E1, E2, E3, S0, S1, S2, S3"
PROLOGUE_PARAMS = "acc, offs_m, offs_n, mask_m, mask_n, E0, E1, S0, S1"  # the matmul passes its K offsets as offs_n
FLAT_PARAMS = "offs, mask, C, X0, X1, X2, X3, X4, X5, X6, X7"
FLAT_EPILOGUE_PARAMS = "acc, offs, mask, C, X0, X1, X2, X3"  # after a reduction: its results at flat indices


def _load(kind: str, slot: int, tile: bool, out: Value | None = None) -> str:
    if tile:
        ptr, stride = f"E{slot}", f"S{slot}"
        return {
            "full": f"tl.load({ptr} + offs_m[:, None].to(tl.int64) * {stride} + offs_n[None, :], mask=mask_m[:, None] & mask_n[None, :], other=0.0)",
            "col": f"tl.load({ptr} + offs_n, mask=mask_n, other=0.0)",
            "scalar": f"tl.load({ptr})",
        }[kind] + ".to(tl.float32)" + ("[None, :]" if kind == "col" else "")
    ptr = f"X{slot}"
    if kind in ("image", "image_col"):  # one value (or last-axis vector) per image of `out`
        image = f"(offs // {image_size(out)})"
        index = image if kind == "image" else f"{image} * C + offs % C"
        return f"tl.load({ptr} + {index}, mask=mask, other=0.0).to(tl.float32)"
    return {
        "full": f"tl.load({ptr} + offs, mask=mask, other=0.0)",
        "col": f"tl.load({ptr} + offs % C, mask=mask, other=0.0)",
        "scalar": f"tl.load({ptr})",
    }[kind] + ".to(tl.float32)"


def _tile_offsets(start: Value) -> str:
    """The line defining `offs`, the flat row-major index of each element of a tile.

    A tile's rows (offs_m: matmul rows, conv output pixels, or A's rows in a
    prologue) and columns (offs_n: output columns, filters, or A's K offsets)
    index a value of static row width, so the index is offs_m * width + offs_n:
    the index the reference uses for the same element.
    """
    width = start.shape[-1] if start.rank else 1
    if not is_static(width):
        raise GraphError(f"a random draw in a tile epilogue needs a static row width; {start} has {width}")
    return f"    offs = offs_m[:, None].to(tl.int64) * {width} + offs_n[None, :]  # flat element index, for the random draw"


def generate(body: Graph, chain: list[Node], start: Value | None, name: str = "epilogue", params: str | None = None,
             flat: bool = False, bound: dict | None = None, result: Value | None = None) -> tuple[str, list[Operand]]:
    """Source of the function computing `chain` (elementwise nodes of `body`).

    `start` is the value already in hand (the accumulator `acc` of a tile
    kernel); None for a pointwise kernel, whose every input is loaded. flat=True
    with a start: `acc` is a vector at flat indices `offs` (a reduction's
    results), and operands load as a pointwise kernel's do. `bound` names further
    values in hand (value id -> a parameter of `params`); `result`: the value
    returned, where it is not the chain's last (a chain that computes nothing).
    """
    tile = start is not None and not flat
    index_of = {v.id: i for i, v in enumerate(body.inputs)}
    names: dict[int, str] = {start.id: "acc"} if start is not None else {}
    names.update(bound or {})
    operands: list[Operand] = []
    lines = []
    computing = [n for n in chain if n.op != "constant"]  # constants only name literals
    out = result or (computing[-1].outputs[0] if computing else start)
    draws = any(draws_random(n.op, n.attrs) for n in chain)
    if draws and tile:  # a pointwise body has `offs` already, as a parameter
        lines.append(_tile_offsets(start))
    for node in chain:
        if node.op in ("softmax", "log_softmax"):  # a whole row is in the tile (the fuser checked)
            x = names[node.inputs[0].id]
            result = f"v{len(lines)}"
            names[node.outputs[0].id] = result
            lines.append(f"    shifted = tl.where(mask_n[None, :], {x}, -float(\"inf\"))  # {node.origin}: {node.op} of each row")
            lines.append("    shifted = shifted - tl.max(shifted, axis=1)[:, None]  # tl.max skips a NaN; exp(NaN) still makes the row NaN")
            lines.append("    total = tl.sum(tl.exp(shifted), axis=1)[:, None]")
            lines.append(f"    {result} = " + ("shifted - tl.log(total)" if node.op == "log_softmax" else "tl.exp(shifted) / total"))
            continue
        if node.op == "constant":  # constants are literals in the generated code
            names[node.outputs[0].id] = literal(node.attrs["value"])
            continue
        args = []
        for v in node.inputs:
            if v.id not in names:
                kind = operand_kind(v, out) if tile else flat_operand_kind(v, out)
                slot = len(operands)
                operands.append(Operand(index_of[v.id], kind, slot))
                names[v.id] = f"e{slot}"
                label = body.inputs[index_of[v.id]].name or f"input {index_of[v.id]}"
                lines.append(f"    e{slot} = {_load(kind, slot, tile, out)}  # {label}")
            args.append(names[v.id])
        result = f"v{len(lines)}"
        names[node.outputs[0].id] = result
        lines.append(f"    {result} = {expression(node.op, args, node.attrs)}  # {node.origin}: {node.op}")
    if not chain:
        lines.append("    pass")
    params = params or (TILE_PARAMS if tile else FLAT_EPILOGUE_PARAMS if start is not None else FLAT_PARAMS)
    ret = names[out.id] if out is not None else "acc"
    source = f"@triton.jit\ndef {name}({params}):\n" + "\n".join(lines) + f"\n    return {ret}\n"
    if draws:  # the mask's helper (kernels/random.py); a module-level import in the generated module
        source = f"{RNG_IMPORT}  # dropout's mask: Philox of (seed, step, element index)\n\n\n{source}"
    return source, operands
