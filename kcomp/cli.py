"""The kcomp command line: build, summary, check, fit, evaluate, convert, data, bench.

Exit codes: 0 success, 1 the model failed to build (the message says why),
2 bad usage (unknown flag, missing file). Errors print as one message; pass
--debug for the traceback.
"""

import argparse
import contextlib
import sys
import time
import traceback
from pathlib import Path

import kcomp
from kcomp.datasets.fit_files import LOADERS
from kcomp.errors import KcompError


class UsageError(Exception):
    """Bad command-line usage (exit code 2)."""


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks on errors")
    p.add_argument("file", help="a .k model file, a Keras 3 .keras archive, or a Python file defining build_model() or `model`")
    p.add_argument("--model", metavar="NAME", help="which model, when the file defines several")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kcomp", description="Compile Keras-style models to fused Triton GPU kernels.")
    parser.add_argument("--version", action="version", version=f"kcomp {kcomp.__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")

    build = verbs.add_parser(
        "build", help="build a model: IR before/after each pass, a report",
        description="Parse a model, build its IR, run the passes, and write the IR after each pass and a report "
        "(report.txt, report.json) into the build folder.",
    )
    _add_model_args(build)
    build.add_argument("-o", "--output", metavar="DIR", help="build folder (default build/<model name>/)")
    build.add_argument("--batch", type=int, default=128, metavar="N",
                       help="batch size the report and the AOT kernels assume (default 128; Triton specializes "
                       "compiled kernels on sizes equal to 1 or divisible by 16); the trial run takes at most 8")
    build.add_argument("--dump-passes", action="store_true", help="also print the IR after every pass")
    build.add_argument("--target", default="sm_90", help="GPU to compile for: sm_80, sm_89 or sm_90 (default sm_90)")
    build.add_argument("--dtype", default="float32", help="float32 (default) or bfloat16 (with --train: the "
                       "mixed_bfloat16 policy, as Keras trains in 16 bits: float32 weights and optimizer slots)")
    build.add_argument("--policy", metavar="NAME", help="the Keras dtype policy the model's layers get: float32, "
                       "mixed_bfloat16 or mixed_float16 (with loss scaling in --train), bfloat16, float16")
    build.add_argument("--emit", default="ir,triton,ptx,cubin", help="what to write, comma-separated from ir,triton,ptx,cubin,sass (default ir,triton,ptx,cubin; "
                       "sass disassembles each cubin and adds the SASS's tensor-core and spill-store counts to the report, "
                       "which otherwise counts tensor cores in the PTX)")
    build.add_argument("--precision", default="tf32", help="float32 matmuls: tf32 (tensor cores, default) or ieee")
    build.add_argument("--explain", action="store_true", help="print which IR nodes went into which kernel")
    build.add_argument("--jobs", "-j", type=int, metavar="N",
                       help="worker processes compiling kernels (default: KCOMP_BUILD_JOBS, else one per core; "
                       "1 compiles them one after another)")
    build.add_argument("--no-trial", dest="trial", action="store_false",
                       help="skip the trial run (the fused forward run once on the CPU reference executor, "
                       "which checks that it runs and gives the traced output shapes)")
    build.add_argument("--train", action="store_true",
                       help="build the training step (forward, loss, backward, optimizer update) from the compile section")

    summary = verbs.add_parser("summary", help="print a Keras-style summary table", description="Print Keras's model.summary() table.")
    _add_model_args(summary)

    fit = verbs.add_parser(
        "fit", help="train a model on an .npz file with the .k file's compile section",
        description="Train with the optimizer, loss and metrics of the model's compile section; data is an .npz "
        "with arrays x and y (x0, x1, ... / y0, y1, ... for several inputs/outputs).",
    )
    _add_model_args(fit)
    fit.add_argument("--data", required=True, metavar="FILE.npz", help="training data")
    fit.add_argument("--epochs", type=int, default=1)
    fit.add_argument("--batch-size", type=int, default=32)
    fit.add_argument("--validation-split", type=float, default=0.0)
    fit.add_argument("--save-weights", metavar="PATH", help="write the trained weights here (.npz, or Keras's .weights.h5)")
    fit.add_argument("--save", metavar="PATH.keras",
                     help="write the trained model as a Keras 3 .keras archive (config, weights, optimizer state)")
    fit.add_argument("--weights", metavar="PATH", help="start from these weights (.npz or .weights.h5)")
    fit.add_argument("--nproc", type=int, default=1, metavar="N",
                     help="train data-parallel in N processes on this machine, started by torchrun (gloo on CPUs, "
                     "NCCL on GPUs); --batch-size is then the global batch, split across them")

    evaluate = verbs.add_parser("evaluate", help="loss and metrics of a model on an .npz file",
                                description="Evaluate with the compile section's loss and metrics.")
    _add_model_args(evaluate)
    evaluate.add_argument("--data", required=True, metavar="FILE.npz", help="evaluation data")
    evaluate.add_argument("--weights", metavar="PATH", help="weights to load first (.npz or .weights.h5, e.g. from kcomp fit)")
    evaluate.add_argument("--batch-size", type=int, default=32)

    convert = verbs.add_parser(
        "convert", help="write a model (e.g. a Keras .keras archive) as a .k file",
        description="Write the model as .k text (grammar/README.md): its layers with every non-default argument, "
        "and its compile section. Weights are not part of a .k file: --weights also writes them (.weights.h5 or .npz).",
    )
    _add_model_args(convert)
    convert.add_argument("-o", "--output", required=True, metavar="FILE.k", help="the .k file to write")
    convert.add_argument("--weights", metavar="PATH", help="also write the model's weights here")

    data = verbs.add_parser(
        "data", help="write a data set as train.npz and test.npz for fit and evaluate",
        description="Read one of Keras's data sets from a local file (nothing is downloaded; kcomp.datasets says "
        "where it looks) and write DIR/train.npz and DIR/test.npz with arrays x and y, as fit and evaluate read them.",
    )
    data.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks on errors")
    data.add_argument("name", choices=sorted(LOADERS), help="the data set")
    data.add_argument("-o", "--output", required=True, metavar="DIR", help="folder for train.npz and test.npz")
    data.add_argument("--path", help="the data set's file or folder (default: the kcomp and Keras data folders)")
    data.add_argument("--num-words", type=int, metavar="N", help="imdb: keep the N most frequent words (others become 2)")
    data.add_argument("--pad-to", type=int, metavar="STEPS",
                      help="imdb: pad or cut every review to STEPS word ids (zeros in front; default: the longest)")
    data.add_argument("--synthetic", action="store_true",
                      help="imdb: write kcomp's learnable synthetic set into DIR and use it (no Keras file needed)")
    data.add_argument("--scale", type=float, metavar="DIVISOR", help="divide the inputs by DIVISOR, as float32 (e.g. 255)")
    data.add_argument("--reshape", metavar="D1,D2,...",
                      help="reshape every input sample, e.g. 64 (8x8 digits for a Dense model) or 28,28,1 (mnist for Conv2D)")

    check = verbs.add_parser("check", help="parse and shape-check only", description="Parse and shape-check every model in the file; prints nothing else on success.")
    check.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks on errors")
    check.add_argument("file", help="a .k model file or a Python model file")
    _add_bench_parser(verbs)
    return parser


