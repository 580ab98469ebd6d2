"""Callbacks with Keras's hooks: History, EarlyStopping, ModelCheckpoint, ReduceLROnPlateau,
LearningRateScheduler, TerminateOnNaN, CSVLogger, LambdaCallback."""

import csv
import math
import warnings
from pathlib import Path

import numpy as np

import torch

from kcomp import distribution
from kcomp.errors import ArgumentError


class Callback:
    """Override any of Keras's hooks; `self.model` is set before training starts."""

    params: dict = {}

    def set_model(self, model):
        self.model = model

    def set_params(self, params):
        """What fit runs: {"verbose": ..., "epochs": ..., "steps": ...} (Keras's Callback.params)."""
        self.params = params

    def on_train_begin(self, logs=None): ...
    def on_train_end(self, logs=None): ...
    def on_epoch_begin(self, epoch, logs=None): ...
    def on_epoch_end(self, epoch, logs=None): ...
    def on_train_batch_begin(self, batch, logs=None): ...
    def on_train_batch_end(self, batch, logs=None): ...
    # evaluate (and fit's validation) and predict call these, as Keras does
    def on_test_begin(self, logs=None): ...
    def on_test_end(self, logs=None): ...
    def on_test_batch_begin(self, batch, logs=None): ...
    def on_test_batch_end(self, batch, logs=None): ...
    def on_predict_begin(self, logs=None): ...
    def on_predict_end(self, logs=None): ...
    def on_predict_batch_begin(self, batch, logs=None): ...
    def on_predict_batch_end(self, batch, logs=None): ...


class CallbackList:
    def __init__(self, callbacks, model):
        if isinstance(callbacks, CallbackList):  # fit hands its own list on to its validation
            callbacks = callbacks.callbacks
        if isinstance(callbacks, Callback):
            raise ArgumentError(f"Received: callbacks={callbacks!r}. Pass a list of callbacks, as in Keras.")
        self.callbacks = list(callbacks or [])
        for cb in self.callbacks:
            if not isinstance(cb, Callback):
                raise ArgumentError(f"Received: callback {cb!r}. Callbacks must subclass kcomp.callbacks.Callback.")
            cb.set_model(model)

    def set_params(self, params):
        for cb in self.callbacks:
            cb.set_params(params)

    def call(self, hook, *args):
        for cb in self.callbacks:
            getattr(cb, hook)(*args)


class History(Callback):
    """Keras's History: `history.history["loss"]` lists one value per epoch."""

    def on_train_begin(self, logs=None):
        self.epoch, self.history = [], {}

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(v)


def _better(callback, current, best, min_delta=0.0) -> bool:
    """Whether `current` improves on `best` for the callback's monitor and mode (Keras's
    MonitorCallback): in mode "auto", "loss" goes down and a compiled metric goes the way Keras's
    metric class goes (accuracy, AUC, R2, F1, IoU up; errors down); anything else must be told."""
    up = _goes_up(callback)  # first: an unknown direction fails at the first epoch, as in Keras
    if best is None:
        return True
    return current > best + min_delta if up else current < best - min_delta


def _goes_up(callback) -> bool:
    monitor, mode = callback.monitor, callback.mode
    if mode in ("min", "max"):
        return mode == "max"
    name = monitor[len("val_"):] if monitor.startswith("val_") else monitor
    if name == "loss":
        return False
    from kcomp.metrics.base import goes_up
    from kcomp.training.step import output_names

    training = getattr(callback.model, "_training", None)
    if training is not None:
        outputs = output_names(callback.model)
        for out, metrics in zip(outputs, training.metrics):
            for metric in metrics:
                if name in (metric.name, f"{out}_{metric.name}") and goes_up(metric) is not None:
                    return goes_up(metric)
    raise ArgumentError(
        f"{type(callback).__name__} watches monitor={monitor!r}, but whether it should go up or down is not known "
        "(as in Keras). Pass mode='max' or mode='min'."
    )


class EarlyStopping(Callback):
    def __init__(self, monitor="val_loss", min_delta=0, patience=0, verbose=0, mode="auto", baseline=None,
                 restore_best_weights=False, start_from_epoch=0):
        self.monitor, self.min_delta, self.patience, self.verbose = monitor, abs(min_delta), patience, verbose
        self.mode, self.baseline, self.restore_best_weights, self.start_from_epoch = mode, baseline, restore_best_weights, start_from_epoch

    def on_train_begin(self, logs=None):
        self.wait, self.stopped_epoch, self.best, self.best_weights, self.best_epoch = 0, 0, None, None, 0

    def on_epoch_end(self, epoch, logs=None):
        # Keras 3's rule, step by step: the wait grows every epoch and restarts only on an epoch that
        # beats both the best so far and the baseline; the best weights are those of the best epoch
        # (or of the first watched one), restored when training ends, stopped early or not.
        current = (logs or {}).get(self.monitor)
        if current is None:
            warnings.warn(f"EarlyStopping watches {self.monitor}, which is not in the logs {sorted(logs or {})}.", stacklevel=2)
            return
        if epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights, self.best_epoch = self.model.get_weights(), epoch
        self.wait += 1
        if _better(self, current, self.best, self.min_delta):
            self.best, self.best_epoch = current, epoch
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            if self.baseline is None or _better(self, current, self.baseline, self.min_delta):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.model.stop_training = True
            self.stopped_epoch = epoch

    def on_train_end(self, logs=None):
        if self.stopped_epoch > 0 and self.verbose:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose:
                print(f"Restoring model weights from the end of the best epoch: {self.best_epoch + 1}.")
            self.model.set_weights(self.best_weights)


