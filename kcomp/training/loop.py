"""fit / evaluate / train_on_batch: Keras's training loop around the compiled step graphs.

Losses and metrics are added up on the device; a number is read back only
when a progress line or the epoch's logs show it.
"""

import math
import warnings
from collections.abc import MutableMapping
from dataclasses import dataclass, field

import numpy as np
import torch

from kcomp import distribution, losses as losses_module, metrics as metrics_module, optimizers
from kcomp.errors import ArgumentError, KcompError, ShapeError, format_shape
from kcomp.layers.base import Layer
from kcomp.training.data import (
    batch_size as checked_batch_size, check_class_ids, check_embedding_ids, check_lengths, model_inputs,
    refuse_weights_with_masks, sample_weights, targets,
)
from kcomp.training.feeds import ArrayFeed, StreamFeed
from kcomp.training.runners import device_of, runner_for
from kcomp.training.state import TrainState
from kcomp.training.streams import check_arguments as check_stream_arguments, refuse_empty, stream_of
from kcomp.training.step import build_test_step, build_train_step, output_names
from kcomp.utils.progbar import Progbar


@dataclass
class Compiled:
    optimizer: object
    losses: list  # one Loss (or None) per model output
    loss_weights: list[float]
    metrics: list[list]  # per output
    state: TrainState  # every tensor the steps read and update, by name
    steps: dict = field(default_factory=dict)  # (kind, target specs, trainable weights) -> Step
    trainable_seen: tuple | None = None  # (Layer.trainable_changes, trainable weight paths) at the last step


def _per_output(value, names: list[str], what: str, default=None) -> list:
    """One entry per output from a list (in output order), a dict keyed by output name (Keras's
    output_names; outputs left out get `default`), or one value for every output."""
    n = len(names)
    if isinstance(value, dict):
        unknown = sorted(set(value) - set(names))
        if unknown:
            raise ArgumentError(f"{what} given for {unknown}, which are not outputs of the model; its outputs are {names}.")
        return [value.get(name, default) for name in names]
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ArgumentError(f"Received {len(value)} {what} for a model with {n} outputs; give one per output.")
        return list(value)
    return [value] * n


def _metric_lists(metrics, names: list[str]) -> list[list]:
    """One list of metric identifiers per output, from Keras's forms: one list for every output,
    a list of lists (one per output) or a dict keyed by output name."""
    def listed(m):
        return [] if m is None else list(m) if isinstance(m, (list, tuple)) else [m]

    if metrics is None:
        return [[] for _ in names]
    if not isinstance(metrics, (list, tuple, dict)):
        raise ArgumentError(f"Received: metrics={metrics!r}. Expected a list, or a dict keyed by output name, as in Keras.")
    if isinstance(metrics, dict):
        return [listed(m) for m in _per_output(metrics, names, "metrics")]
    if len(names) == 1:
        return [list(metrics[0]) if len(metrics) == 1 and isinstance(metrics[0], (list, tuple)) else list(metrics)]
    # Several outputs: as Keras, a list gives each output its entry (a metric or a list of them).
    return [listed(m) for m in _per_output(list(metrics), names, "metric entries")]


def compile_settings(model, optimizer, loss, loss_weights, metrics, weighted_metrics=None) -> Compiled:
    names = output_names(model)
    n = len(names)
    if isinstance(loss, dict) and set(loss) != set(names):
        # Keras asks for every output in a loss dict (None for an output without a loss).
        raise ArgumentError(f"The loss dict has keys {sorted(loss)}; give one for each output {names} (None for none).")
    if n > 1 and not isinstance(loss, (list, tuple, dict)) and isinstance(loss_weights, (list, tuple, dict)):
        raise ArgumentError(f"One loss ({loss!r}) with loss_weights={loss_weights!r}: give a loss per output, as Keras asks.")
    loss_list = [None if l is None else losses_module.get(l) for l in _per_output(loss, names, "losses")]
    weights = [1.0] * n if loss_weights is None else [float(w) for w in _per_output(loss_weights, names, "loss weights", 1.0)]
    resolved = [[metrics_module.get(m) for m in ms] for ms in _metric_lists(metrics, names)]
    for plain, weighted in zip(resolved, _metric_lists(weighted_metrics, names)):
        # Keras: a weighted metric keeps its name unless an unweighted one has it ("weighted_<name>").
        taken = {m.name for m in plain}
        for identifier in weighted:
            metric = metrics_module.get(identifier)
            plain.append(metric.weighted_copy(f"weighted_{metric.name}" if metric.name in taken else metric.name))
    optimizer = optimizers.get(optimizer)
    return Compiled(optimizer, loss_list, weights, resolved, TrainState(model, optimizer, device_of(model)))


