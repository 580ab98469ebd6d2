"""Steps per second over one long run (bench/bench_training.py and bench/bench_recurrent.py, which
print a single figure per contender; `kcomp bench` takes medians of alternating rounds, timing.py)."""

import time

import torch

from kcomp.bench.timing import synchronizer


def steps_per_second(step, steps, warmup=3, sync=lambda: None) -> float:
    for _ in range(warmup):
        step()
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return steps / (time.perf_counter() - start)


def kcomp_fit_rate(model, x, y, steps, warmup=3) -> float:
    """Steps per second of model.fit over `steps` copies of the batch (x, y), after a warm-up fit.
    fit reads nothing back to the host until the epoch ends, like the torch loops; train_on_batch
    would, since it returns the loss as a Python number."""
    batch = len(x)
    xs, ys = (t.repeat(steps, *(1,) * (t.dim() - 1)) for t in (x, y))
    sync = synchronizer("cuda" if x.is_cuda else "cpu")
    model.fit(xs[: warmup * batch], ys[: warmup * batch], batch_size=batch, epochs=1, verbose=0, shuffle=False)
    sync()
    start = time.perf_counter()
    model.fit(xs, ys, batch_size=batch, epochs=1, verbose=0, shuffle=False)
    sync()
    return steps / (time.perf_counter() - start)


def torch_step(loss_of_batch, opt):
    """One step of the hand-written PyTorch loop: zero the gradients, loss, backward, optimizer step."""

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_of_batch()
        loss.backward()
        opt.step()
        return loss

    return step


def torch_loop_rate(loss_of_batch, opt, steps, compiled, on_cuda) -> float:
    """Steps per second of the hand-written PyTorch loop (torch_step); with `compiled`, the step
    under torch.compile."""
    step = torch_step(loss_of_batch, opt)
    fn = torch.compile(step) if compiled else step
    return steps_per_second(fn, steps, warmup=5 if compiled else 3, sync=synchronizer("cuda" if on_cuda else "cpu"))