def _add_bench_parser(verbs) -> None:
    bench = verbs.add_parser(
        "bench", help="benchmark kcomp against PyTorch, torch.compile and Keras on this machine",
        description="Benchmark kcomp against a PyTorch eager loop, torch.compile and Keras 3 (torch, and JAX when "
                    "installed), each checked to give equal results before it is timed. Prints a table, writes "
                    "OUT/results.json and, with matplotlib installed, speed-up plots.")
    bench.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks on errors")
    # Values are checked by kcomp.bench (a KcompError naming the value), not by argparse choices.
    bench.add_argument("--suite", default="all", help="kernels, models, compile or all (default)")
    bench.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    bench.add_argument("--quick", action="store_true", help="small sizes and few steps (minutes on a CPU)")
    bench.add_argument("--out", default="bench-results", metavar="DIR", help="where results.json and the plots go")
    bench.add_argument("--models", metavar="A,B", help="models of the models suite (default: all)")
    bench.add_argument("--contenders", metavar="A,B", help="contenders of the models suite (default: all; 'torch eager' is the reference)")
    bench.add_argument("--repeats", type=int, help="timed rounds per contender (median taken)")
    bench.add_argument("--steps", type=int, help="steps per timed round")


def _load_all(args) -> dict:
    from kcomp.model_files import load_models

    path = Path(args.file)
    if not path.is_file():
        raise UsageError(f"no such file: {path}")
    return load_models(path)