# -- data -------------------------------------------------------------------------
def _target_specs(ys) -> tuple:
    return tuple((tuple(y.shape[1:]), str(y.dtype).replace("torch.", "")) for y in ys)


def _trainable_now(model, compiled: Compiled) -> tuple:
    """Which weights train: a layer frozen or unfrozen after compile (fine-tuning) takes effect at
    the next step, as in Keras, since steps are built per set of trainable weights. Walked only when
    some layer's flag was set since the last step (Layer.trainable_changes), not every batch."""
    changes = Layer.trainable_changes
    if compiled.trainable_seen is None or compiled.trainable_seen[0] != changes:
        compiled.trainable_seen = (changes, tuple(w.path for w in model.trainable_weights))
    return compiled.trainable_seen[1]


def _step(model, compiled: Compiled, kind: str, ys) -> object:
    specs = _target_specs(ys)
    key = (kind, specs, _trainable_now(model, compiled))
    if key not in compiled.steps:
        build = build_train_step if kind == "train" else build_test_step
        try:
            compiled.steps[key] = build(model, compiled, specs)
        except ShapeError as e:
            outs = ", ".join(format_shape(t.shape) for t in model.outputs)
            targets = ", ".join(format_shape((None, *s)) for s, _ in specs)
            names = ", ".join(l.name for l in compiled.losses if l is not None)
            raise ShapeError(f"Targets of shape {targets} do not fit the loss {names} for outputs of shape {outs}: {e}") from None
    return compiled.steps[key]


class _Accumulator:
    """The epoch's loss and metric states: running sums in the training state that the step adds
    each batch into (Step.accumulators); a number is read back only for a progress line or the
    epoch's logs."""

    def __init__(self, state: TrainState, step):
        self.state, self.step = state, step
        self.reset()

    def reset(self):
        self.samples = 0
        self.state.zero_sums((name, shape) for name, shape, _ in self.step.accumulators)

    def add(self, n):
        self.samples += n  # the values themselves were added inside the step

    def logs(self, prefix="") -> dict:
        sums = self.state.logged
        (loss, _, _), *states = self.step.accumulators
        out = {f"{prefix}loss": float(sums(loss)) / self.samples if self.samples else float("nan")}
        for name, metric, (state, _, per_sample) in zip(self.step.metric_names, self.step.metrics, states, strict=True):
            out[f"{prefix}{name}"] = metric.result(sums(state), self.samples * per_sample)
        return out


class _RunningLogs(MutableMapping):
    """The logs on_train_batch_end gets, as Keras 3 gives them: the epoch's loss and metrics so
    far. The numbers are read on the first access (on a GPU a read waits for the step), not every
    batch; a callback that keeps this object should read it in the hook (or copy it, dict(logs)),
    as a later first read sees later values. Callbacks may add or change entries, as in a dict."""

    def __init__(self, accumulator: _Accumulator):
        self._accumulator, self._logs = accumulator, None

    def _read(self) -> dict:
        if self._logs is None:
            self._logs = self._accumulator.logs()
        return self._logs

    def __getitem__(self, key):
        return self._read()[key]

    def __setitem__(self, key, value):
        self._read()[key] = value

    def __delitem__(self, key):
        del self._read()[key]

    def __iter__(self):
        return iter(self._read())

    def __len__(self) -> int:
        return len(self._read())


def _accumulator(model, compiled, kind, ys) -> _Accumulator:
    step = _step(model, compiled, kind, ys)
    return _Accumulator(compiled.state, step)