class TerminateOnNaN(Callback):
    """Stops training when a batch's loss is NaN or infinite; the weights and optimizer slots
    of the last good step are put back, so the model is never left corrupted.

    The step may write new weights over the old ones in place (the triton backends do), so
    the last good values are copied before each batch into buffers kept here: one
    multi-tensor copy per batch."""

    def _state(self) -> list[tuple]:
        """(tensor, how to replace it) for what a step updates: the weights, then the optimizer's slots."""
        state = [(w.value, lambda t, w=w: setattr(w, "value", t)) for w in self.model.weights]
        optimizer = getattr(self.model, "optimizer", None)
        for slots in getattr(optimizer, "slots", {}).values():
            state += [(s, lambda t, slots=slots, j=j: slots.__setitem__(j, t)) for j, s in enumerate(slots)]
        return state

    def on_train_batch_begin(self, batch, logs=None):
        tensors = [t.detach() for t, _ in self._state()]
        saved = getattr(self, "_saved", None)
        if saved is None or [(t.shape, t.dtype, t.device) for t in saved] != [(t.shape, t.dtype, t.device) for t in tensors]:
            self._saved = [t.clone() for t in tensors]
        else:
            torch._foreach_copy_(saved, tensors)

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            state = self._state()
            for (tensor, replace), good in zip(state, self._saved):
                replace(good.clone())  # a runtime holding the old tensor as its buffer copies this in
            for tensor, replace in state[len(self._saved):]:  # slots the failed step created: as new, zeros
                replace(torch.zeros_like(tensor))
            print(f"Batch {batch}: invalid loss, terminating training")
            self.model.stop_training = True


class LearningRateScheduler(Callback):
    def __init__(self, schedule, verbose=0):
        self.schedule, self.verbose = schedule, verbose

    def on_epoch_begin(self, epoch, logs=None):
        opt = self.model._training.optimizer
        lr = float(self.schedule(epoch, opt.current_learning_rate()))
        opt.learning_rate = lr
        if self.verbose:
            print(f"Epoch {epoch + 1}: LearningRateScheduler setting learning rate to {lr}.")

    def on_epoch_end(self, epoch, logs=None):
        _log_learning_rate(self.model, logs)


def _log_learning_rate(model, logs) -> None:
    """Keras's LearningRateScheduler and ReduceLROnPlateau put the epoch's learning rate in the
    logs (so History has it), as the float32 the optimizer holds."""
    if logs is not None:
        logs["learning_rate"] = float(np.float32(model._training.optimizer.current_learning_rate()))


class ReduceLROnPlateau(Callback):
    def __init__(self, monitor="val_loss", factor=0.1, patience=10, verbose=0, mode="auto", min_delta=1e-4, cooldown=0, min_lr=0.0):
        if factor >= 1.0:
            raise ArgumentError(f"Received: factor={factor}. ReduceLROnPlateau needs a factor below 1.")
        self.monitor, self.factor, self.patience, self.verbose, self.mode = monitor, factor, patience, verbose, mode
        self.min_delta, self.cooldown, self.min_lr = min_delta, cooldown, min_lr

    def on_train_begin(self, logs=None):
        self.wait, self.cooldown_counter, self.best = 0, 0, None

    def on_epoch_end(self, epoch, logs=None):
        _log_learning_rate(self.model, logs)
        current = (logs or {}).get(self.monitor)
        if current is None:
            return
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if _better(self, current, self.best, self.min_delta):
            self.best, self.wait = current, 0
        elif self.cooldown_counter <= 0:
            self.wait += 1
            if self.wait >= self.patience:
                opt = self.model._training.optimizer
                old = opt.current_learning_rate()
                if old > self.min_lr:
                    opt.learning_rate = max(old * self.factor, self.min_lr)
                    if self.verbose:
                        print(f"Epoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to {opt.learning_rate}.")
                    self.cooldown_counter, self.wait = self.cooldown, 0


