"""Delivery of a run's spool to the server: the background sender and ``runstream-sync``.

The sender reads units from the spool (see ``spool``), records each as inflight, sends it, and
records it as delivered once the server has answered 200. A unit of binary points records is
sent as one protobuf ``EventBatch``, the points of each series merged into one columnar event;
a unit of JSON events records as one JSON batch, merged the same way. A merge is a pure
function of the unit's bytes and a merged event keeps the id of its first constituent, so a unit
sent again after a crash yields byte-identical events that the server recognises by id.

Server trouble never reaches the training code: connection failures, 429 and 5xx are retried
with exponential backoff and full jitter (or after the server's Retry-After), and reported once
per outage as a warning. An answer that retrying cannot change (bad credentials, unknown
project) stops this sender with a warning; the spool keeps everything for ``runstream-sync``.
"""

from __future__ import annotations

import json
import logging
import os
import random
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import _records as _rec
from ._wire import Column, event_batch, varint
from .spool import BLOBS, SEGMENTS, Progress, SpoolLock, SpoolReader, Unit, list_segments, segment_name
from .transport import Response, Transport, TransportError

log = logging.getLogger("runstream")

#: First retry delay and the largest one, in seconds.
BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0


class RunstreamWarning(UserWarning):
    """Server trouble the training code is told about but not stopped by."""


class DeliveryBlocked(Exception):
    """The server refused the data for a reason retrying cannot change."""


@dataclass
class SendStats:
    batches: int = 0
    events: int = 0
    duplicates: int = 0
    files: int = 0
    bytes_sent: int = 0
    rejected_lines: int = 0
    last_position: str = ""


class _Column:
    """The merged points of one series: JSON tokens, passed through as the writer wrote them."""

    __slots__ = ("id", "run", "kind", "column", "series", "steps", "times", "values")

    def __init__(self, id_: bytes, run: bytes, kind: bytes, column: bytes, series: bytes) -> None:
        self.id, self.run, self.kind, self.column, self.series = id_, run, kind, column, series
        self.steps: list[bytes] = []
        self.times: list[bytes] = []
        self.values: list[bytes] = []

    def encode(self) -> bytes:
        return b'{"id":"%s","run":%s,"%s":{"series":%s,"steps":[%s],"times_ms":[%s],"%s":[%s]}}' % (
            self.id, self.run, self.kind, self.series, b",".join(self.steps), b",".join(self.times),
            self.column, b",".join(self.values),
        )


def _token(v: Any) -> bytes:
    return json.dumps(v, ensure_ascii=False, separators=(",", ":")).encode()


def merge_lines(lines: list[bytes]) -> tuple[bytes, int]:
    """One POST body from event lines, points of a series merged into columns; (body, events).

    Events of exactly ``id``, ``run`` and a ``float_points`` or ``string_lines`` body with a time
    per point are folded into the first such event of their series, in order; every other event
    is kept as written. Only order within a series matters to the server, and the first event of
    a run (``run_created``) stays ahead of everything else of that run.

    Metrics are spooled as binary records and sent by ``merge_points``; this merges JSON
    records (text lines, and float points of other writers).
    """
    out: list[bytes | _Column] = []
    heads: dict[tuple[bytes, bytes, bytes], _Column] = {}

    def column(key: tuple[bytes, bytes, bytes], id_: bytes, column_name: bytes) -> _Column:
        c = heads.get(key)
        if c is None:
            c = heads[key] = _Column(id_, key[0], key[1], column_name, key[2])
            out.append(c)
        return c

    for line in lines:
        for ev in json.loads(line)["events"]:
            if len(ev) == 3:
                kind, col = "float_points", "values"
                body = ev.get(kind)
                if body is None:
                    kind, col = "string_lines", "lines"
                    body = ev.get(kind)
                if body is not None and len(body.get("times_ms") or ()) == len(body["steps"]):
                    c = column((_token(ev["run"]), kind.encode(), _token(body["series"])),
                               ev["id"].encode(), col.encode())
                    c.steps += [b"%d" % s for s in body["steps"]]
                    c.times += [b"%d" % t for t in body["times_ms"]]
                    c.values += [_token(v) for v in body[col]]
                    continue
            out.append(_token(ev))
    body = b'{"events":[' + b",".join(x if isinstance(x, bytes) else x.encode() for x in out) + b"]}"
    return body, len(out)