def run_batch(model, compiled, kind, xs, ys, sw, accumulator, rows=None) -> None:
    """One step on one batch, adding into `accumulator`'s running sums. The batch is (xs, ys, sw)
    themselves, or with `rows` (an index tensor on their device) those rows of them: a runner
    that stages into captured buffers gathers them straight there."""
    step = _step(model, compiled, kind, ys)
    lr = float(compiled.optimizer.current_learning_rate())  # Keras: a schedule at the iterations done before this step
    if kind == "train":
        compiled.state.before_train_step()
    runner_for(model, step).run([*xs, *ys, sw], lr, rows, compiled.state)
    if kind == "train":
        compiled.state.after_train_step()
    accumulator.add(len(sw) if rows is None else len(rows))


def _to_device(device, xs, ys, sw):
    if all(t.device == device for t in (*xs, *ys, sw)):
        return xs, ys, sw  # (the CPU path's every train_on_batch: no views made)
    if sw.dim() and sw.stride(0) == 0 and len(sw):  # one weight for all: move one, keep the batch stride 0
        sw = sw[:1].to(device).expand(sw.shape)
    return [t.to(device) for t in xs], [t.to(device) for t in ys], sw.to(device)


def fit(model, x, y, batch_size=None, epochs=1, verbose="auto", callbacks=None, validation_split=0.0,
        validation_data=None, shuffle=True, class_weight=None, sample_weight=None, initial_epoch=0,
        steps_per_epoch=None, validation_batch_size=None, validation_steps=None, validation_freq=1):
    from kcomp.callbacks import CallbackList, History

    compiled = _require_compiled(model)
    device = device_of(model)
    stream = stream_of(x)
    if stream is not None:
        check_stream_arguments(stream, "fit", y, sample_weight, class_weight, validation_split, batch_size, shuffle)
        feed = StreamFeed(model, compiled, stream, "train", shuffle, steps_per_epoch, device, class_weight)
    else:
        feed, validation_data = _array_feed(model, compiled, x, y, batch_size, shuffle, class_weight, sample_weight,
                                            validation_split, validation_data, steps_per_epoch, device)
    validation = _validation_feed(model, compiled, validation_data, validation_batch_size or batch_size,
                                  validation_steps, device)
    history = History()
    callback_list = CallbackList([*(callbacks or []), history], model)
    model.stop_training = False
    _validates(0, validation_freq)  # a bad validation_freq fails before the first step
    callback_list.set_params({"verbose": 1 if verbose == "auto" else verbose, "epochs": epochs, "steps": feed.steps})
    callback_list.call("on_train_begin")
    try:
        for epoch in range(initial_epoch, epochs):
            callback_list.call("on_epoch_begin", epoch)
            bar = Progbar(feed.steps, verbose=_verbose(verbose))
            if bar.verbose:
                print(f"Epoch {epoch + 1}/{epochs}")
            acc, done = None, 0
            with feed.epoch() as batches:
                for i, (xs, ys, sw, idx) in enumerate(batches):
                    acc = acc or _accumulator(model, compiled, "train", ys)  # (made anew: its sums are zeroed)
                    callback_list.call("on_train_batch_begin", i)
                    run_batch(model, compiled, "train", xs, ys, sw, acc, rows=idx)
                    callback_list.call("on_train_batch_end", i, _RunningLogs(acc))
                    done = i + 1
                    bar.update(done, acc.logs, finalize=False)
                    if model.stop_training:
                        break
            if acc is None:  # a stream with nothing left (a generator's second epoch): Keras stops here
                refuse_empty(epoch - initial_epoch, stream.kind if stream else "data")
                warnings.warn("Your input ran out of data; interrupting training. Make sure that your dataset or "
                              "generator can generate at least `steps_per_epoch * epochs` batches.", stacklevel=3)
                break
            logs = acc.logs()
            if validation is not None and _validates(epoch, validation_freq):
                logs.update(evaluate(model, verbose=0, return_dict=True, callbacks=callback_list, _prefix="val_",
                                     _feed=validation))
            bar.update(feed.steps or done, lambda: logs, finalize=True)
            distribution.check_replicas(model, epoch)  # with KCOMP_DIST_CHECK=1 in a data-parallel job
            callback_list.call("on_epoch_end", epoch, logs)
            if model.stop_training:
                break
    finally:
        feed.close()
        if validation is not None:
            validation.close()
    callback_list.call("on_train_end")
    return history