def _load(args):
    from kcomp.model_files import pick_model

    return pick_model(_load_all(args), args.model, args.file)


def _file_in_path(folder: Path) -> Path | None:
    """The nearest existing part of `folder`'s path (itself included) when it is a file, not a folder."""
    for part in [folder, *folder.parents]:
        if part.exists():
            return None if part.is_dir() else part
    return None


@contextlib.contextmanager
def _global_policy(name):
    """Keras's global dtype policy set to `name` (None: left as it is) while models are made."""
    from kcomp import dtype_policies

    if name is None:
        yield
        return
    saved = dtype_policies.dtype_policy()
    dtype_policies.set_dtype_policy(name)
    try:
        yield
    finally:
        dtype_policies.set_dtype_policy(saved)


def cmd_build(args) -> int:
    from kcomp import compiler
    from kcomp.ir.printer import print_graph
    from kcomp.report import format_report, make_report, report_json
    from kcomp.support.files import write_text_atomic

    if not 0 < args.batch <= compiler.MAX_BATCH:
        raise UsageError(f"--batch {args.batch} is out of range; give a batch size from 1 to {compiler.MAX_BATCH}, e.g. --batch 128")
    emit = tuple(e.strip() for e in args.emit.split(",") if e.strip())
    if not emit:
        raise UsageError(f"--emit {args.emit!r} names nothing to write; give a comma-separated list from "
                         f"{','.join(compiler.EMITS)}, e.g. --emit ir,ptx")
    policy = args.policy
    if policy is None and args.train and args.dtype == "bfloat16":
        policy = "mixed_bfloat16"  # a 16-bit training step as Keras's: float32 master weights and slots
    options = compiler.BuildOptions(
        target=args.target, dtype=args.dtype, emit=emit, batch=args.batch, precision=args.precision, train=args.train,
        jobs=args.jobs, trial=args.trial, policy=policy,
    )
    try:
        options.check()
    except KcompError as e:
        raise UsageError(str(e)) from None
    if compiler.compiles_kernels(options) and options.job_count() > 1:
        from kcomp.runtime.aot.parallel import start_server

        start_server()  # its imports run beside the passes below
    started = time.perf_counter()
    with _global_policy(policy):  # the layers take it as they are made (and compile, for loss scaling)
        model = _load(args)
        if args.train:
            _compile_from_section(model, args.file)
    loaded = time.perf_counter() - started
    out = Path(args.output) if args.output else Path("build") / model.name
    if (file := _file_in_path(out)) is not None:
        raise UsageError(f"-o {out}: {file} is a file, not a folder; give -o a folder path")
    wants_ir = "ir" in options.emit or args.dump_passes
    built = compiler.build_graphs(model, options, out / "ir" if wants_ir else None)
    built.seconds = {"load": loaded, **built.seconds}  # the report's time line, in the order they ran
    needed = compiler.example_bytes(built, options.batch)
    if needed > compiler.MAX_EXAMPLE_BYTES:
        raise UsageError(f"--batch {options.batch} needs about {needed / 2**30:,.0f} GiB for the trial run and the AOT "
                         f"example tensors (at most {compiler.MAX_EXAMPLE_BYTES // 2**30} GiB); give a smaller --batch, e.g. --batch 128")
    if args.dump_passes:
        for path in sorted((out / "ir").glob("*.ir")):
            print(f"--- {path.name}")
            print(path.read_text(), end="")
    started = time.perf_counter()
    compiler.kernel_entries(built, options, out)
    built.seconds["kernel sources"] = time.perf_counter() - started
    aot = compiler.compile_ahead_of_time(built, options, out) if compiler.compiles_kernels(options) else None
    report = make_report(model, args.file, built, options, compiler.cost_summary(built, options.batch))
    if aot is not None:
        report["aot"] = aot
    written = ["report.txt", "report.json", "fused.dot"]
    if "ir" in options.emit:
        write_text_atomic(out / "model.ir", print_graph(built.fused))
        written += ["model.ir", "ir/"]
    if "triton" in options.emit:
        written.append("kernels/*.py")
    if aot is not None:
        written += [f"kernels/*.{e}" for e in ("ptx", "cubin", "sass") if e in options.emit]
    svg = compiler.write_dot(built.fused, out / "fused.dot")
    if svg is not None:
        written.append(svg.name)
    write_text_atomic(out / "report.json", report_json(report))
    text = format_report(report)
    write_text_atomic(out / "report.txt", text)
    if args.explain:
        print(compiler.explain(built.fused), end="")
    print(text, end="")
    print(f"wrote {out}/ ({', '.join(written)})")
    return 0