def merge_points(unit: Unit) -> tuple[bytes, int]:
    """One protobuf ``EventBatch`` from a unit of points records; (body, events).

    Each series becomes one ``float_points`` event holding its points in order, with the id of
    its first point; series come in the order they first appear. Records are read with
    ``struct`` and the values copied as raw doubles: no number is parsed or formatted.
    """
    data, records, templates = unit.data, unit.records, unit.templates
    heads: dict[tuple[str, str], Column] = {}
    out: list[Column] = []
    times_cache: dict[int, bytes] = {}
    i, n = 0, len(records)
    while i < n:
        kind, a, b = records[i]
        if kind != _rec.POINTS:
            i += 1
            continue
        number = _rec.TEMPLATE_NO.unpack_from(data, a)[0]
        tpl = templates.get(number)
        if tpl is None:
            raise ValueError(f"segment {unit.segment}: points record at {unit.base + a - 5} names "
                             f"template {number}, which the segment does not define")
        unpack = tpl.unpack
        rows = [unpack(data, a)]
        j = i + 1
        while j < n:  # the run of records of this template
            k2, a2, _ = records[j]
            if k2 == _rec.TEMPLATE:
                j += 1
                continue
            if k2 != _rec.POINTS or _rec.TEMPLATE_NO.unpack_from(data, a2)[0] != number:
                break
            rows.append(unpack(data, a2))
            j += 1
        cols = list(zip(*rows))
        steps = b"".join(map(varint, cols[2]))
        times = b"".join([times_cache.get(t) or times_cache.setdefault(t, varint(t)) for t in cols[3]])
        first_call = cols[1][0]
        run = tpl.run
        for idx, name in enumerate(tpl.series):
            key = (run, name)
            c = heads.get(key)
            if c is None:
                c = heads[key] = Column(tpl.event_id(first_call, idx), run.encode(), name.encode())
                out.append(c)
            c.steps.append(steps)
            c.times.append(times)
            c.values.extend(cols[4 + idx])
        i = j
    return event_batch(out), len(out)


