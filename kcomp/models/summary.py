"""model.summary(): Keras's table of layers, output shapes and parameter counts."""

from kcomp.errors import format_shape
from kcomp.layers.base import flatten
from kcomp.layers.core import InputLayer


def readable_size(num_bytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if num_bytes < 1024 or unit == "GB":
            return f"{num_bytes:.2f} {unit}"
        num_bytes /= 1024


def _output_shape(call) -> str:
    shapes = [format_shape(t.shape) for t in flatten(call.outputs)]
    return shapes[0] if len(shapes) == 1 else "[" + ", ".join(shapes) + "]"


def _connected_to(call) -> list[str]:
    """Keras's "layer[node][tensor]": which call of the producing layer, which of its outputs."""
    return [f"{t.call.layer.name}[{t.call.layer._calls.index(t.call)}][{t.index}]" for t in flatten(call.inputs)]


def _table(header: list[str], rows: list[list[str]], widths: list[int], right: set[int]) -> list[str]:
    def line(cells):
        parts = []
        for i, (cell, w) in enumerate(zip(cells, widths)):
            parts.append(cell.rjust(w) if i in right else cell.ljust(w))
        return " " + " ".join(parts).rstrip()

    total = sum(widths) + len(widths)
    out = ["_" * total, line(header), "=" * total]
    for k, row in enumerate(rows):
        out.append(line(row))
        if k < len(rows) - 1:
            out.append("")
    out.append("=" * total)
    return out


def format_summary(model, line_length=None) -> str:
    model._require_built("the summary")
    functional = not hasattr(model, "_stack")
    header = ["Layer (type)", "Output Shape", "Param #"] + (["Connected to"] if functional else [])
    rows = []
    calls_of: dict[int, list] = {}
    for call in model._calls:  # a shared layer has several calls: one row, its links listed together
        calls_of.setdefault(id(call.layer), []).append(call)
    for calls in calls_of.values():
        layer = calls[0].layer
        if isinstance(layer, InputLayer) and not functional:
            continue
        cells = [f"{layer.name} ({type(layer).__name__})", _output_shape(calls[0]), f"{layer.count_params():,}"]
        if functional:
            links = [link for call in calls for link in _connected_to(call)]
            cells.append(links[0] if links else "-")
            rows.append(cells)
            rows.extend([["", "", "", link] for link in links[1:]])
        else:
            rows.append(cells)
    widths = [max(len(h), *(len(r[i]) for r in rows)) + 2 for i, h in enumerate(header)] if rows else [len(h) + 2 for h in header]
    if line_length:
        widths[0] = max(widths[0], line_length - sum(widths[1:]) - len(widths))
    trainable = sum(w.value.numel() for w in model.trainable_weights)
    frozen = sum(w.value.numel() for w in model.non_trainable_weights)
    size = {id(w): w.value.element_size() * w.value.numel() for w in model.weights}
    t_bytes = sum(size[id(w)] for w in model.trainable_weights)
    f_bytes = sum(size[id(w)] for w in model.non_trainable_weights)
    lines = [f'Model: "{model.name}"']
    lines += _table(header, rows, widths, right={2})
    lines += [
        f"Total params: {trainable + frozen:,} ({readable_size(t_bytes + f_bytes)})",
        f"Trainable params: {trainable:,} ({readable_size(t_bytes)})",
        f"Non-trainable params: {frozen:,} ({readable_size(f_bytes)})",
        "_" * (sum(widths) + len(widths)),
    ]
    return "\n".join(lines)
