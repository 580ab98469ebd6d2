"""The report: a table on stdout, every figure in results.json, speed-up plots as PNG when
matplotlib (the optional extra `plots`) is installed. Files are written atomically."""

import io
import json
from pathlib import Path

from kcomp.support.files import write_bytes_atomic, write_text_atomic

NO_PLOTS = "plots: not drawn, matplotlib is not installed (pip install 'kcomp[plots]')"


def print_table(results) -> None:
    suites = results["suites"]
    m = results["machine"]
    print(f"kcomp bench on {results['device']} ({m['gpu'] or m['platform']}, {m['cpu_threads']} threads), "
          f"torch {m['versions']['torch']}{', quick' if results['quick'] else ''}")
    if "models" in suites:
        print("\nmodels: training steps/s and predict samples/s; x = kcomp's speed-up over the contender (above 1: kcomp faster)")
        print(f"{'model':34} {'contender':32} {'train/s':>9} {'x':>6} {'predict/s':>11} {'x':>6}")
        for row in suites["models"]["rows"]:
            title = f"{row['title']} b{row['batch']}"
            for name, e in row["contenders"].items():
                print(f"{title:34} {name:32} {_entry(e, row['kcomp_speedup'].get(name, {}))}")
                title = ""
    if "kernels" in suites:
        c = suites["kernels"]["ceilings"]
        print(f"\nkernels: ceilings measured here: copy {c['copy_GBps']:.1f} GB/s, matmul {c['matmul_TFLOPs']:.3g} TFLOP/s "
              f"(float32), {c['matmul_bfloat16_TFLOPs']:.3g} TFLOP/s (bfloat16; %mm of a row is of its dtype's)")
        print(f"{'case':24} {'dtype':9} {'shape':24} {'kcomp ms':>9} {'TFLOP/s':>8} {'%mm':>5} {'%copy':>5}  speed-up")
        for row in suites["kernels"]["rows"]:
            head = f"{row['case']:24} {row['dtype']:9} {str(row['shape']):24}"
            if row["status"] != "timed":
                print(f"{head} {row['status']}{': ' + row['reason'] if 'reason' in row else ''}")
                continue
            ups = " ".join(f"{k} {v:.2f}x" for k, v in row["kcomp_speedup"].items())
            print(f"{head} {row['ms']['kcomp']:9.4f} {row['kcomp_TFLOPs']:8.3g} {100 * row['fraction_of_matmul_ceiling']:5.0f} "
                  f"{100 * row['fraction_of_copy_ceiling']:5.0f}  {ups}")
    if "compile" in suites:
        s = suites["compile"]
        print(f"\ncompile: {s['status']}" + (f" ({s['reason']})" if "reason" in s else ""))
        if s.get("output"):
            print(s["output"].rstrip())
    for line in results["needs_gpu"]:
        print(f"needs a GPU: {line}")


def _entry(e, speedup) -> str:
    if e.get("status") != "timed":
        return f"{e.get('status')}" + (f": {e['reason']}" if e.get("reason") else "")
    x = lambda k: f"{speedup[k]:5.2f}x" if k in speedup else ""  # noqa: E731
    cold = f"  cold first step {e['cold_first_step_s']:.1f} s" if "cold_first_step_s" in e else ""
    return f"{e['train_steps_per_s']:9.1f} {x('train_steps_per_s'):>6} {e['predict_samples_per_s']:11.1f} {x('predict_samples_per_s'):>6}{cold}"


def write(results, out: Path) -> list[Path]:
    """results.json always; the plots when matplotlib is importable. The paths written."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "results.json"]
    write_text_atomic(written[0], json.dumps(results, indent=2, default=_plain) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        print(NO_PLOTS)
    else:
        for name, figure in _figures(results, plt):
            buffer = io.BytesIO()
            figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
            plt.close(figure)
            write_bytes_atomic(out / name, buffer.getvalue())
            written.append(out / name)
    print("wrote " + ", ".join(str(p) for p in written))
    return written


def _plain(value):
    """numpy scalars and arrays as JSON numbers and lists."""
    return value.tolist() if hasattr(value, "tolist") else str(value)


def _figures(results, plt):
    """(file name, figure) for each plot the results hold numbers for: kcomp's speed-up bars."""
    suites = results["suites"]
    rows = suites.get("models", {}).get("rows", [])
    if any(row["kcomp_speedup"] for row in rows):
        figure, axes = plt.subplots(1, 2, figsize=(12, 4))
        for ax, key, what in zip(axes, ("train_steps_per_s", "predict_samples_per_s"), ("training step", "predict")):
            _bars(ax, [r["title"] for r in rows], [{n: v[key] for n, v in r["kcomp_speedup"].items()} for r in rows],
                  f"kcomp's {what} speed-up ({results['device']})")
        yield "models_speedup.png", figure
    rows = [r for r in suites.get("kernels", {}).get("rows", []) if r["status"] == "timed"]
    if rows:
        figure, axes = plt.subplots(1, 2, figsize=(12, 4))
        labels = [f"{r['case']} {r['dtype']} {r['shape']}" for r in rows]
        _bars(axes[0], labels, [r["kcomp_speedup"] for r in rows], "kcomp kernel speed-up")
        _bars(axes[1], labels, [{"TFLOP/s of matmul ceiling": r["fraction_of_matmul_ceiling"],
                                 "GB/s of copy ceiling": r["fraction_of_copy_ceiling"]} for r in rows],
              "kcomp kernel: fraction of the ceilings", line=None)
        yield "kernels.png", figure


def _bars(ax, labels, values, title, line=1.0):
    """Grouped bars: one group per label, one bar per key of values[i]; a line at `line` (parity)."""
    keys = sorted({k for v in values for k in v})
    width = 0.8 / max(1, len(keys))
    for j, key in enumerate(keys):
        ax.bar([i + j * width for i in range(len(labels))], [v.get(key, 0) for v in values], width, label=key)
    if line is not None:  # speed-ups: a log scale, so 2x faster and 2x slower are the same height
        ax.axhline(line, color="black", linewidth=0.8)
        ax.set_yscale("log")
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(labels))], labels, rotation=30, ha="right", fontsize=7)
    ax.set_title(title)
    ax.legend(fontsize=7)
