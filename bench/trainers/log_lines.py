"""Prints numbered lines, each carrying the wall-clock time it was printed at (bench/log-latency.ts).

    python3 log_lines.py --lines 300 --interval-ms 20 --delay-s 1

Each line is `BENCH_LOG <n> <time.time_ns()>`, flushed at once, so a reader on the same clock can
tell how long the line took to reach it. The first line comes after `--delay-s`, so a follower that
starts with the process is already reading when it arrives.
"""
import argparse
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=300)
    parser.add_argument("--interval-ms", type=float, default=20.0)
    parser.add_argument("--delay-s", type=float, default=1.0)
    args, _ = parser.parse_known_args()
    time.sleep(args.delay_s)
    start = time.monotonic()
    for n in range(args.lines):
        # A fixed schedule: a slow print does not push every later line back.
        wait = start + n * args.interval_ms / 1000.0 - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        print(f"BENCH_LOG {n} {time.time_ns()}", flush=True)


if __name__ == "__main__":
    main()