class Sender:
    """Sends one run's spool. Used from a background thread or, by sync, in the foreground."""

    def __init__(
        self,
        directory: Path,
        transport: Transport,
        project: str,
        run: str,
        *,
        max_batch_bytes: int = 8 << 20,
        idle_poll: float = 0.1,
    ) -> None:
        self.dir = Path(directory)
        self.transport = transport
        self.project = project
        self.run = run
        self.reader = SpoolReader(self.dir, max_batch_bytes)
        self.stats = SendStats()
        self.idle_poll = idle_poll
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.blocked: str | None = None
        self._attempt = 0
        self._outage_reported = False
        self.on_warning: Callable[[str], None] = _warn

    # ---- one unit ----------------------------------------------------------------------------

    def deliver(self, unit: Unit) -> float | None:
        """Sends one unit. None when it is done with; else seconds to wait before trying again."""
        self.reader.begin(unit)
        try:
            if unit.kind == "none":  # templates only
                self.reader.commit(unit)
                return None
            if unit.kind == "file":
                resp = self._send_file(unit)
            else:
                if unit.kind == "points":
                    body, n = merge_points(unit)
                    resp = self.transport.post_events(self.project, body, "application/x-protobuf")
                else:
                    body, n = merge_lines(unit.payloads())
                    resp = self.transport.post_events(self.project, body)
                if resp.status == 200:
                    self.stats.bytes_sent += len(body)
        except TransportError as e:
            return self._retry_later(str(e), None)
        if resp is None:  # a file record whose blob is gone
            self.reader.commit(unit)
            return None
        if resp.status == 200:
            self._recovered()
            self._account(unit, resp)
            self.reader.commit(unit)
            if unit.kind == "file":
                self._remove_blob(unit)
            return None
        if resp.retryable:
            return self._retry_later(f"{resp.status} {resp.error_message()}", resp.retry_after())
        count = len(unit.payloads())
        if resp.status in (400, 413) and unit.kind != "file" and count > 1:
            # Nothing of a refused batch was appended, so its records can go one by one; only
            # the bad ones are set aside.
            self._deliver_one_by_one(unit)
            return None
        if resp.status == 400 or (resp.status == 413 and unit.kind == "file"):
            msg = f"{resp.status} {resp.error_message()}"
            self.stats.rejected_lines += count
            self.reader.reject(unit, msg)
            self.on_warning(
                f"runstream: the server refused {count} spooled record(s) of run "
                f"{self.run!r} ({msg}); they are kept in {self.dir / 'rejected.jsonl'}"
            )
            return None
        raise DeliveryBlocked(f"{resp.status} {resp.error_message()}")

    def _deliver_one_by_one(self, unit: Unit) -> None:
        for sub in unit.split():
            while True:
                delay = self.deliver(sub)
                if delay is None:
                    break
                if self.stopping.wait(delay):
                    return

    def _send_file(self, unit: Unit) -> Response | None:
        rec = json.loads(unit.payloads()[0])["file"]
        blob = self.dir / BLOBS / rec["blob"]
        try:
            f = open(blob, "rb")
        except FileNotFoundError:
            self.on_warning(
                f"runstream: file {rec['path']!r} of run {self.run!r} is missing from the spool "
                f"({blob}); skipped"
            )
            return None
        with f:
            size = os.fstat(f.fileno()).st_size
            resp = self.transport.upload(
                self.project,
                rec.get("run", self.run),
                rec["path"],
                f,
                size,
                {"step": rec.get("step"), "media_type": rec.get("media_type") or None,
                 "event_id": rec["event_id"]},
            )
        if resp.status == 200:
            self.stats.bytes_sent += size
        return resp

    def _remove_blob(self, unit: Unit) -> None:
        rec = json.loads(unit.payloads()[0])["file"]
        try:
            (self.dir / BLOBS / rec["blob"]).unlink()
        except FileNotFoundError:
            pass

    def _account(self, unit: Unit, resp: Response) -> None:
        self.stats.batches += 1
        try:
            answer = resp.json() or {}
        except ValueError:
            answer = {}
        if unit.kind == "file":
            self.stats.files += 1
            self.stats.duplicates += 1 if answer.get("duplicate") else 0
        else:
            self.stats.events += int(answer.get("accepted", 0))
            self.stats.duplicates += int(answer.get("duplicates", 0))
        pos = answer.get("position")
        if pos:
            self.stats.last_position = pos

    def _retry_later(self, why: str, retry_after: float | None) -> float:
        if not self._outage_reported:
            self._outage_reported = True
            self.on_warning(
                f"runstream: cannot deliver to {self.transport.url} ({why}); logging goes on into "
                f"the spool {self.dir} and delivery is retried in the background"
            )
        else:
            log.debug("delivery failed, retrying: %s", why)
        self._attempt += 1
        if retry_after is not None:
            return retry_after + random.uniform(0, 0.1 * max(retry_after, 0.1))
        # Full jitter: a fleet of clients that failed together does not retry together.
        return random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2 ** min(self._attempt, 16)))

    def _recovered(self) -> None:
        if self._outage_reported:
            log.info("runstream: delivery to %s resumed", self.transport.url)
        self._outage_reported = False
        self._attempt = 0

    # ---- loops -------------------------------------------------------------------------------

    def pump(
        self,
        done: Callable[[], bool],
        on_progress: Callable[[], None] | None = None,
        give_up_after: float | None = None,
    ) -> None:
        """Sends until ``done()`` says to stop while the spool is empty, or until stopped.

        With ``give_up_after``, stops once that many seconds pass without a unit delivered.
        """
        last_ok = time.monotonic()
        while not self.stopping.is_set() and self.blocked is None:
            try:
                unit = self.reader.next_unit()
            except (OSError, ValueError) as e:
                self.blocked = f"the spool cannot be read: {e}"
                self.on_warning(f"runstream: run {self.run!r}: {self.blocked}")
                return
            if unit is None:
                if done():
                    return
                self.wake.wait(self.idle_poll)
                self.wake.clear()
                continue
            try:
                delay = self.deliver(unit)
            except DeliveryBlocked as e:
                self.blocked = str(e)
                self.on_warning(
                    f"runstream: the server at {self.transport.url} refuses run {self.run!r} of "
                    f"project {self.project!r} ({e}); delivery stopped, everything stays in "
                    f"{self.dir} for runstream-sync"
                )
                return
            if on_progress is not None:
                on_progress()
            if delay is None:
                last_ok = time.monotonic()
            elif give_up_after is not None and time.monotonic() + delay - last_ok > give_up_after:
                return
            if delay is not None:
                # Woken early when the run finishes, so a flush does not sleep out a backoff.
                if self.wake.wait(delay):
                    self.wake.clear()

    def pending_bytes(self) -> int:
        return pending_bytes(self.dir, self.reader.progress)


class Delivery:
    """What a run needs from whatever delivers its spool in the background."""

    dir: Path
    blocked: str | None
    last_position: str

    def start(self) -> bool:
        raise NotImplementedError

    @property
    def alive(self) -> bool:
        raise NotImplementedError

    def progress(self) -> Progress:
        return Progress.load(self.dir)

    def pending_bytes(self) -> int:
        return pending_bytes(self.dir, self.progress())

    def nudge(self) -> None:
        """Asks for an attempt now rather than after the current backoff (best effort)."""

    def close(self, timeout: float, on_progress: Callable[[], None] | None = None) -> bool:
        raise NotImplementedError