def cmd_summary(args) -> int:
    _load(args).summary()
    return 0


def cmd_check(args) -> int:
    models = _load_all(args)
    for model in models.values():
        model.to_graph()  # traces and verifies every layer's shapes
    print(f"{args.file}: ok ({', '.join(models)})")
    return 0


def _compile_from_section(model, path) -> None:
    """Compile with the .k compile section (a Python file's model may have compiled itself)."""
    settings = getattr(getattr(model, "compile_config", None), "settings", None)
    if settings:
        if "loss" not in settings:
            raise KcompError(f"the compile section of {model.name} names no loss; add e.g. `loss = mse`.")
        model.compile(optimizer=settings.get("optimizer", "rmsprop"), loss=settings["loss"],
                      metrics=settings.get("metrics"), loss_weights=settings.get("loss_weights"), backend="reference")
    elif getattr(model, "_training", None) is None:
        raise KcompError(f"{path} gives {model.name} no compile section; add `compile {{ optimizer = adam loss = ... }}`.")


def _compiled_model(args):
    """The model, compiled from its .k compile section (a Python file's model may compile itself)."""
    from kcomp.support.arrays import load_arrays

    model = _load(args)
    if not Path(args.data).is_file():
        raise UsageError(f"no such file: {args.data}")
    _compile_from_section(model, args.file)
    if getattr(args, "weights", None):
        model.load_weights(args.weights)
    x, y = load_arrays(args.data, len(model.inputs), len(model.outputs))
    return model, x, y


def cmd_fit(args) -> int:
    if args.epochs <= 0 or args.batch_size <= 0 or not 0 <= args.validation_split < 1:
        raise UsageError("--epochs and --batch-size must be positive and --validation-split in [0, 1)")
    if args.nproc < 1:
        raise UsageError(f"--nproc must be a positive number of processes, received {args.nproc}")
    from kcomp import distribution
    from kcomp.distribution import launch

    if args.nproc > 1 and not launch.started_by_torchrun():  # start the job; its processes come back here
        return launch.run_under_torchrun(args.nproc, launch.without_nproc(args.argv))
    if launch.started_by_torchrun():  # `--nproc N`, or torchrun [--nnodes M ...] -m kcomp fit ... typed by hand
        distribution.set_distribution(distribution.DataParallel())
    model, x, y = _compiled_model(args)
    if args.save is not None and not args.save.endswith(".keras"):
        raise UsageError(f"--save takes a .keras file name, received {args.save}")
    from kcomp.support.files import check_writable

    for target in (args.save_weights, args.save):  # a typo must not cost the whole run after training
        if target:
            check_writable(target)
    model.fit(x, y, epochs=args.epochs, batch_size=args.batch_size, validation_split=args.validation_split)
    if args.save_weights:
        model.save_weights(args.save_weights)  # (process 0 alone writes, in a data-parallel job)
        if distribution.writes_here():
            print(f"saved weights to {args.save_weights}")
    if args.save:
        model.save(args.save)
        if distribution.writes_here():
            print(f"saved the model to {args.save}")
    return 0


