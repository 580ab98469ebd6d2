"""One training step on the CPU: kcomp's reference executor against the hand-written PyTorch eager
loop, timed step by step in turn (kcomp, eager, kcomp, eager, ...), best of N each.

  python bench/bench_cpu_step.py [--models mlp,cnn,digits,lstm] [--threads 1,2] [--repeats N] [--profile]

The models are bench_training.py's (same layers, data, optimizers and losses). A kcomp step is
what fit runs per batch (kcomp.training.loop.run_batch: the step graph on the reference executor,
the state written back, the running sums added to), on a batch already on the device; an eager
step is zero_grad, loss, backward, optimizer step. On a machine others load, taking turns step by
step lets a slow spell hit both alike, and the best of N is the least disturbed step of each:
the load average is printed next to each row. With --profile, the reference schedule's steps of
one kcomp training step, each timed in a real run (CPU time, the best of N runs per step), slowest first.
"""

import argparse
import os
import resource
import time

import torch
from bench_training import BATCH, LOSS, MODELS, OPTIMIZER, data, kcomp_model, torch_loss_and_optimizer

from kcomp.bench.rates import torch_step


def kcomp_step(kind, x, y):
    """A function running one kcomp training step on (x, y), as fit runs it, and the model."""
    from kcomp.training import loop

    model = kcomp_model(kind)
    model.compile(optimizer=OPTIMIZER.get(kind, "adam"), loss=LOSS.get(kind, "sparse_categorical_crossentropy"),
                  backend="reference")
    model.fit(x, y, batch_size=len(x), epochs=1, verbose=0, shuffle=False)  # builds the step graph and its schedule
    compiled = model._training
    xs, ys = loop.model_inputs(model, x), loop.targets(model, y)
    sw = loop.sample_weights(len(x), None, None, ys)
    acc = loop._accumulator(model, compiled, "train", ys)
    return (lambda: loop.run_batch(model, compiled, "train", xs, ys, sw, acc)), model


def best_interleaved(steps: dict, repeats: int) -> dict:
    """Each step function called in turn `repeats` times after one warm-up round: per name, the best
    wall seconds, the best CPU seconds of this process (every thread's; time.process_time) and the
    mean minor page faults per step (fresh pages the allocator took from the system)."""
    best = {name: {"wall": float("inf"), "cpu": float("inf"), "faults": 0.0} for name in steps}
    for round_ in range(repeats + 1):
        for name, step in steps.items():
            faults, cpu, wall = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.process_time(), time.perf_counter()
            step()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            if round_:
                b = best[name]
                b["wall"], b["cpu"] = min(b["wall"], wall), min(b["cpu"], cpu)
                b["faults"] += (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / repeats
    return best


def profile(kind, x, y, repeats):
    """The reference schedule's steps of one training step, each timed in a real run (CPU time of the
    process), best of `repeats`."""
    from kcomp.ir import saved_forwards
    from kcomp.training.runners import ReferenceStep

    calls = []
    run = ReferenceStep.run
    ReferenceStep.run = lambda self, data, lr, rows, state: calls.append((self, data, lr, state)) or run(self, data, lr, rows, state)
    try:
        step, _ = kcomp_step(kind, x, y)
        step()
    finally:
        ReferenceStep.run = run
    runner, batch, lr, state = calls[-1]
    schedule, graph = runner._run, runner._run.graph
    inputs, params = [*batch, torch.tensor(lr, dtype=torch.float32)], state.read(runner.reads)
    best = [float("inf")] * len(schedule.steps)
    for _ in range(repeats):
        env = {v.id: t for v, t in zip(graph.inputs, inputs, strict=True)}
        env.update({p.id: params[p.name] for p in graph.params})
        with saved_forwards.for_run(saved_forwards.forwards_with_backward(graph.nodes)):
            for k, (fn, ins, attrs, outs) in enumerate(schedule.steps):
                start = time.process_time()
                result = fn(*(env[v.id] for v in ins), **attrs)
                best[k] = min(best[k], time.process_time() - start)
                for v, t in zip(outs, (result,) if isinstance(result, torch.Tensor) else result, strict=True):
                    env[v.id] = t
                for dead in schedule.release[k]:
                    del env[dead]
    print(f"{kind}: {len(best)} scheduled steps, their best CPU times sum to {sum(best) * 1e3:.2f} ms")
    for k in sorted(range(len(best)), key=lambda k: -best[k])[:15]:
        fn, ins, _, _ = schedule.steps[k]
        shapes = ", ".join("x".join(map(str, v.shape)) for v in ins[:3])
        print(f"  {best[k] * 1e3:8.3f} ms  {getattr(fn, '__name__', fn)!s:28} {shapes}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts (torch.set_num_threads)")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--profile", action="store_true", help="time each scheduled step of kcomp's training step")
    args = parser.parse_args(argv)
    kinds = args.models.split(",")
    if set(kinds) - set(MODELS):
        parser.error(f"Received: --models={args.models}; expected some of {','.join(MODELS)}")
    print(f"torch {torch.__version__}; {os.cpu_count()} CPUs; best of {args.repeats} steps, kcomp and eager in turn")
    print(f"{'model':7} {'threads':>7} {'kcomp ms':>9} {'eager ms':>9} {'eager/kcomp':>11}   {'kcomp cpu':>9} "
          f"{'eager cpu':>9} {'ratio':>6}   {'kcomp flt':>9} {'eager flt':>9} {'load':>5}")
    for threads in map(int, args.threads.split(",")):
        torch.set_num_threads(threads)
        for kind in kinds:
            x, y = data(kind, "cpu")
            if args.profile:
                profile(kind, x, y, args.repeats)
                continue
            step, _ = kcomp_step(kind, x, y)
            best = best_interleaved({"kcomp": step, "eager": torch_step(*torch_loss_and_optimizer(kind, x, y))},
                                    args.repeats)
            k, e = best["kcomp"], best["eager"]
            print(f"{kind:7} {threads:7d} {k['wall'] * 1e3:9.2f} {e['wall'] * 1e3:9.2f} {e['wall'] / k['wall']:11.2f}   "
                  f"{k['cpu'] * 1e3:9.1f} {e['cpu'] * 1e3:9.1f} {e['cpu'] / max(k['cpu'], 1e-9):6.2f}   "
                  f"{k['faults']:9.0f} {e['faults']:9.0f} {os.getloadavg()[0]:5.1f}   (batch {BATCH[kind]})")


if __name__ == "__main__":
    main()