class ThreadDelivery(Delivery):
    """Delivery in a daemon thread of the training process (shares its GIL)."""

    def __init__(self, sender: Sender) -> None:
        self.sender = sender
        self.dir = sender.dir
        self.lock = SpoolLock(sender.dir)
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def blocked(self) -> str | None:  # type: ignore[override]
        return self.sender.blocked

    @property
    def last_position(self) -> str:  # type: ignore[override]
        return self.sender.stats.last_position

    def start(self) -> bool:
        if not self.lock.acquire():
            _warn(
                f"runstream: another process ({self.lock.holder()}) is sending {self.sender.dir}; "
                "this process only writes to the spool"
            )
            return False
        self._thread = threading.Thread(
            target=self._main, name=f"runstream-sender-{self.sender.run}", daemon=True
        )
        self._thread.start()
        return True

    def _main(self) -> None:
        try:
            self.sender.pump(self._closing.is_set)
        except Exception as e:  # never let a bug in delivery surface in the training process
            self.sender.blocked = f"internal error: {e!r}"
            log.exception("runstream sender stopped")
            _warn(f"runstream: the sender of run {self.sender.run!r} stopped: {e!r}")
        finally:
            self.sender.transport.close()
            self.lock.release()

    def progress(self) -> Progress:
        return self.sender.reader.progress

    def nudge(self) -> None:
        self.sender.wake.set()

    def close(self, timeout: float, on_progress: Callable[[], None] | None = None) -> bool:
        """Asks the thread to send what is left and end; waits at most ``timeout`` seconds."""
        self._closing.set()
        self.sender.wake.set()
        t = self._thread
        if t is None:
            return False
        deadline = time.monotonic() + timeout
        while t.is_alive():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            t.join(min(0.1, remaining))
            if on_progress is not None:
                on_progress()
        if t.is_alive():
            self.sender.stopping.set()
            self.sender.wake.set()
            t.join(1.0)
            return False
        return self.sender.blocked is None

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


class ProcessDelivery(Delivery):
    """Delivery in a child process, so that parsing, merging and HTTP never take the training
    process's GIL.

    The child holds the spool lock and reports warnings, positions and a blocked state as JSON
    lines on its stdout. Closing its stdin (which the kernel also does when the training process
    dies, even by SIGKILL) tells it to deliver what is left, for at most ``linger`` seconds, and
    exit. It runs in its own session, so a Ctrl-C meant for training does not stop delivery.
    """

    def __init__(self, directory: Path, url: str, token: str | None, project: str, run: str,
                 linger: float) -> None:
        self.dir = Path(directory)
        self.url, self.token, self.project, self.run = url, token, project, run
        self.linger = linger
        self.blocked: str | None = None
        self.last_position = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None

    def start(self) -> bool:
        env = dict(os.environ)
        env.pop("RUNSTREAM_TOKEN", None)
        if self.token:
            env["RUNSTREAM_SENDER_TOKEN"] = self.token
        src = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "runstream._sender_main", str(self.dir), self.url, self.project,
                 self.run, str(self.linger)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None, env=env,
                start_new_session=True, close_fds=True,
            )
        except OSError as e:
            _warn(f"runstream: cannot start the sender process ({e}); the run is kept in {self.dir} "
                  "for runstream-sync")
            return False
        self._reader = threading.Thread(target=self._read, name=f"runstream-sender-{self.run}", daemon=True)
        self._reader.start()
        return True

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for raw in self._proc.stdout:
            try:
                msg = json.loads(raw)
            except ValueError:
                continue
            if "position" in msg:
                self.last_position = msg["position"]
            if "blocked" in msg:
                self.blocked = msg["blocked"]
            if "warning" in msg:
                _warn(msg["warning"])
            if "info" in msg:
                log.info(msg["info"])

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def close(self, timeout: float, on_progress: Callable[[], None] | None = None) -> bool:
        p = self._proc
        if p is None:
            return False
        try:
            assert p.stdin is not None
            p.stdin.close()
        except OSError:
            pass
        deadline = time.monotonic() + timeout
        while p.poll() is None and time.monotonic() < deadline:
            try:
                p.wait(0.1)
            except subprocess.TimeoutExpired:
                pass
            if on_progress is not None:
                on_progress()
        if p.poll() is None:
            # Progress is recorded after every unit, so stopping it now loses nothing.
            p.terminate()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if self._reader is not None:
            self._reader.join(2.0)
        return p.returncode == 0 and self.blocked is None


def pending_bytes(directory: Path, p: Progress) -> int:
    """Bytes written to a spool and not yet delivered (from file sizes; no reading)."""
    start = p.inflight[1] if p.inflight else p.offset
    total = 0
    for seg in list_segments(directory):
        if seg < p.segment:
            continue
        try:
            size = (directory / SEGMENTS / segment_name(seg)).stat().st_size
        except FileNotFoundError:
            continue
        total += size - (start if seg == p.segment else 0)
    try:
        with os.scandir(directory / BLOBS) as it:
            for e in it:
                total += e.stat().st_size
    except FileNotFoundError:
        pass
    return total


def _warn(message: str) -> None:
    log.warning(message)
    warnings.warn(message, RunstreamWarning, stacklevel=2)