def cmd_convert(args) -> int:
    from kcomp.saving.k_text import model_to_k
    from kcomp.support.files import write_text_atomic

    if not args.output.endswith(".k"):
        raise UsageError(f"-o takes a .k file name, received {args.output}")
    if Path(args.output).is_dir():
        raise UsageError(f"-o {args.output} is a folder; give a .k file name inside it")
    if (file := _file_in_path(Path(args.output).parent)) is not None:
        raise UsageError(f"-o {args.output}: {file} is a file, not a folder; give -o a .k file in a folder")
    model = _load(args)
    text = model_to_k(model)
    write_text_atomic(args.output, f"# converted by kcomp from {Path(args.file).name}\n{text}")
    print(f"wrote {args.output} ({model.name}: {len(model.layers)} layers)")
    if args.weights:
        model.save_weights(args.weights)
        print(f"wrote its weights to {args.weights}")
    return 0


def cmd_evaluate(args) -> int:
    if args.batch_size <= 0:
        raise UsageError("--batch-size must be positive")
    model, x, y = _compiled_model(args)
    logs = model.evaluate(x, y, batch_size=args.batch_size, return_dict=True, verbose=0)
    print(" - ".join(f"{k}: {v:.4f}" for k, v in logs.items()))
    return 0


def cmd_data(args) -> int:
    from kcomp.datasets.fit_files import write_fit_files

    if (file := _file_in_path(Path(args.output))) is not None:
        raise UsageError(f"-o {args.output}: {file} is a file, not a folder; give -o a folder path")
    shape = None
    if args.reshape is not None:
        try:
            shape = tuple(int(d) for d in args.reshape.split(","))
        except ValueError:
            raise UsageError(f"--reshape {args.reshape}: give sizes separated by commas, e.g. --reshape 28,28,1") from None
    written = write_fit_files(args.name, args.output, path=args.path, num_words=args.num_words, pad_to=args.pad_to,
                              synthetic=args.synthetic or None, scale=args.scale, sample_shape=shape)
    print(f"wrote {', '.join(str(p) for p in written)} (arrays x and y)")
    return 0


def cmd_bench(args) -> int:
    import torch

    from kcomp.bench.suite import Options, run

    split = lambda value: None if value is None else [v.strip() for v in value.split(",") if v.strip()]  # noqa: E731
    given = {k: v for k, v in (("models", split(args.models)), ("contenders", split(args.contenders))) if v is not None}
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    opts = Options(suite=args.suite, device=device, quick=args.quick, out=args.out, repeats=args.repeats, steps=args.steps, **given)
    run(opts, args.argv)
    return 0


COMMANDS = {"build": cmd_build, "summary": cmd_summary, "check": cmd_check, "fit": cmd_fit, "evaluate": cmd_evaluate,
            "convert": cmd_convert, "data": cmd_data, "bench": cmd_bench}


def main(argv=None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else map(str, argv))  # what `fit --nproc` starts again; `bench` records it
    if args.verb is None:
        parser.print_help()
        return 0
    try:
        return COMMANDS[args.verb](args)
    except UsageError as e:
        parser.print_usage(sys.stderr)
        print(f"kcomp {args.verb}: error: {e}", file=sys.stderr)
        return 2
    except KcompError as e:
        if args.debug:
            traceback.print_exc()
        print(f"kcomp {args.verb}: error: {e}", file=sys.stderr)
        return 1
    except Exception:
        if args.debug:
            raise
        print(
            f"kcomp {args.verb}: internal error (a kcomp bug); rerun with --debug for the traceback:\n"
            + traceback.format_exc().strip().splitlines()[-1],
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
