"""Contenders of the models suite. Each one trains a model from the same initial weights on the
same batch and predicts it; `measure` checks every contender's results against the reference
(the first one, the hand-written PyTorch loop) before timing any, and refuses to time one whose
results differ: a faster wrong answer is not a result."""

import time

import numpy as np
import torch

from kcomp.bench import models
from kcomp.bench.timing import alternating_medians

CHECKED_STEPS = 2  # the second step's loss shows the first update (gradients and optimizer), not just the forward


class TorchLoop:
    """The hand-written PyTorch loop (zero_grad, loss, backward, step); with `mode`, under torch.compile
    in that mode (its first call compiles: timed as the cold first step)."""

    def __init__(self, spec, weights, x, y, device, mode=None):
        self.name = "torch eager" if mode is None else "torch.compile" + ("" if mode == "default" else f" ({mode})")
        self.spec, self.cold_first_step_s = spec, None
        self.module = spec.torch_module(weights).to(device)
        self.x, self.y = torch.as_tensor(x, device=device), torch.as_tensor(y, device=device)
        opt = models.torch_optimizer(spec.optimizer, self.module.parameters())

        def step():
            opt.zero_grad(set_to_none=True)
            loss = models.torch_loss(spec.loss, self.module(self.x), self.y)
            loss.backward()
            opt.step()
            return loss.detach()

        def forward():
            with torch.no_grad():
                return models.torch_outputs(spec, self.module(self.x))

        self.step = step if mode is None else torch.compile(step, mode=mode)
        self.forward = forward if mode is None else torch.compile(forward, mode=mode)

    def train_losses(self, n):
        start = time.perf_counter()
        losses = [float(self.step())]
        if self.name != "torch eager":
            self.cold_first_step_s = time.perf_counter() - start
        return losses + [float(self.step()) for _ in range(n - 1)]

    def train_block(self, steps):
        return lambda: [self.step() for _ in range(steps)]

    def predict(self):
        return self.forward().cpu().numpy()

    def predict_block(self, reps):
        return lambda: [self.forward() for _ in range(reps)]


class KcompModel:
    """kcomp, as a Keras user drives it: train_on_batch for the checked losses, fit over repeated
    batches for timing (fit reads nothing back to the host until the epoch ends), predict_on_batch."""

    name = "kcomp"
    cold_first_step_s = None

    def __init__(self, spec, weights, x, y, device):
        import kcomp.layers
        import kcomp.models

        self.model = kcomp.models.Sequential(spec.layers(kcomp.layers, x.shape[1:]))
        self.model.compile(optimizer=spec.optimizer, loss=spec.loss, backend="triton" if device == "cuda" else "reference")
        self.model.set_weights(weights)
        self.x, self.y = torch.as_tensor(x, device=device), torch.as_tensor(y, device=device)

    def train_losses(self, n):
        return [float(self.model.train_on_batch(self.x, self.y)) for _ in range(n)]

    def train_block(self, steps):
        repeat = (steps,) + (1,) * (self.x.dim() - 1)
        xs, ys = self.x.repeat(*repeat), self.y.repeat(*((steps,) + (1,) * (self.y.dim() - 1)))
        return lambda: self.model.fit(xs, ys, batch_size=len(self.x), epochs=1, verbose=0, shuffle=False)

    def predict(self):
        return np.asarray(self.model.predict_on_batch(self.x))

    def predict_block(self, reps):
        return lambda: [self.model.predict_on_batch(self.x) for _ in range(reps)]


class KerasModel:
    """Keras 3 on whichever backend this process's Keras runs (Keras picks it once per process:
    the JAX contender runs in a child process, keras_child.py)."""

    cold_first_step_s = None

    def __init__(self, spec, weights, x, y, device):
        import keras

        self.name = f"keras ({keras.backend.backend()})"
        self.model = keras.Sequential(spec.layers(keras.layers, x.shape[1:]))
        self.model.compile(optimizer=spec.optimizer, loss=spec.loss)
        self.model.set_weights(weights)
        self.x, self.y = x, y

    def train_losses(self, n):
        return [float(self.model.train_on_batch(self.x, self.y)) for _ in range(n)]

    def train_block(self, steps):
        return lambda: [self.model.train_on_batch(self.x, self.y) for _ in range(steps)]

    def predict(self):
        return np.asarray(self.model.predict_on_batch(self.x))

    def predict_block(self, reps):
        return lambda: [self.model.predict_on_batch(self.x) for _ in range(reps)]


def difference(what, got, want, rtol, atol) -> str | None:
    """None when got matches want within tolerance, else a line naming the largest difference."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        return f"{what} shape {got.shape}, the reference's {want.shape}"
    if np.allclose(got, want, rtol=rtol, atol=atol, equal_nan=True):
        return None
    worst = int(np.argmax(np.abs(got - want)))
    return f"{what} {got.flat[worst]:.6g} where the reference has {want.flat[worst]:.6g} (rtol {rtol}, atol {atol})"


# The loss after one update is compared more loosely: torch.optim places Adam's and RMSprop's epsilon
# differently from Keras (RMSprop: Keras divides by sqrt(v + eps), torch by sqrt(v) + eps), which moves
# the loss after one step by up to 8e-3 relative on the seed's sentiment LSTM (measured), where kcomp
# and Keras (torch and JAX) agree to 1e-6. Forward outputs and the first loss are compared tightly.
UPDATE_RTOL = 2e-2


def check(contender, reference, rtol, atol) -> tuple[dict, str | None]:
    """The contender's checked results (predict outputs from the initial weights, then the losses of
    CHECKED_STEPS training steps), and why they differ from `reference` (None: equal)."""
    results = {"outputs": contender.predict(), "losses": contender.train_losses(CHECKED_STEPS)}
    if reference is None:
        return results, None
    return results, (difference("predict output", results["outputs"], reference["outputs"], rtol, atol)
                     or difference("first loss", results["losses"][:1], reference["losses"][:1], rtol, atol)
                     or difference("loss after one update", results["losses"][1:], reference["losses"][1:], UPDATE_RTOL, atol))


def measure(factories: dict, *, reference=None, batch, steps, repeats, device, rtol, atol):
    """({name: entry}, reference results). factories: {name: () -> contender}; with no `reference`
    given, the first contender's results are the reference. Every contender is built and checked
    first; only those equal to the reference are timed, alternating, training and then predict."""
    entries, timed = {}, {}
    for name, factory in factories.items():
        try:
            contender = factory()
            results, reason = check(contender, reference, rtol, atol)
        except ImportError as e:
            entries[name] = {"status": "not installed", "reason": str(e)}
            continue
        except Exception as e:  # noqa: BLE001 - one contender failing does not stop the others; reported
            entries[name] = {"status": "failed", "reason": f"{type(e).__name__}: {e}"}
            continue
        reference = reference or results
        entries[name] = {"losses": results["losses"]}
        if contender.cold_first_step_s is not None:
            entries[name]["cold_first_step_s"] = contender.cold_first_step_s
        if reason:
            entries[name].update(status="refused", reason=f"results differ, not timed: {reason}")
        else:
            entries[name]["status"] = "timed"
            timed[name] = contender
    train = alternating_medians({n: c.train_block(steps) for n, c in timed.items()}, repeats, device)
    predict = alternating_medians({n: c.predict_block(steps) for n, c in timed.items()}, repeats, device)
    for name in timed:
        entries[name]["train_steps_per_s"] = steps / train[name]
        entries[name]["predict_samples_per_s"] = steps * batch / predict[name]
    return entries, reference
