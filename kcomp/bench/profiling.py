"""Where a benchmark's step spends its time: torch.profiler's table of ops and kernels, for the
bench scripts' --profile (bench/bench_training.py, bench/bench_recurrent.py)."""


def print_profile(label: str, run, device: str, rows: int = 16) -> None:
    """The ops and kernels `run()` spent its time in, most first. On a GPU the kernels' own time
    (those a CUDA graph replays included): where one contender's step is slower than another's."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as prof:
        run()
    sort = "self_device_time_total" if device == "cuda" else "self_cpu_time_total"
    print(f"--- {label}: by {sort}")
    print(prof.key_averages().table(sort_by=sort, row_limit=rows, max_name_column_width=70))
