"""Cost of logging in the training thread, and points/s sustained from one process to the server.

    python clients/python/benches/bench_logging.py [--calls N] [--url URL --token TOKEN]

Without --url it starts the server binary ($RUNSTREAM_BIN, else target/release/runstream, else
target/debug/runstream) on a free port in a temporary folder. It prints:

1. microseconds per ``run.log()`` of a dict of 10 metrics (offline: the call alone; online: with
   the sender thread running), beside the cost of appending the same dicts to a Python list,
   measured in the same run, and the ratio of the two (machine-independent);
2. points/s sustained from one process: calls as fast as possible, until the server has
   acknowledged every point.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import runstream

METRICS = 10
TOKEN = "bench-token-0123456789abcdef"


def make_dicts(n: int) -> list[dict[str, float]]:
    rng = random.Random(1)
    names = [f"train/metric_{j}" for j in range(METRICS)]
    return [{name: rng.random() for name in names} for _ in range(n)]


def per_call_us(fn, dicts: list[dict[str, float]]) -> float:
    gc.collect()
    gc.disable()
    try:
        t = time.perf_counter()
        for d in dicts:
            fn(d)
        return (time.perf_counter() - t) / len(dicts) * 1e6
    finally:
        gc.enable()


def start_server(data: Path) -> tuple[subprocess.Popen, str]:
    repo = Path(__file__).resolve().parents[3]
    candidates = [os.environ.get("RUNSTREAM_BIN"), repo / "target/release/runstream", repo / "target/debug/runstream"]
    binary = next((Path(c) for c in candidates if c and Path(c).is_file()), None)
    if binary is None:
        sys.exit("no runstream binary: build it with `cargo build --release` or set RUNSTREAM_BIN")
    env = dict(os.environ, RUNSTREAM_ADMIN_TOKEN=TOKEN, RUNSTREAM_LOG="warn")
    proc = subprocess.Popen([str(binary), "serve", "--listen", "127.0.0.1:0", "--data", str(data)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("runstream listening on "):
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # type: ignore[union-attr]
            print(f"server: {binary}")
            return proc, line.split("listening on ", 1)[1].strip()
    sys.exit("the server did not start")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=50_000, help="log() calls per measurement")
    ap.add_argument("--sustained-calls", type=int, default=100_000, help="calls of the sustained run")
    ap.add_argument("--url")
    ap.add_argument("--token", default=os.environ.get("RUNSTREAM_TOKEN", TOKEN))
    args = ap.parse_args()
    os.environ["RUNSTREAM_QUIET"] = "1"
    tmp = Path(tempfile.mkdtemp(prefix="runstream-bench-"))
    proc = None
    try:
        url = args.url
        if url is None:
            proc, url = start_server(tmp / "data")
        dicts = make_dicts(args.calls)
        opts = dict(capture_environment=False, system_metrics=False, handle_exit=False)

        # 1. The call alone (offline), and the call with the sender thread running (online).
        baseline: list[dict[str, float]] = []
        append_us = per_call_us(baseline.append, dicts)
        run = runstream.init(project="default", mode="offline", spool_dir=tmp / "offline", **opts)
        run.log(dicts[0])  # first call of a set of names checks and encodes them once
        offline_us = per_call_us(run.log, dicts)
        run.finish()
        baseline.clear()
        append_us2 = per_call_us(baseline.append, dicts)
        append_us = min(append_us, append_us2)
        run = runstream.init(project="default", url=url, token=args.token, spool_dir=tmp / "online",
                             flush_timeout=600, **opts)
        run.log(dicts[0])
        online_us = per_call_us(run.log, dicts)
        run.finish()

        # The floor of any JSON spool: turning the 10 floats into their shortest exact text.
        floor_us = per_call_us(lambda d: [repr(v) for v in d.values()], dicts)

        t = time.perf_counter()
        total = 0
        for i in range(1_000_000):
            total += i
        loop_s = time.perf_counter() - t

        print(f"dict of {METRICS} metrics, {args.calls} calls, python {sys.version.split()[0]}; "
              f"this machine runs a 1M-iteration Python loop in {loop_s:.2f} s")
        print(f"  list.append(dict)            {append_us:8.2f} us/call")
        print(f"  repr() of the 10 values      {floor_us:8.2f} us/call   {floor_us / append_us:6.1f}x append"
              "   (the floor of any text encoding)")
        print(f"  run.log(dict), offline       {offline_us:8.2f} us/call   {offline_us / append_us:6.1f}x append")
        print(f"  run.log(dict), online        {online_us:8.2f} us/call   {online_us / append_us:6.1f}x append")

        # 2. Sustained: as fast as possible, timed until the server acknowledged every point.
        n = args.sustained_calls
        big = make_dicts(min(n, 20_000))
        run = runstream.init(project="default", url=url, token=args.token, spool_dir=tmp / "sustained",
                             flush_timeout=600, **opts)
        run.log(big[0], step=0)
        t = time.perf_counter()
        for i in range(1, n + 1):
            run.log(big[i % len(big)], step=i)
        logged = time.perf_counter() - t
        assert run.flush(timeout=600), "the server did not acknowledge everything"
        total = time.perf_counter() - t
        stats = getattr(run._sender, "sender", None)
        stats = stats.stats if stats is not None else None
        run.finish()
        points = n * METRICS
        print(f"sustained, one process: {points} points in {total:.2f} s = {points / total:,.0f} points/s "
              f"acknowledged by the server (logging loop alone: {points / logged:,.0f} points/s)")
        if stats is not None:
            print(f"  {stats.batches} batches, {stats.events} events after merging, "
                  f"{stats.bytes_sent / 1e6:.1f} MB posted")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