def _array_feed(model, compiled, x, y, batch_size, shuffle, class_weight, sample_weight, validation_split,
                validation_data, steps_per_epoch, device):
    """fit's arrays checked and moved to the device, and the validation data split from them."""
    batch_size = checked_batch_size(batch_size)
    xs = model_inputs(model, x)
    ys = targets(model, y)
    n = check_lengths(xs, ys)
    check_class_ids(model, compiled, ys)  # validation targets included: split below, or checked there
    check_embedding_ids(model, xs)  # validation inputs included, as the targets
    refuse_weights_with_masks(model, sample_weight, class_weight)
    sw = sample_weights(n, sample_weight, class_weight, ys)
    if validation_data is None and validation_split:
        if not 0 < validation_split < 1:
            raise ArgumentError(f"Received: validation_split={validation_split}. Expected a number in (0, 1).")
        split = int(math.floor(n * (1.0 - validation_split)))  # Keras 3's split: the last samples, before shuffling
        # Keras splits the sample weights too (class weights weigh only the training part).
        val_weights = None if sample_weight is None else sw[split:]
        validation_data = ([t[split:] for t in xs], [t[split:] for t in ys], val_weights, "checked")
        xs, ys, sw, n = [t[:split] for t in xs], [t[:split] for t in ys], sw[:split], split
    xs, ys, sw = _to_device(device, xs, ys, sw)  # once: batches are then gathered on the device
    return ArrayFeed(xs, ys, sw, n, batch_size, shuffle, steps_per_epoch, device), validation_data


def _validation_feed(model, compiled, validation_data, batch_size, steps, device):
    """The feed of fit's validation: arrays ((x, y) or (x, y, sample_weight), checked here unless split
    from fit's own), a generator or a PyDataset; one feed for every epoch, so a stream read with
    validation_steps goes on across epochs."""
    if validation_data is None:
        return None
    stream = stream_of(validation_data)
    if stream is not None:
        return StreamFeed(model, compiled, stream, "test", False, steps, device, restart=True)
    if not isinstance(validation_data, (list, tuple)) or len(validation_data) not in (2, 3, 4):
        raise ArgumentError("validation_data is (x, y) or (x, y, sample_weight), a generator or a PyDataset, as in Keras.")
    vx, vy = validation_data[0], validation_data[1]
    val_weights = validation_data[2] if len(validation_data) > 2 else None
    if len(validation_data) != 4:  # not split from fit's checked arrays
        vx, vy = model_inputs(model, vx), targets(model, vy)
        check_lengths(vx, vy)
        check_class_ids(model, compiled, vy)
        check_embedding_ids(model, vx)
        refuse_weights_with_masks(model, val_weights)
    n = check_lengths(vx, vy)
    sw = sample_weights(n, val_weights, None, vy)
    vx, vy, sw = _to_device(device, vx, vy, sw)
    return ArrayFeed(vx, vy, sw, n, checked_batch_size(batch_size), False, steps, device, restart=True)


def _validates(epoch: int, validation_freq) -> bool:
    """Keras's validation_freq: every n-th epoch (an int), or the epochs listed (counted from 1)."""
    if isinstance(validation_freq, (list, tuple, set)):
        return epoch + 1 in validation_freq
    if isinstance(validation_freq, bool) or not isinstance(validation_freq, (int, np.integer)) or validation_freq < 1:
        raise ArgumentError(f"Received: validation_freq={validation_freq!r}. Expected a positive integer or a list of epochs.")
    return (epoch + 1) % validation_freq == 0


