"""Test harness: the real ``runstream`` server binary, started per test module on a free port.

The binary is ``$RUNSTREAM_BIN`` or, by default, ``target/debug/runstream`` of this repository
(built by ``cargo build``). Tests that need it fail, not skip, when it is missing.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

REPO = Path(__file__).resolve().parents[3]
ADMIN_TOKEN = "python-client-tests-0123456789"
PROJECT = "default"


def server_binary() -> Path:
    env = os.environ.get("RUNSTREAM_BIN")
    path = Path(env) if env else REPO / "target" / "debug" / "runstream"
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.fail(
            f"the runstream server binary is missing at {path}: run `cargo build` in {REPO} "
            "or point RUNSTREAM_BIN at a built binary",
            pytrace=False,
        )
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A running ``runstream serve`` and a small HTTP reader for its API."""

    def __init__(self, data: Path, listen: str = "127.0.0.1:0") -> None:
        self.data = data
        self.token = ADMIN_TOKEN
        env = dict(os.environ, RUNSTREAM_ADMIN_TOKEN=ADMIN_TOKEN, RUNSTREAM_LOG="warn")
        self.proc = subprocess.Popen(
            [str(server_binary()), "serve", "--listen", listen, "--data", str(data)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=None,
            text=True,
        )
        found: list[str] = []
        ready = threading.Event()

        def read() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                if line.startswith("runstream listening on "):
                    found.append(line.split("listening on ", 1)[1].strip())
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(60) or not found:
            self.proc.kill()
            raise RuntimeError(f"runstream serve did not report its address (exit {self.proc.poll()})")
        self.url = found[0]

    # ---- control ---------------------------------------------------------------------------

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    # ---- reads -----------------------------------------------------------------------------

    def request(self, path: str, params: dict[str, Any] | None = None) -> tuple[int, bytes, dict[str, str]]:
        qs = "?" + urllib.parse.urlencode(params) if params else ""
        req = urllib.request.Request(self.url + path + qs, headers={"Authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, r.read(), {k.lower(): v for k, v in r.getheaders()}
        except urllib.error.HTTPError as e:
            return e.code, e.read(), {k.lower(): v for k, v in e.headers.items()}

    def get(self, endpoint: str, **params: Any) -> Any:
        status, body, _ = self.request(endpoint, {k: v for k, v in params.items() if v is not None})
        assert status == 200, f"GET {endpoint} {params}: {status} {body[:500]!r}"
        return json.loads(body)

    def run(self, run: str, min_position: str | None = None) -> dict[str, Any]:
        return self.get(f"/api/v1/projects/{PROJECT}/runs/{run}", min_position=min_position)

    def points(self, run: str, path: str) -> tuple[list[int], list[int], list[Any]]:
        """Every raw point of a float series: steps, times, values (as the API writes them)."""
        steps: list[int] = []
        times: list[int] = []
        values: list[Any] = []
        frm, frm_time = 0, None
        while True:
            page = self.get(
                f"/api/v1/projects/{PROJECT}/runs/{run}/series",
                path=path,
                from_step=frm,
                from_time_ms=frm_time,
                limit=100_000,
            )
            steps += page["steps"]
            times += page["times_ms"]
            values += page["values"]
            if page.get("next_from_step") is None:
                return steps, times, values
            frm, frm_time = page["next_from_step"], page.get("next_from_time_ms")

    def lines(self, run: str, path: str) -> dict[str, Any]:
        return self.get(f"/api/v1/projects/{PROJECT}/runs/{run}/lines", path=path, limit=100_000)

    def file(self, run: str, path: str, step: int | None = None) -> tuple[bytes, str]:
        q = {"step": step} if step is not None else None
        status, body, headers = self.request(
            f"/api/v1/projects/{PROJECT}/runs/{run}/files/{urllib.parse.quote(path)}", q
        )
        assert status == 200, f"file {path} step {step}: {status} {body[:300]!r}"
        return body, headers.get("content-type", "")

    def events(self, run: str) -> list[dict[str, Any]]:
        """The run's raw event history, every page."""
        out: list[dict[str, Any]] = []
        after = None
        while True:
            page = self.get(f"/api/v1/projects/{PROJECT}/runs/{run}/events", after=after, limit=10_000)
            out += page["events"]
            after = page.get("next")
            if not after:
                return out

    def wait_for_points(self, run: str, series: str, count: int, timeout: float = 30) -> None:
        """Polls until the views hold ``count`` points of a series (writes by another process)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if count <= 0:
                return
            status, body, _ = self.request(f"/api/v1/projects/{PROJECT}/runs/{run}")
            if status == 200:
                m = json.loads(body).get("metrics", {}).get(series)
                if m and m["count"] >= count:
                    return
            time.sleep(0.1)
        raise AssertionError(f"run {run} series {series} did not reach {count} points in {timeout} s")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(tmp_path_factory.mktemp("server-data"))
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    d = tmp_path / "spool"
    d.mkdir()
    return d


def point_counts(events: list[dict[str, Any]], kind: str = "float_points") -> dict[tuple[str, int], int]:
    """How often each (series, step) appears across a run's raw events."""
    counts: dict[tuple[str, int], int] = {}
    for e in events:
        body = e.get(kind)
        if body:
            for s in body["steps"]:
                key = (body["series"], s)
                counts[key] = counts.get(key, 0) + 1
    return counts


def sync_command() -> list[str]:
    """The installed ``runstream-sync`` console script (beside this interpreter)."""
    exe = Path(sys.executable).parent / "runstream-sync"
    if not exe.exists():
        pytest.fail(f"runstream-sync is not installed beside {sys.executable}: pip install ./clients/python",
                    pytrace=False)
    return [str(exe)]
