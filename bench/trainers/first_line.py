"""Prints one line with the wall-clock time it started at, then exits (bench/launch-overhead.ts).

The line is printed before anything else is imported, so it marks the moment the trainer's
interpreter began running its code.
"""
import time

print(f"BENCH_START {time.time_ns()}", flush=True)
