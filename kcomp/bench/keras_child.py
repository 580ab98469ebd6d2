"""Keras 3 on another backend (JAX), in one child process for all models: Keras picks its backend
once per process, and importing Keras with JAX takes seconds. The parent passes each model's
weights, batch and reference results; the child runs the same check and timing as every other
contender (contenders.measure) and writes the entries as JSON.

  KERAS_BACKEND=jax python -m kcomp.bench.keras_child FOLDER
"""

import json
import os
import subprocess
import sys
import tempfile

import numpy as np


def run(backend, jobs: list, **measure_kw) -> list[dict]:
    """Keras on `backend`'s entry for each job (spec, weights, x, y, reference, batch): status not
    installed / failed / refused / timed."""
    with tempfile.TemporaryDirectory() as folder:
        for i, (spec, weights, x, y, reference, batch) in enumerate(jobs):
            np.savez(os.path.join(folder, f"{i}.npz"), x=x, y=y, losses=np.asarray(reference["losses"]),
                     outputs=reference["outputs"], **{f"w{j}": w for j, w in enumerate(weights)})
        with open(os.path.join(folder, "args.json"), "w") as f:
            json.dump({"models": [job[0].name for job in jobs], "batches": [job[5] for job in jobs], **measure_kw}, f)
        done = subprocess.run([sys.executable, "-m", "kcomp.bench.keras_child", folder],
                              env={**os.environ, "KERAS_BACKEND": backend}, capture_output=True, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            return [{"status": "failed", "reason": f"child process exited {done.returncode}: {last}"}] * len(jobs)
        with open(os.path.join(folder, "out.json")) as f:
            return json.load(f)


def main(folder) -> int:
    from kcomp.bench import models
    from kcomp.bench.contenders import KerasModel, measure
    from kcomp.support.files import write_text_atomic

    with open(os.path.join(folder, "args.json")) as f:
        kw = json.load(f)
    names, batches = kw.pop("models"), kw.pop("batches")
    entries = []
    for i, (name, batch) in enumerate(zip(names, batches)):
        spec, data = models.MODELS[name], np.load(os.path.join(folder, f"{i}.npz"))
        weights = [data[f"w{j}"] for j in range(sum(k.startswith("w") for k in data.files))]
        reference = {"losses": list(data["losses"]), "outputs": data["outputs"]}
        factory = lambda: KerasModel(spec, weights, data["x"], data["y"], kw["device"])  # noqa: E731
        entries.append(measure({"keras": factory}, reference=reference, batch=batch, **kw)[0]["keras"])
    write_text_atomic(os.path.join(folder, "out.json"), json.dumps(entries))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
