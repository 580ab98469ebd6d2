"""A Keras-style progress bar: `12/40 ━━━━━━━━━━━━━━━━━━━━ 1s 25ms/step - loss: 0.31`."""

import sys
import time

import numpy as np


class Progbar:
    def __init__(self, target: int | None, width: int = 20, verbose: int = 1, stream=None, interval: float = 0.05,
                 label: str = ""):
        """target: the steps in all, None when unknown (a generator's first epoch): the line then
        counts steps as Keras's does, `7/Unknown`, with no bar and no ETA.
        interval: the least time between two redraws of the line (Keras's default, 0.05 s);
        a redraw reads the loss back from the device, so a fast step must not redraw each time.
        label: words before the count ("compiling kernels 7/13"); none in Keras's training lines."""
        self.label = label
        self.target, self.width, self.verbose, self.interval = target, width, verbose, interval
        self.stream = stream or sys.stdout
        self.start = time.perf_counter()
        self._last_draw = float("-inf")
        self._interactive = hasattr(self.stream, "isatty") and self.stream.isatty()

    def update(self, current: int, values=None, finalize: bool | None = None) -> None:
        """`values`: a dict, or a function returning one (called only when a line is printed,
        so a training loop reads its device-side numbers only then)."""
        if not self.verbose:
            return
        if finalize is None:
            finalize = self.target is not None and current >= self.target
        if finalize and self.target is None:
            self.target = current  # the count is known at the end: Keras's last line shows `5/5` and the bar
        if not finalize and not self._interactive:
            return  # a log file gets one line per bar, not a line per step
        now = time.perf_counter()
        if not finalize and now - self._last_draw < self.interval:
            return
        self._last_draw = now
        elapsed = now - self.start
        per_step = elapsed / max(current, 1)
        if self.target is None:
            timing = f"{elapsed:.0f}s {per_step * 1000:.0f}ms/step"
            line = f"{current:7d}/Unknown {timing}"
        else:
            filled = int(self.width * current / max(self.target, 1))
            bar = "━" * filled + ("━" if filled < self.width else "") + " " * max(self.width - filled - 1, 0)
            timing = f"{elapsed:.0f}s {per_step * 1000:.0f}ms/step" if finalize else f"ETA: {per_step * (self.target - current):.0f}s"
            line = f"{current}/{self.target} {bar[: self.width]} {timing}"
        if self.label:
            line = f"{self.label} {line}"
        if callable(values):
            values = values()
        for key, value in (values or {}).items():
            if isinstance(value, (list, tuple, np.ndarray)):  # a metric per threshold or class: Keras shows the mean
                value = float(np.mean(value))
            line += f" - {key}: {value:.4f}"
        end = "\n" if finalize else ""
        self.stream.write(("\r" if self._interactive else "") + line + end)
        self.stream.flush()
