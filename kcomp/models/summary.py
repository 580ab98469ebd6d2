"""model.summary(): Keras's table of layers, output shapes and parameter counts."""

from kcomp.errors import format_shape
from kcomp.layers.tensors import flatten


def readable_size(num_bytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if num_bytes < 1024 or unit == "GB":
            return f"{num_bytes:.2f} {unit}"
        num_bytes /= 1024


def _output_shape(layer) -> str:
    """The shape of the layer's last call's output(s), as Keras shows it (for a layer used inside
    another's call, the last traced); "?" for a layer never called."""
    if layer._calls:
        shapes = [format_shape(t.shape) for t in flatten(layer._calls[-1].outputs)]
    elif layer.__dict__.get("_traced_output_shapes"):
        shapes = [format_shape(shape) for shape in layer._traced_output_shapes]
    else:
        return "?"
    return shapes[0] if len(shapes) == 1 else "[" + ", ".join(shapes) + "]"


def _connected_to(call) -> list[str]:
    """Keras's "layer[node][tensor]": which call of the producing layer, which of its outputs."""
    return [f"{t.call.layer.name}[{t.call.layer._calls.index(t.call)}][{t.index}]" for t in flatten(call.inputs)]


def _type_name(layer) -> str:
    from kcomp.models.functional import Model
    from kcomp.models.sequential import Sequential

    if isinstance(layer, Model) and not isinstance(layer, Sequential):
        return "Functional"  # Keras's class for Model(inputs, outputs)
    return type(layer).__name__


def _params(layer) -> str:
    return f"{layer.count_params():,}" if layer.built else "0 (unbuilt)"


def _sequential_like(model) -> bool:
    """Keras leaves out "Connected to" for a functional model that is a plain chain: no layer called
    twice, no call on several tensors, and no two calls at the same distance from the outputs."""
    calls = model._call_order
    if len({id(c.layer) for c in calls}) != len(calls) or any(len(flatten(c.inputs)) > 1 for c in calls):
        return False
    depth: dict[int, int] = {}
    for call in reversed(calls):
        d = depth.setdefault(id(call), 0)
        for t in flatten(call.inputs):
            depth[id(t.call)] = max(depth.get(id(t.call), 0), d + 1)
    return len(set(depth.values())) == len(calls)


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


def _trainable(layer) -> str:
    """Keras's show_trainable column: Y or N for a layer with weights, - for one without."""
    if not layer.weights:
        return "-"
    return "Y" if layer.trainable else "N"


def format_summary(model, line_length=None, expand_nested=False, show_trainable=False) -> str:
    functional = not (hasattr(model, "_stack") or model._subclassed)  # Keras shows those two as lists of layers
    if functional:
        model._require_built("the summary")
    connected = functional and not _sequential_like(model)
    header = ["Layer (type)", "Output Shape", "Param #"] + (["Connected to"] if connected else [])
    header += ["Trainable"] if show_trainable else []
    calls_of: dict[int, list] = {}
    for call in model._call_order:  # a shared layer has several calls: one row, its links listed together
        calls_of.setdefault(id(call.layer), []).append(call)
    rows = []

    def add_rows(layer, level):
        prefix = "   " * level + "└ " if level else ""
        cells = [f"{prefix}{layer.name} ({_type_name(layer)})", _output_shape(layer), _params(layer)]
        links = []
        if connected:
            links = [link for call in calls_of.get(id(layer), []) if level == 0 for link in _connected_to(call)]
            cells.append(links[0] if links else ("-" if level == 0 else ""))
        if show_trainable:
            cells.append(_trainable(layer))
        rows.append(cells)
        rows.extend([["", "", "", link] + ([""] if show_trainable else []) for link in links[1:]])
        if expand_nested and hasattr(layer, "_call_order"):
            for inner in layer.layers:
                add_rows(inner, level + 1)

    for layer in model.layers:
        add_rows(layer, 0)
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
