"""Keras 3 on another backend (JAX), in a child process: Keras picks its backend once per process.
The parent passes the weights, the batch and the reference results; the child runs the same check
and timing as every other contender (contenders.measure) and writes its entry as JSON.

  KERAS_BACKEND=jax python -m kcomp.bench.keras_child IN.npz OUT.json
"""

import json
import os
import subprocess
import sys
import tempfile

import numpy as np


def run(backend, spec, weights, x, y, reference, **measure_kw) -> dict:
    """The entry of Keras on `backend` for spec's model (status not installed / failed / refused / timed)."""
    with tempfile.TemporaryDirectory() as folder:
        inputs, output = os.path.join(folder, "in.npz"), os.path.join(folder, "out.json")
        np.savez(inputs, x=x, y=y, losses=np.asarray(reference["losses"]), outputs=reference["outputs"],
                 **{f"w{i}": w for i, w in enumerate(weights)})
        with open(os.path.join(folder, "args.json"), "w") as f:
            json.dump({"model": spec.name, **measure_kw}, f)
        done = subprocess.run([sys.executable, "-m", "kcomp.bench.keras_child", inputs, output],
                              env={**os.environ, "KERAS_BACKEND": backend}, capture_output=True, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            return {"status": "failed", "reason": f"child process exited {done.returncode}: {last}"}
        with open(output) as f:
            return json.load(f)


def main(argv) -> int:
    from kcomp.bench import models
    from kcomp.bench.contenders import KerasModel, measure
    from kcomp.support.files import write_text_atomic

    inputs, output = argv
    with open(os.path.join(os.path.dirname(inputs), "args.json")) as f:
        kw = json.load(f)
    spec = models.MODELS[kw.pop("model")]
    data = np.load(inputs)
    weights = [data[f"w{i}"] for i in range(sum(k.startswith("w") for k in data.files))]
    reference = {"losses": list(data["losses"]), "outputs": data["outputs"]}
    factory = lambda: KerasModel(spec, weights, data["x"], data["y"], kw["device"])  # noqa: E731
    entries, _ = measure({"keras": factory}, reference=reference, **kw)
    write_text_atomic(output, json.dumps(entries["keras"]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
