"""Crash and outage: nothing a logging call accepted is lost, nothing arrives twice.

1. A training process logging 100,000 points is SIGKILLed at random moments; after
   ``runstream-sync`` the server holds every point whose call returned, exactly once.
2. The server is down for the first half of a run and comes up later; everything arrives,
   exactly once, and the training loop never waits for it.
"""

from __future__ import annotations

import logging
import math
import os
import random
import signal
import struct
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest

import runstream

from conftest import PROJECT, Server, free_port, point_counts, sync_command

STEPS = 10_000
METRICS = 10  # 10 metrics x 10,000 steps = 100,000 points


def value(metric: int, step: int) -> float:
    """The value every test process logs: deterministic, awkward bit patterns included."""
    if step % 1000 == 7:
        return (math.nan, math.inf, -math.inf)[metric % 3]
    return struct.unpack("<d", struct.pack("<Q", (step * 0x9E3779B97F4A7C15 + metric * 0xBF58476D1CE4E5B9) % (1 << 64)
                                           & 0x7FEFFFFFFFFFFFFF))[0]


def api_float(v: object) -> float:
    if isinstance(v, str):
        return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}[v]
    return float(v)  # type: ignore[arg-type]


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or struct.pack("<d", a) == struct.pack("<d", b)


CHILD = textwrap.dedent(
    """
    import os, sys, time
    sys.path.insert(0, {tests!r})
    from test_crash import value, STEPS, METRICS
    import runstream

    url, token, spool, side, run_id = sys.argv[1:6]
    run = runstream.init(project={project!r}, run_id=run_id, name="crash", url=url, token=token,
                         spool_dir=spool, capture_environment=False, system_metrics=False)
    fd = os.open(side, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    print("ready", flush=True)
    names = [f"m{{j}}" for j in range(METRICS)]
    for step in range(STEPS):
        run.log({{names[j]: value(j, step) for j in range(METRICS)}}, step=step)
        os.write(fd, b"%d\\n" % step)  # the call returned: this step must reach the server
        if step % 16 == 0:
            time.sleep(0.004)  # a training step's worth of work, so kills land mid-run
    run.finish()
    print("done", flush=True)
    """
)


def check_exactly_once(server: Server, run_id: str, returned: set[int]) -> None:
    """Every returned step is there with its exact values; nothing is there twice."""
    last = max(returned, default=-1)
    for j in range(METRICS):
        # Reads trail writes a little; a point that never arrives fails here after the wait.
        server.wait_for_points(run_id, f"m{j}", len(returned))
        steps, _, values = server.points(run_id, f"m{j}")
        got = set(steps)
        missing = returned - got
        assert not missing, f"m{j}: {len(missing)} returned steps missing, e.g. {sorted(missing)[:5]}"
        # Only the call in flight at the kill (returned, but not yet noted) may add one step.
        extra = got - returned
        assert extra <= {last + 1}, f"m{j}: steps never logged: {sorted(extra)[:5]}"
        for s, v in zip(steps, values):
            assert same(api_float(v), value(j, s)), (j, s, v)
    counts = point_counts(server.events(run_id))
    dupes = {k: n for k, n in counts.items() if n != 1}
    assert not dupes, f"points delivered more than once: {list(dupes.items())[:5]}"
    assert len(counts) >= METRICS * len(returned)


@pytest.mark.parametrize("trial", range(5))
def test_sigkill_at_random_moments_loses_nothing(server: Server, tmp_path: Path, trial: int) -> None:
    rng = random.Random(1000 + trial)
    spool = tmp_path / "spool"
    side = tmp_path / "returned.txt"
    run_id = f"crash-{trial}-{os.getpid()}"
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(tests=str(Path(__file__).parent), project=PROJECT))
    child = subprocess.Popen(
        [sys.executable, str(script), server.url, server.token, str(spool), str(side), run_id],
        stdout=subprocess.PIPE, text=True,
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    time.sleep(rng.uniform(0.02, 2.0))
    locks = [p.read_text().split() for p in spool.glob("*/*/lock")]  # the sender's pid, once it runs
    sender_pid = int(locks[0][0]) if locks and locks[0] else None
    child.send_signal(signal.SIGKILL)
    child.wait()
    if trial % 2 == 0 and sender_pid:
        # Odd trials leave the run's sender process to finish delivery on its own; even trials
        # kill it too, mid-batch or not, so sync must resume from its recorded progress.
        try:
            os.kill(sender_pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    returned = {int(x) for x in side.read_text().split()} if side.exists() else set()
    assert returned == set(range(len(returned))), "steps are logged in order"
    assert len(returned) < STEPS, "the kill came after the run ended; the trial proves nothing"

    out = subprocess.run([*sync_command(), "--retry-for", "30", "--token", server.token, str(spool)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "still to send" not in out.stdout
    print(f"trial {trial}: {len(returned)} steps returned before the kill; sync: {out.stdout.strip()}")
    if "position " in out.stdout:
        server.run(run_id, min_position=out.stdout.split("position ")[1].split()[0].rstrip(",;"))
    check_exactly_once(server, run_id, returned)
    # A second sync finds nothing left to send and sends nothing twice.
    env = dict(os.environ, RUNSTREAM_TOKEN=server.token)  # the token from the environment this time
    again = subprocess.run([*sync_command(), str(spool)], capture_output=True, text=True, timeout=120, env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert " 0 events and 0 files delivered" in again.stdout or "no spooled runs" in again.stdout
    check_exactly_once(server, run_id, returned)


def test_server_down_for_the_first_half(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    token = "python-client-tests-0123456789"
    caplog.set_level(logging.WARNING, logger="runstream")
    run = runstream.init(project=PROJECT, name="outage", url=url, token=token, spool_dir=tmp_path / "spool",
                         capture_environment=False, system_metrics=False)
    names = [f"m{j}" for j in range(METRICS)]
    latencies: list[float] = []

    def train(steps: range) -> float:
        t0 = time.perf_counter()
        for step in steps:
            a = time.perf_counter()
            run.log({names[j]: value(j, step) for j in range(METRICS)}, step=step)
            latencies.append(time.perf_counter() - a)
        return time.perf_counter() - t0

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first_half = train(range(STEPS // 2))
        # The sender process reports the outage as a warning in this process (it may start
        # after the first half is logged: a warning is expected, not a wait).
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(
            issubclass(w.category, runstream.RunstreamWarning) for w in caught
        ):
            time.sleep(0.05)
    messages = [str(w.message) for w in caught if issubclass(w.category, runstream.RunstreamWarning)]
    assert messages and "cannot deliver" in messages[0], messages
    assert any("cannot deliver" in r.getMessage() for r in caplog.records)

    server = Server(tmp_path / "data", listen=f"127.0.0.1:{port}")
    try:
        second_half = train(range(STEPS // 2, STEPS))
        # The loop never waited on the network: a retry or a connection attempt would show up as
        # calls of seconds; a busy machine may stretch a few calls, not most.
        latencies.sort()
        p99, worst = latencies[int(len(latencies) * 0.99)], latencies[-1]
        assert p99 < 0.05 and worst < 2.0, f"p99 {p99 * 1000:.1f} ms, worst {worst * 1000:.0f} ms"
        assert first_half < 30 and second_half < 30, (first_half, second_half)
        assert run.finish(timeout=120), "everything should be delivered once the server is up"
        server.run(run.id, min_position=run.last_position)
        check_exactly_once(server, run.id, set(range(STEPS)))
    finally:
        server.stop()