class CSVLogger(Callback):
    def __init__(self, filename, separator=",", append=False):
        self.filename, self.separator, self.append = filename, separator, append

    def on_train_begin(self, logs=None):
        # In a data-parallel job process 0 writes the log; the logs are the same on every process.
        self._file = open(self.filename, "a" if self.append else "w", newline="") if distribution.writes_here() else None
        self._writer = None

    def on_epoch_end(self, epoch, logs=None):
        if self._file is None:
            return
        logs = logs or {}
        if self._writer is None:
            # Keras's columns: the first epoch's keys, sorted, and their val_ twins when it had no
            # validation (validation_freq > 1 or none: those columns hold NA).
            keys = sorted(logs)
            if not any(key.startswith("val_") for key in keys):
                keys += [f"val_{key}" for key in keys]
            self._writer = csv.DictWriter(self._file, ["epoch", *keys], delimiter=self.separator, extrasaction="ignore")
            if not self.append or self._file.tell() == 0:
                self._writer.writeheader()
        row = {key: logs.get(key, "NA") for key in self._writer.fieldnames[1:]}  # "NA": an epoch without that value
        self._writer.writerow({"epoch": epoch, **row})
        self._file.flush()

    def on_train_end(self, logs=None):
        if self._file is not None:
            self._file.close()


class LambdaCallback(Callback):
    def __init__(self, on_epoch_begin=None, on_epoch_end=None, on_train_begin=None, on_train_end=None,
                 on_train_batch_begin=None, on_train_batch_end=None):
        for name, fn in list(locals().items()):
            if name.startswith("on_") and fn is not None:
                setattr(self, name, fn)


class ModelCheckpoint(Callback):
    """Keras's ModelCheckpoint: after each epoch (or every `save_freq` batches) the whole model to a
    `.keras` archive, or with save_weights_only its weights to `.weights.h5` (or kcomp's `.npz`);
    `filepath` may name {epoch}, {batch} and any logged value. Files are written atomically, and the
    path is checked before training starts."""

    def __init__(self, filepath, monitor="val_loss", verbose=0, save_best_only=False, save_weights_only=False,
                 mode="auto", save_freq="epoch", initial_value_threshold=None):
        self.filepath, self.monitor, self.verbose = str(filepath), monitor, verbose
        self.save_best_only, self.save_weights_only, self.mode = save_best_only, save_weights_only, mode
        if save_freq != "epoch" and (isinstance(save_freq, bool) or not isinstance(save_freq, int) or save_freq <= 0):
            raise ArgumentError(f"Received: save_freq={save_freq!r}. Expected 'epoch' or a positive number of batches.")
        self.save_freq, self.best = save_freq, initial_value_threshold
        suffixes = (".weights.h5", ".npz") if save_weights_only else (".keras",)
        if not self.filepath.endswith(suffixes):
            what = "weights (save_weights_only=True)" if save_weights_only else "the whole model"
            raise ArgumentError(f"Received: filepath={self.filepath!r}. ModelCheckpoint saves {what} to a file ending in "
                                f"{' or '.join(suffixes)}, as Keras 3 asks.")

    def on_train_begin(self, logs=None):
        # A path that cannot be written fails now, not after the first epoch's training.
        from kcomp.support.files import check_writable

        folder = Path(self.filepath).parent
        while "{" in str(folder):  # a folder named by {epoch} is made when saving: check the one above it
            folder = folder.parent
        check_writable(folder / "checkpoint")
        self._epoch, self._batches = 0, 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.save_freq == "epoch":
            return
        self._batches += 1
        if self._batches >= self.save_freq:
            self._batches = 0
            self._save(self._epoch, batch, dict(logs or {}))

    def on_epoch_end(self, epoch, logs=None):
        if self.save_freq == "epoch":
            self._save(epoch, None, logs or {})

    def _save(self, epoch, batch, logs):
        fields = {"epoch": epoch + 1, **({} if batch is None or "batch" in logs else {"batch": batch + 1}), **logs}
        path = self.filepath.format(**fields)
        if self.save_best_only:
            current = logs.get(self.monitor)
            if current is None:  # Keras saves, and warns
                warnings.warn(f"ModelCheckpoint can save the best model only with {self.monitor} available; saving.", stacklevel=2)
            elif not _better(self, current, self.best):
                if self.verbose:
                    print(f"Epoch {epoch + 1}: {self.monitor} did not improve from {self.best:.5f}")
                return
            else:
                self.best = current
        if self.save_weights_only:
            self.model.save_weights(path)
        else:
            self.model.save(path)
        if self.verbose:
            print(f"Epoch {epoch + 1}: saved the {'weights' if self.save_weights_only else 'model'} to {path}")


__all__ = [
    "CSVLogger", "Callback", "EarlyStopping", "History", "LambdaCallback", "LearningRateScheduler",
    "ModelCheckpoint", "ReduceLROnPlateau", "TerminateOnNaN",
]
