"""Run states from the process's fate, offline runs with sync, and the thread sender."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import runstream
from runstream import _records

from conftest import PROJECT, Server, sync_command


def run_script(server: Server, tmp_path: Path, body: str, **kw: object) -> subprocess.Popen[str]:
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(body))
    env = dict(os.environ, RUNSTREAM_URL=server.url, RUNSTREAM_TOKEN=server.token, RUNSTREAM_PROJECT=PROJECT,
               RUNSTREAM_SPOOL_DIR=str(tmp_path / "spool"))
    # SIGINT at its default action in the script, as from a terminal: a test run started in the
    # background (`cmd &` in a script) would otherwise pass on SIGINT ignored, and Python then
    # never raises KeyboardInterrupt.
    return subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
                            **kw)  # type: ignore[call-overload]


HEADER = """
    import sys, time, runstream
    run = runstream.init(name="fate", capture_environment=False, system_metrics=False)
    print(run.id, flush=True)
    run.log({"x": 1.0})
"""


def final_state(server: Server, run_id: str) -> dict:
    deadline = time.monotonic() + 30
    while True:
        r = server.run(run_id)["run"]
        if r["state"] != "running" or time.monotonic() > deadline:
            return r
        time.sleep(0.1)


def test_uncaught_exception_fails_the_run(server: Server, tmp_path: Path) -> None:
    p = run_script(server, tmp_path, HEADER + "    raise RuntimeError('diverged at step 7')\n")
    out, err = p.communicate(timeout=120)
    assert p.returncode == 1
    assert "RuntimeError: diverged at step 7" in err, "the original traceback is still printed"
    r = final_state(server, out.split()[0])
    assert r["state"] == "failed" and "diverged at step 7" in r["state_message"]


def test_sigterm_aborts_the_run_and_keeps_the_exit_status(server: Server, tmp_path: Path) -> None:
    p = run_script(server, tmp_path, HEADER + "    print('looping', flush=True)\n    time.sleep(120)\n")
    assert p.stdout is not None
    run_id = p.stdout.readline().strip()
    assert p.stdout.readline().strip() == "looping"
    p.send_signal(signal.SIGTERM)
    p.wait(60)
    assert p.returncode == -signal.SIGTERM
    r = final_state(server, run_id)
    assert r["state"] == "aborted" and "SIGTERM" in r["state_message"]


def test_sigint_aborts_the_run(server: Server, tmp_path: Path) -> None:
    p = run_script(server, tmp_path, HEADER + "    print('looping', flush=True)\n    time.sleep(120)\n")
    assert p.stdout is not None
    run_id = p.stdout.readline().strip()
    assert p.stdout.readline().strip() == "looping"
    p.send_signal(signal.SIGINT)
    p.wait(60)
    assert p.returncode != 0
    r = final_state(server, run_id)
    assert r["state"] == "aborted" and "KeyboardInterrupt" in r["state_message"]


def test_normal_exit_finishes_the_run(server: Server, tmp_path: Path) -> None:
    p = run_script(server, tmp_path, HEADER)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert final_state(server, out.split()[0])["state"] == "finished"
    assert not list((tmp_path / "spool").glob("*/*/run.json")), "a delivered run leaves no spool"


def test_offline_run_then_python_m_runstream_sync(server: Server, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    run = runstream.init(project=PROJECT, name="offline", mode="offline", spool_dir=spool,
                         capture_environment=False, system_metrics=False)
    for step in range(500):
        run.log({"loss": 1.0 / (step + 1), "acc": step / 500}, step=step)
    run.log_bytes("notes.txt", b"offline")
    run.finish()
    # The spool is what the package README documents.
    info = json.loads((run.spool_dir / "run.json").read_text())
    assert info["format"] == 1 and info["run"] == run.id and info["project"] == PROJECT
    kinds = []
    for seg in sorted((run.spool_dir / "segments").iterdir()):
        data = seg.read_bytes()
        records, end, bad = _records.parse(data)
        assert end == len(data) and not bad
        kinds += [chr(k) for k, _, _ in records]
        for k, a, b in records:
            if k in (_records.EVENTS, _records.FILE):
                assert list(json.loads(data[a:b])) == (["events"] if k == _records.EVENTS else ["file"])
    assert kinds.count("F") == 1 and kinds.count("T") == 1 and kinds.count("P") == 500
    assert (run.spool_dir / "closed").exists()
    assert not server.request(f"/api/v1/projects/{PROJECT}/runs/{run.id}")[0] == 200, "nothing sent yet"

    env = dict(os.environ, RUNSTREAM_URL=server.url, RUNSTREAM_TOKEN=server.token)
    out = subprocess.run([sys.executable, "-m", "runstream", "sync", str(spool)], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 files delivered" in out.stdout
    position = out.stdout.split("position ")[1].split()[0].rstrip(",;")
    got = server.run(run.id, min_position=position)
    assert got["run"]["state"] == "finished"
    assert server.points(run.id, "loss")[0] == list(range(500))
    assert server.file(run.id, "notes.txt")[0] == b"offline"
    assert not run.spool_dir.exists(), "a delivered, closed run is removed by sync"
    # The console script says there is nothing left.
    again = subprocess.run([*sync_command(), str(spool)], env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "no spooled runs" in again.stdout


def test_thread_sender_delivers_too(server: Server, tmp_path: Path) -> None:
    run = runstream.init(project=PROJECT, name="thread", url=server.url, token=server.token,
                         spool_dir=tmp_path / "spool", capture_environment=False, system_metrics=False,
                         sender="thread")
    for step in range(2000):
        run.log({"a": float(step), "b": -float(step)}, step=step)
    run.log_text("console", "done")
    assert run.flush(timeout=60)
    assert run.finish(timeout=60)
    server.run(run.id, min_position=run.last_position)
    steps, _, values = server.points(run.id, "b")
    assert steps == list(range(2000)) and values == [-float(s) for s in range(2000)]
    assert server.lines(run.id, "console")["lines"] == ["done"]
