"""A run: the logging API training code calls.

Every logging method checks its arguments (a programmer error raises at once), encodes the
events as one spool record and ``write()``s it before returning; nothing waits on the network.
The background sender (see ``sender``) delivers the spool. ``log()`` is the hot path: a set of
metric names is checked once and gets a template record; a call then costs a type check, one
``struct`` pack of the floats, a CRC and one ``write()``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import struct
import mimetypes
import os
import sys
import threading
import time as _time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from . import _exit
from . import _records as _rec
from ._encode import (
    EventIds,
    as_mapping,
    attribute_value,
    dumps,
    flatten_attributes,
    flatten_metrics,
)
from ._validate import (
    MAX_NAME_LEN,
    MAX_STEP,
    MAX_STRING_LEN,
    MAX_URI_LEN,
    ValidationError,
    check_id,
    check_path,
    check_step,
    check_tag,
    check_text,
    metric_value,
    time_ms,
)
from .progress import ProgressBar, human_bytes, quiet
from .sender import Delivery, ProcessDelivery, Sender, ThreadDelivery
from .spool import SEGMENT_BYTES, SpoolReader, SpoolWriter, default_root, run_dir
from .transport import Transport, TransportError

log = logging.getLogger("runstream")
_os_write = os.write
_crc32 = _rec.crc32
_crc_into = _rec.CRC.pack_into
_POINTS = _rec.POINTS
#: Sets of names whose record layout is kept; past this, each call writes its own template.
_MAX_TEMPLATES = 4096
#: A compiled points record: (pack_into, buffer, view of what the CRC covers, its size, number).
_Tpl = tuple

Mode = Literal["online", "offline"]
#: Value types the fast path packs as they are (bool is not one: it is checked as a number).
_PLAIN = frozenset({float, int})
_TERMINAL = ("finished", "failed", "aborted")
_ARTIFACT_KINDS = ("dataset", "model", "code", "run", "other")


class RunClosedError(RuntimeError):
    """Logging to a run that has already finished."""


def _now_ms() -> int:
    return int(_time.time() * 1000)


class Run:
    """One run of a project. Create it with :func:`runstream.init`.

    Thread-safe: any thread may log. Use it as a context manager to finish it when the block
    ends (failed if an exception escapes, aborted on KeyboardInterrupt).
    """

    def __init__(
        self,
        *,
        project: str,
        run_id: str,
        url: str | None,
        token: str | None,
        mode: Mode,
        spool_root: Path,
        create: dict[str, Any] | None,
        flush_timeout: float,
        sender: Literal["process", "thread"] = "process",
    ) -> None:
        self.project = project
        self.id = run_id
        self.url = url
        self.mode: Mode = mode
        self.flush_timeout = flush_timeout
        self.spool_dir = run_dir(spool_root, project, run_id)
        self._ids = EventIds()
        self._lock = threading.RLock()
        self._next_step = 0
        self._line_steps: dict[str, int] = {}
        self._file_steps: dict[str, int] = {}
        self._templates: dict[tuple[Any, ...], _Tpl] = {}
        self._template_count = 0
        self._checked_names: set[str] = set()
        self._state: str | None = None
        self._run_json = json.dumps(run_id)
        self._writer = SpoolWriter(
            self.spool_dir,
            {"url": url or "", "project": project, "run": run_id, "created_ms": _now_ms()},
        )
        self._sender: Delivery | None = None
        self._monitor: _Monitor | None = None
        if create is not None:
            self._emit("run_created", create)
        self._emit("run_state", {"state": "running"})
        if mode == "online":
            assert url is not None
            delivery: Delivery
            if sender == "thread":
                delivery = ThreadDelivery(Sender(self.spool_dir, Transport(url, token), project, run_id,
                                                 max_batch_bytes=1 << 20))
            else:
                delivery = ProcessDelivery(self.spool_dir, url, token, project, run_id, flush_timeout)
            if delivery.start():
                self._sender = delivery

    # ---- representation ------------------------------------------------------------------------

    def __repr__(self) -> str:
        return f"<runstream.Run {self.project}/{self.id} {self._state or 'running'}>"

    @property
    def step(self) -> int:
        """The step the next ``log()`` without an explicit step will use."""
        return self._next_step

    @property
    def state(self) -> str:
        return self._state or "running"

    # ---- the spool -----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._state is not None:
            raise RunClosedError(f"run {self.id!r} is {self._state}; start a new one with runstream.init()")

    def _event(self, kind: str, body: Any, client_time_ms: int | None = None) -> str:
        t = _now_ms() if client_time_ms is None else client_time_ms
        return (
            f'{{"id":"{self._ids.next()}","run":{self._run_json},"client_time_ms":{t},'
            f'"{kind}":{dumps(body)}}}'
        )

    def _emit(self, kind: str, body: Any) -> None:
        line = '{"events":[' + self._event(kind, body) + "]}"
        with self._lock:
            self._writer.write(_rec.frame(_rec.EVENTS, line.encode("utf-8")))

    # ---- metrics -------------------------------------------------------------------------------

    def log(self, metrics: Mapping[str, Any], step: int | None = None, time: Any = None) -> None:
        """Logs a dict of metrics (nested dicts become ``a/b`` names) at one step.

        ``step`` defaults to one past the last step logged; ``time`` (seconds since the epoch,
        or a datetime) to now. Values are numbers: int, float (NaN and infinities included),
        bool, numpy scalars, 0-d arrays and tensors.
        """
        if self._state is not None:
            self._check_open()
        if type(metrics) is not dict and not isinstance(metrics, Mapping):
            raise TypeError(f"metrics must be a dict of name to number, not {type(metrics).__name__}")
        t = int(_time.time() * 1000) if time is None else time_ms(time)
        # Fast path: a set of names seen before with plain numbers. The names were checked and
        # a record layout compiled the first time; what is left is one struct pack, one CRC and
        # one write(), all in C. No float is turned into text.
        tpl = self._templates.get(tuple(metrics))
        if tpl is not None:
            values = metrics.values()
            if _PLAIN.issuperset(map(type, values)):
                with self._lock:
                    if step is None:
                        step = self._next_step
                    elif type(step) is not int or not 0 <= step <= MAX_STEP:
                        step = check_step(step)
                    pack_into, buf, body, size, number = tpl
                    try:
                        pack_into(buf, 0, _POINTS, size - 5, number, self._ids.next_call(), step, t, *values)
                    except (OverflowError, struct.error):  # an int too large for a double
                        pass
                    else:
                        _crc_into(buf, size, _crc32(body))
                        w = self._writer
                        n = _os_write(w.fd, buf)  # SpoolWriter.write, inlined
                        if w.add_size(n) >= SEGMENT_BYTES or n != len(buf):
                            w.after_write(bytes(buf), n)
                        self._next_step = step + 1
                        return
        self._log_slow(metrics, step, t)

    def _log_slow(self, metrics: Mapping[str, Any], step: int | None, t: int) -> None:
        """Checks and encodes what the fast path does not take: new names, other value types,
        nested dicts. Raises before anything is written."""
        pairs: list[tuple[str, float]] = []
        for k, v in metrics.items():
            if not isinstance(k, str):
                raise TypeError(f"metric names must be str, not {type(k).__name__} ({k!r})")
            if isinstance(v, Mapping):
                pairs.extend((name, metric_value(name, x)) for name, x in flatten_metrics(v, k))
            else:
                pairs.append((k, metric_value(k, v)))
        for name, _ in pairs:
            if name not in self._checked_names:
                check_path("metric name", name)
        if step is not None:
            step = check_step(step)
        if not pairs:
            return
        with self._lock:
            if step is None:
                step = self._next_step
            self._write_points(pairs, step, t)
            self._next_step = step + 1
        for name, _ in pairs:
            self._checked_names.add(name)

    def _write_points(self, pairs: list[tuple[str, float]], step: int, t: int) -> None:
        """Writes points as binary records, at most 256 series per record (one call number
        each); a set of names gets a template the first time. Callers hold the lock."""
        for lo in range(0, len(pairs), 256):
            chunk = pairs[lo:lo + 256]
            names = tuple(name for name, _ in chunk)
            tpl = self._templates.get(names)
            prefix = b""
            if tpl is None:
                tpl, prefix = self._new_template(names)
            pack_into, buf, body, size, number = tpl
            pack_into(buf, 0, _POINTS, size - 5, number, self._ids.next_call(), step, t, *(v for _, v in chunk))
            _crc_into(buf, size, _crc32(body))
            # An uncached template goes in the same write as its record, so they share a segment.
            self._writer.write(prefix + bytes(buf))

    def _new_template(self, names: tuple[str, ...]) -> tuple[_Tpl, bytes]:
        """A template for a set of series names: written to the spool now and cached (then it
        is repeated in every later segment), or, past a bound, returned to be written with its
        record."""
        number = self._template_count
        self._template_count += 1
        record = _rec.frame(_rec.TEMPLATE, _rec.template_payload(
            number, self.id, self._ids.prefix.replace("-", ""), list(names)))
        s = _rec.points_struct(len(names))
        buf = bytearray(s.size + _rec.CRC.size)
        tpl: _Tpl = (s.pack_into, buf, memoryview(buf)[: s.size], s.size, number)
        if len(self._templates) < _MAX_TEMPLATES:
            self._writer.add_template(record)
            self._templates[names] = tpl
            return tpl, b""
        return tpl, record

    def _log_system(self, metrics: dict[str, float], step: int) -> None:
        """System metrics: their own step counter, so user steps are not moved."""
        if not metrics or self._state is not None:
            return
        pairs = [(k, float(v)) for k, v in metrics.items()]
        with self._lock:
            self._write_points(pairs, step, _now_ms())

    # ---- attributes and tags -------------------------------------------------------------------

    def __setitem__(self, path: str, value: Any) -> None:
        """``run["params/optimizer/lr"] = 0.01``; a dict value sets every path below ``path``."""
        check_path("attribute path", path)
        if isinstance(value, Mapping):
            self.update(value, prefix=path)
        else:
            self._check_open()
            self._emit("attributes_set", {"attributes": {path: attribute_value(path, value)}})

    def __delitem__(self, path: str) -> None:
        """Deletes an attribute: ``del run["params/old"]``."""
        check_path("attribute path", path)
        self._check_open()
        self._emit("attributes_deleted", {"paths": [path]})

    def update(self, values: Mapping[str, Any] | Any, prefix: str = "") -> None:
        """Sets many attributes at once; nested mappings, dataclasses and namespaces flatten."""
        self._check_open()
        if prefix:
            check_path("attribute prefix", prefix)
        flat = flatten_attributes(as_mapping(values, "attributes"), prefix)
        if flat:
            self._emit("attributes_set", {"attributes": flat})

    def add_tags(self, *tags: str) -> None:
        self._check_open()
        checked = [check_tag(t) for t in tags]
        if checked:
            self._emit("tags_added", {"tags": checked})

    def remove_tags(self, *tags: str) -> None:
        self._check_open()
        checked = [check_tag(t) for t in tags]
        if checked:
            self._emit("tags_removed", {"tags": checked})

    # ---- text ----------------------------------------------------------------------------------

    def log_text(self, series: str, text: str, step: int | None = None, time: Any = None) -> None:
        """Appends a line to a string series (a console log, generated samples, notes).

        ``step`` defaults to one past the last line of this series.
        """
        self._check_open()
        check_path("series name", series)
        check_text(f"text of {series!r}", text, MAX_STRING_LEN)
        t = _now_ms() if time is None else time_ms(time)
        with self._lock:
            if step is None:
                step = self._line_steps.get(series, 0)
            else:
                step = check_step(step)
            self._line_steps[series] = step + 1
            body = {"series": series, "steps": [step], "times_ms": [t], "lines": [text]}
            line = (
                f'{{"events":[{{"id":"{self._ids.next()}","run":{self._run_json},'
                f'"string_lines":{dumps(body)}}}]}}'
            )
            self._writer.write(_rec.frame(_rec.EVENTS, line.encode("utf-8")))

    # ---- files ---------------------------------------------------------------------------------

    def _file_record(self, path: str, step: int | None, media_type: str | None, blob: str, size: int) -> None:
        rec = {
            "file": {
                "run": self.id,
                "path": path,
                "step": step,
                "media_type": media_type or "",
                "event_id": blob,
                "blob": blob,
                "size": size,
            }
        }
        with self._lock:
            self._writer.write(_rec.frame(_rec.FILE, dumps(rec).encode("utf-8")))

    def _file_step(self, path: str, step: int | None) -> int | None:
        if step is None:
            return None
        step = check_step(step)
        self._file_steps[path] = step + 1
        return step

    def log_file(
        self,
        path: str,
        local_path: str | os.PathLike[str],
        *,
        step: int | None = None,
        media_type: str | None = None,
    ) -> None:
        """Uploads a file as ``path`` of the run; with ``step`` it joins a file series.

        The file is copied into the spool before this returns, so it may change or go away
        afterwards.
        """
        self._check_open()
        check_path("file path", path)
        src = Path(local_path)
        if not src.is_file():
            raise FileNotFoundError(f"cannot log {str(src)!r} as {path!r}: it is not a file")
        if media_type is not None:
            check_text("media_type", media_type, 255)
        mt = media_type or mimetypes.guess_type(path)[0] or mimetypes.guess_type(src.name)[0]
        with self._lock:
            step = self._file_step(path, step)
            blob = self._ids.next()
            size = self._writer.add_blob_file(blob, src)
            self._file_record(path, step, mt, blob, size)

    def log_bytes(
        self, path: str, data: bytes, *, step: int | None = None, media_type: str | None = None
    ) -> None:
        """Uploads bytes as a file of the run (a generated report, a serialised config)."""
        self._check_open()
        check_path("file path", path)
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data must be bytes, not {type(data).__name__}")
        if media_type is not None:
            check_text("media_type", media_type, 255)
        mt = media_type or mimetypes.guess_type(path)[0]
        with self._lock:
            step = self._file_step(path, step)
            blob = self._ids.next()
            size = self._writer.add_blob_bytes(blob, bytes(data))
            self._file_record(path, step, mt, blob, size)

    def log_dir(self, prefix: str, local_dir: str | os.PathLike[str]) -> int:
        """Uploads every file below a folder as ``prefix/relative/path``; returns how many."""
        self._check_open()
        check_path("directory prefix", prefix)
        root = Path(local_dir)
        if not root.is_dir():
            raise NotADirectoryError(f"cannot log {str(root)!r} as {prefix!r}: it is not a folder")
        files = sorted(p for p in root.rglob("*") if p.is_file())
        for p in files:
            self.log_file(f"{prefix}/{p.relative_to(root).as_posix()}", p)
        return len(files)

    def log_image(self, path: str, image: Any, *, step: int | None = None) -> None:
        """Logs an image (PIL image or array) as PNG in the file series ``path``.

        ``step`` defaults to one past the last image of this series.
        """
        from .images import to_png

        self._check_open()
        check_path("image path", path)
        data = to_png(image)
        with self._lock:
            if step is None:
                step = self._file_steps.get(path, 0)
            self.log_bytes(path, data, step=step, media_type="image/png")

    # ---- lineage -------------------------------------------------------------------------------

    def log_lineage(
        self,
        direction: Literal["input", "output"],
        name: str,
        *,
        kind: str = "dataset",
        version: str = "",
        digest: str = "",
        uri: str = "",
    ) -> None:
        """Records that this run used (input) or produced (output) an artifact."""
        self._check_open()
        if direction not in ("input", "output"):
            raise ValidationError(f"lineage direction: {direction!r} is not 'input' or 'output'")
        if kind not in _ARTIFACT_KINDS:
            raise ValidationError(f"lineage kind: {kind!r} is not one of {', '.join(_ARTIFACT_KINDS)}")
        if not isinstance(name, str) or not name:
            raise ValidationError(f"lineage name must be a non-empty str, not {name!r}")
        check_text("lineage name", name, MAX_NAME_LEN)
        check_text("lineage version", version, MAX_NAME_LEN)
        check_text("lineage digest", digest, MAX_NAME_LEN)
        check_text("lineage uri", uri, MAX_URI_LEN)
        body = {"direction": direction, "kind": kind, "name": name, "version": version}
        if digest:
            body["digest"] = digest
        if uri:
            body["uri"] = uri
        self._emit("lineage", body)

    def log_input(self, name: str, *, kind: str = "dataset", version: str = "", digest: str = "", uri: str = "") -> None:
        """This run used ``name`` (a dataset by default) at ``version``."""
        self.log_lineage("input", name, kind=kind, version=version, digest=digest, uri=uri)

    def log_output(self, name: str, *, kind: str = "model", version: str = "", digest: str = "", uri: str = "") -> None:
        """This run produced ``name`` (a model by default) at ``version``."""
        self.log_lineage("output", name, kind=kind, version=version, digest=digest, uri=uri)

    # ---- state ---------------------------------------------------------------------------------

    def finish(
        self,
        state: Literal["finished", "failed", "aborted"] = "finished",
        message: str = "",
        *,
        timeout: float | None = None,
    ) -> bool:
        """Ends the run and waits (at most ``timeout`` s) for delivery; True when all arrived.

        What is not delivered in time stays in the spool; a message on stderr says how to
        upload it with ``runstream-sync``. Calling it again does nothing.
        """
        if state not in _TERMINAL:
            raise ValidationError(f"run state: {state!r} is not one of {', '.join(_TERMINAL)}")
        check_text("state message", message, MAX_STRING_LEN)
        with self._lock:
            if self._state is not None:
                return True
            self._emit("run_state", {"state": state, "message": message} if message else {"state": state})
            self._state = state
        _exit.forget(self)
        if self._monitor is not None:
            self._monitor.stop()
        return self._close(self.flush_timeout if timeout is None else timeout)

    def fail(self, message: str = "", *, timeout: float | None = None) -> bool:
        return self.finish("failed", message, timeout=timeout)

    def abort(self, message: str = "", *, timeout: float | None = None) -> bool:
        return self.finish("aborted", message, timeout=timeout)

    def _close(self, timeout: float) -> bool:
        self._writer.mark_closed()
        self._writer.close()
        if self._sender is None:
            where = "" if self.mode == "offline" else " (another process is sending it)"
            self._say(f"runstream: run {self.id} is kept in {self.spool_dir}{where}; upload it with: "
                      f"runstream-sync {self.spool_dir}")
            return False
        delivery = self._sender
        total = delivery.pending_bytes()
        bar = ProgressBar(f"runstream: sending run {self.id}", total) if total and not quiet() else None
        ok = delivery.close(timeout, (lambda: bar.update(total - delivery.pending_bytes())) if bar else None)
        if bar is not None:
            bar.update(total - delivery.pending_bytes())
            bar.close()
        if ok:
            if os.environ.get("RUNSTREAM_KEEP_SPOOL", "") not in ("1", "true", "yes"):
                _remove_spool(self.spool_dir)
            return True
        nbytes, nlines = SpoolReader(self.spool_dir).pending()
        why = f" ({delivery.blocked})" if delivery.blocked else f" within {timeout:g} s"
        self._say(
            f"runstream: {nlines} spooled record(s) ({human_bytes(nbytes)}) of run {self.id} were not "
            f"delivered{why}; they are kept in {self.spool_dir}. Upload them with: "
            f"runstream-sync {self.spool_dir}"
        )
        return False

    def flush(self, timeout: float = 60.0) -> bool:
        """Waits until everything logged so far is delivered; False if ``timeout`` s pass first."""
        delivery = self._sender
        if delivery is None or not delivery.alive:
            return False
        with self._lock:
            target = (self._writer.segment, self._writer.size)
        delivery.nudge()
        deadline = _time.monotonic() + timeout
        pause = 0.002
        while _time.monotonic() < deadline:
            p = delivery.progress()
            if p.inflight is None and (p.segment, p.offset) >= target:
                return True
            if delivery.blocked or not delivery.alive:
                return False
            _time.sleep(pause)
            pause = min(pause * 2, 0.05)
        return False

    @property
    def last_position(self) -> str:
        """The position token of the last write the server acknowledged (for ``min_position``)."""
        return self._sender.last_position if self._sender else ""

    @staticmethod
    def _say(message: str) -> None:
        log.info(message)
        if not quiet():
            try:
                print(message, file=sys.stderr, flush=True)
            except (OSError, ValueError):
                pass

    # ---- context manager -----------------------------------------------------------------------

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.finish("finished")
        elif issubclass(exc_type, KeyboardInterrupt):
            self.finish("aborted", "KeyboardInterrupt")
        else:
            self.finish("failed", _exception_message(exc_type, exc, tb))


def _exception_message(exc_type: Any, exc: Any, tb: Any) -> str:
    import traceback

    text = "".join(traceback.format_exception(exc_type, exc, tb))
    return text[-8000:]


def _remove_spool(directory: Path) -> None:
    import shutil

    shutil.rmtree(directory, ignore_errors=True)


class _Monitor:
    """Samples system metrics and sends a heartbeat, in a daemon thread."""

    def __init__(self, run: Run, interval: float, system_metrics: bool, heartbeat: float = 60.0) -> None:
        self.run = run
        self.interval = interval
        self.heartbeat = heartbeat
        self.system_metrics = system_metrics
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name=f"runstream-monitor-{run.id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _main(self) -> None:
        sampler = None
        if self.system_metrics:
            from .system_metrics import SystemSampler

            sampler = SystemSampler()
        step = 0
        last_beat = _time.monotonic()
        wait = self.interval if sampler is not None else self.heartbeat
        while not self._stop.wait(wait):
            try:
                if sampler is not None:
                    self.run._log_system(sampler.sample(), step)
                    step += 1
                if _time.monotonic() - last_beat >= self.heartbeat:
                    last_beat = _time.monotonic()
                    if self.run._state is None:
                        self.run._emit("run_state", {"state": "heartbeat"})
            except Exception as e:  # never take the training process down
                log.debug("runstream monitor: %r", e)


# ---- init ----------------------------------------------------------------------------------------


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number") from None


def _run_exists_on_server(url: str, token: str | None, project: str, run_id: str) -> bool | None:
    """True or False from the server, None when it cannot tell now."""
    t = Transport(url, token, timeout=5.0)
    try:
        r = t.request("GET", f"/api/v1/projects/{project}/runs/{run_id}")
    except TransportError:
        return None
    finally:
        t.close()
    if r.status == 200:
        return True
    if r.status == 404 and "run" in r.error_message():
        return False
    return None


def init(
    project: str | None = None,
    name: str | None = None,
    config: Mapping[str, Any] | Any = None,
    tags: list[str] | tuple[str, ...] | None = None,
    run_id: str | None = None,
    *,
    url: str | None = None,
    token: str | None = None,
    mode: Mode | None = None,
    experiment: str = "",
    description: str = "",
    parent_run: str | None = None,
    spool_dir: str | os.PathLike[str] | None = None,
    capture_environment: bool = True,
    capture_git: bool = True,
    capture_packages: bool = True,
    system_metrics: bool = True,
    system_metrics_interval: float = 15.0,
    flush_timeout: float | None = None,
    handle_exit: bool = True,
    sender: Literal["process", "thread"] | None = None,
) -> Run:
    """Starts a run (or resumes ``run_id``) and returns it.

    ``url``, ``token`` and ``project`` default to ``RUNSTREAM_URL``, ``RUNSTREAM_TOKEN`` and
    ``RUNSTREAM_PROJECT`` (project ``default`` when unset); ``mode`` to ``RUNSTREAM_MODE`` or
    ``"online"``. Offline runs only write the spool (``spool_dir``, default
    ``RUNSTREAM_SPOOL_DIR`` or ~/.runstream/spool); upload them later with ``runstream-sync``.

    ``config`` is stored under ``params/`` (nested dicts flatten: ``params/optimizer/lr``).
    Reproducibility facts (git, command, packages, machine) are stored under ``sys/`` unless
    ``capture_environment`` is False; system metrics are sampled every
    ``system_metrics_interval`` seconds unless ``system_metrics`` is False.

    With ``handle_exit`` the run is finished when the interpreter exits: failed on an uncaught
    exception, aborted on KeyboardInterrupt or SIGTERM, finished otherwise.

    ``sender`` (default ``RUNSTREAM_SENDER`` or ``"process"``) chooses where delivery runs: a
    child process, so it never competes with training for the GIL, or a thread of this process.
    """
    project = check_id("project", project or os.environ.get("RUNSTREAM_PROJECT") or "default")
    mode = mode or os.environ.get("RUNSTREAM_MODE") or "online"  # type: ignore[assignment]
    if mode not in ("online", "offline"):
        raise ValidationError(f"mode: {mode!r} is not 'online' or 'offline'")
    url = url or os.environ.get("RUNSTREAM_URL") or None
    token = token or os.environ.get("RUNSTREAM_TOKEN") or None
    if mode == "online" and not url:
        raise ValueError(
            "no server to log to: pass url= or set RUNSTREAM_URL, or log offline with "
            "mode='offline' and upload later with runstream-sync"
        )
    if url:
        Transport(url, token)  # checks the url's form
    if name is not None:
        check_text("name", name, MAX_NAME_LEN)
    check_text("experiment", experiment, MAX_NAME_LEN)
    check_text("description", description, MAX_STRING_LEN)
    if parent_run is not None:
        check_id("parent run", parent_run)
    tag_list = [check_tag(t) for t in (tags or ())]
    flat_config = flatten_attributes(as_mapping(config), "params") if config is not None else {}
    root = Path(spool_dir) if spool_dir is not None else default_root()
    timeout = flush_timeout if flush_timeout is not None else _env_float("RUNSTREAM_FLUSH_TIMEOUT", 60.0)

    sender = sender or os.environ.get("RUNSTREAM_SENDER") or "process"  # type: ignore[assignment]
    if sender not in ("process", "thread"):
        raise ValidationError(f"sender: {sender!r} is not 'process' or 'thread'")
    resumed = run_id is not None
    if run_id is None:
        run_id = uuid.uuid4().hex
    check_id("run", run_id)
    created: dict[str, Any] = {"name": name or run_id}
    if experiment:
        created["experiment"] = experiment
    if description:
        created["description"] = description
    if parent_run:
        created["parent_run"] = parent_run
    create: dict[str, Any] | None = created
    if resumed:
        if run_dir(root, project, run_id).joinpath("run.json").exists():
            create = None  # this machine's spool already holds its creation
        elif mode == "online" and url and _run_exists_on_server(url, token, project, run_id):
            create = None

    run = Run(
        project=project,
        run_id=run_id,
        url=url,
        token=token,
        mode=mode,  # type: ignore[arg-type]
        spool_root=root,
        create=create,
        flush_timeout=timeout,
        sender=sender,  # type: ignore[arg-type]
    )
    if resumed and create is None and name is not None:
        run["sys/name"] = name
    if flat_config:
        run._emit("attributes_set", {"attributes": flat_config})
    if tag_list:
        run.add_tags(*tag_list)
    if capture_environment:
        from .capture import environment_capture
        from .system_metrics import describe

        try:
            cap = environment_capture(git=capture_git, packages=capture_packages)
            cap.attributes.update(describe())
            run.update(cap.attributes)
            for path, data in cap.files.items():
                run.log_bytes(path, data)
        except (OSError, ValueError, TypeError) as e:  # capture is best effort
            log.debug("runstream: environment capture failed: %r", e)
    run._monitor = _Monitor(run, system_metrics_interval, system_metrics)
    run._monitor.start()
    if handle_exit:
        _exit.track(run)
    return run


def digest_file(path: str | os.PathLike[str]) -> str:
    """``sha256:<hex>`` of a file, for lineage digests."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return f"sha256:{h.hexdigest()}"


def digest_dir(path: str | os.PathLike[str]) -> str:
    """``sha256:<hex>`` over a folder's relative paths and file contents, in sorted order."""
    root = Path(path)
    h = hashlib.sha256()
    for p in sorted(q for q in root.rglob("*") if q.is_file()):
        h.update(p.relative_to(root).as_posix().encode() + b"\0")
        h.update(digest_file(p).encode() + b"\0")
    return f"sha256:{h.hexdigest()}"