def evaluate(model, x=None, y=None, batch_size=None, verbose="auto", sample_weight=None, steps=None,
             return_dict=False, callbacks=None, _prefix="", _feed=None):
    """Keras's evaluate; fit's validation passes its feed (`_feed`, read on for each validation)."""
    from kcomp.callbacks import CallbackList

    compiled = _require_compiled(model)
    device = device_of(model)
    stream = stream_of(x)
    feed = _feed
    if feed is None and stream is not None:
        check_stream_arguments(stream, "evaluate", y, sample_weight, batch_size=batch_size)
        feed = StreamFeed(model, compiled, stream, "test", False, steps, device)
    elif feed is None:
        batch_size = checked_batch_size(batch_size)
        xs, ys = model_inputs(model, x), targets(model, y)
        n = check_lengths(xs, ys)
        check_class_ids(model, compiled, ys)
        check_embedding_ids(model, xs)
        refuse_weights_with_masks(model, sample_weight)
        sw = sample_weights(n, sample_weight, None, ys)
        xs, ys, sw = _to_device(device, xs, ys, sw)
        feed = ArrayFeed(xs, ys, sw, n, batch_size, False, steps, device, restart=True)
    bar = Progbar(feed.steps, verbose=_verbose(verbose))
    callback_list = CallbackList(callbacks, model)
    callback_list.call("on_test_begin")
    acc, done = None, 0
    try:
        with torch.inference_mode(), feed.epoch() as batches:
            for i, (xs, ys, sw, idx) in enumerate(batches):
                acc = acc or _accumulator(model, compiled, "test", ys)
                callback_list.call("on_test_batch_begin", i)
                run_batch(model, compiled, "test", xs, ys, sw, acc, rows=idx)
                callback_list.call("on_test_batch_end", i, _RunningLogs(acc))
                done = i + 1
                bar.update(done, acc.logs, finalize=feed.steps is not None and done >= feed.steps)
    finally:
        if _feed is None:
            feed.close()
    if acc is None:  # no batch: a stream with nothing (left) in it
        if _prefix:
            warnings.warn("The validation data ran out; this epoch logs no validation numbers. Give validation "
                          "data that fit can read again each epoch (arrays or a PyDataset).", stacklevel=3)
            return {}
        refuse_empty(0, stream.kind if stream else "data")
    if feed.steps is None or done < feed.steps:  # the last line of a bar of unknown (or too long) length
        bar.update(done, acc.logs, finalize=True)
    logs = acc.logs(_prefix)
    callback_list.call("on_test_end", acc.logs())
    return logs if return_dict else as_returned(model, logs)


def as_returned(model, logs: dict):
    """evaluate's and train_on_batch's numbers without return_dict, in Keras 3's order: the loss (alone
    if nothing else is logged), each output's loss, then the metrics: in compile order for one output,
    by name for several (as Keras flattens its per-output metric results)."""
    values = list(logs.values())
    if len(values) == 1:
        return values[0]
    if len(model.outputs) > 1:
        names = list(logs)
        losses = [n for n in names[1:] if n.endswith("_loss") and n[: -len("_loss")] in output_names(model)]
        values = [logs[n] for n in [names[0], *losses, *sorted(n for n in names[1:] if n not in losses)]]
    return values


def _require_compiled(model) -> Compiled:
    compiled = getattr(model, "_training", None)
    if compiled is None or not any(l is not None for l in compiled.losses):
        raise KcompError("Call model.compile(optimizer=..., loss=...) before fit or evaluate.")
    return compiled


def _verbose(verbose) -> int:
    return 0 if verbose == 0 or not distribution.writes_here() else 1  # in a data-parallel job, process 0 prints


def on_batch(model, kind, x, y, sample_weight=None) -> dict:
    """train_on_batch / test_on_batch: one step on exactly this data."""
    compiled = _require_compiled(model)
    xs = model_inputs(model, x)
    ys = targets(model, y)
    n = check_lengths(xs, ys)
    check_class_ids(model, compiled, ys)
    check_embedding_ids(model, xs)
    refuse_weights_with_masks(model, sample_weight)
    acc = _accumulator(model, compiled, kind, ys)
    sw = sample_weights(n, sample_weight, None, ys)
    xs, ys, sw = _to_device(device_of(model), xs, ys, sw)
    run_batch(model, compiled, kind, xs, ys, sw, acc)
    return acc.logs()
