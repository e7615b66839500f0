"""The spool: an append-only, on-disk queue of one run's events and files.

A logging call encodes its events and ``write()``s them to the current segment before it
returns. Data handed to the kernel survives the death of the process (even SIGKILL), so nothing
a call accepted can be lost; no fsync is made, since surviving a power cut is not promised.

Layout of one run's directory (documented for other tools in the package README)::

    run.json              what the run is: format, url, project, run id, creation time
    segments/00000001.seg
    segments/00000002.seg     one or more per writer session; a writer never reopens one
    blobs/<event id>          copies of logged files, uploaded then removed
    progress.json         how far the sender has got: {"segment", "offset", "inflight"}
    rejected.jsonl        records the server refused as invalid, as JSON, with its answer
    lock                  held (flock) by the one process sending this run
    closed                present once the run reached a final state and its writer ended

A segment is a sequence of framed records (see ``_records``): binary float points referring to
a template of series names, JSON events batches, and file upload records. A segment is complete
once a later segment exists; a last record that is short or fails its CRC belongs to a call
that never returned and is skipped.

Exactly-once delivery: before the sender posts bytes ``[start, end)`` of a segment it records
them as ``inflight``; after the server's answer it records ``end`` as the new offset. After a
crash the inflight range is sent again, encoded the same way, so every event carries the same
id and the server drops the copies it already has.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import _records as rec

#: Version of the directory layout, written to run.json.
FORMAT = 1
#: A writer starts a new segment past this many bytes.
SEGMENT_BYTES = 64 << 20

RUN_FILE = "run.json"
PROGRESS_FILE = "progress.json"
REJECTED_FILE = "rejected.jsonl"
LOCK_FILE = "lock"
CLOSED_FILE = "closed"
SEGMENTS = "segments"
BLOBS = "blobs"


def default_root() -> Path:
    """Where runs are spooled unless told otherwise: ``$RUNSTREAM_SPOOL_DIR`` or ~/.runstream/spool."""
    env = os.environ.get("RUNSTREAM_SPOOL_DIR")
    if env:
        return Path(env)
    return Path.home() / ".runstream" / "spool"


def run_dir(root: Path, project: str, run: str) -> Path:
    return Path(root) / project / run


def segment_name(n: int) -> str:
    return f"{n:08d}.seg"


def list_segments(directory: Path) -> list[int]:
    """Segment numbers present in a run directory, in order."""
    try:
        names = os.listdir(directory / SEGMENTS)
    except FileNotFoundError:
        return []
    out = []
    for name in names:
        stem, dot, ext = name.partition(".")
        if ext == "seg" and stem.isdigit():
            out.append(int(stem))
    out.sort()
    return out


def write_json_atomic(path: Path, obj: Any) -> None:
    """Replaces a small JSON file so a reader sees the old or the new content, never a mix."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, separators=(",", ":"))
    os.replace(tmp, path)


def read_run_info(directory: Path) -> dict[str, Any]:
    with open(Path(directory) / RUN_FILE, encoding="utf-8") as f:
        info: dict[str, Any] = json.load(f)
    if info.get("format") != FORMAT:
        raise ValueError(
            f"{directory}: spool format {info.get('format')!r} is not {FORMAT}; "
            "use the runstream client version that wrote it"
        )
    return info


class SpoolWriter:
    """Appends records to a run's spool. One per process and run; callers serialise writes."""

    def __init__(self, directory: Path, info: dict[str, Any]) -> None:
        self.dir = Path(directory)
        (self.dir / SEGMENTS).mkdir(parents=True, exist_ok=True)
        (self.dir / BLOBS).mkdir(exist_ok=True)
        run_file = self.dir / RUN_FILE
        if not run_file.exists():
            write_json_atomic(run_file, {"format": FORMAT, **info})
        self._fd = -1
        self._size = 0
        self.segment = 0
        #: Template records written so far, written again at the start of every new segment.
        self._templates: list[bytes] = []
        self._open_next()

    def _open_next(self) -> None:
        existing = list_segments(self.dir)
        n = max([self.segment, *existing], default=0) + 1
        while True:
            path = self.dir / SEGMENTS / segment_name(n)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
                break
            except FileExistsError:  # another writer of the same run took it
                n += 1
        old = self._fd
        self._fd, self._size, self.segment = fd, 0, n
        if old >= 0:
            os.close(old)
        if self._templates:
            self._write_all(b"".join(self._templates))

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            k = os.write(self._fd, view)
            self._size += k
            view = view[k:]

    def add_template(self, record: bytes, keep: bool = True) -> None:
        """Writes a template record; with ``keep`` it is repeated in later segments."""
        self.write(record)
        if keep:
            self._templates.append(record)

    def write(self, data: bytes) -> None:
        """Hands one or more complete records to the kernel; returns once all bytes are written."""
        n = os.write(self._fd, data)
        self._size += n
        if n != len(data) or self._size >= SEGMENT_BYTES:
            self.after_write(data, n)

    @property
    def fd(self) -> int:
        """The current segment's descriptor, for callers that inline ``write`` on a hot path
        (they must call ``after_write`` when fewer bytes were written or the segment is full)."""
        return self._fd

    def add_size(self, n: int) -> int:
        self._size += n
        return self._size

    def after_write(self, data: bytes, written: int) -> None:
        """Finishes a short write (a full disk, a signal mid-write) and starts a new segment when
        this one is full."""
        view = memoryview(data)[written:]
        while view:
            k = os.write(self._fd, view)
            self._size += k
            view = view[k:]
        if self._size >= SEGMENT_BYTES:
            self._open_next()

    @property
    def size(self) -> int:
        """Bytes written to the current segment."""
        return self._size

    def mark_closed(self) -> None:
        """Notes that the run's writer ended cleanly (the run reached a final state)."""
        (self.dir / CLOSED_FILE).touch()

    def blob_path(self, name: str) -> Path:
        return self.dir / BLOBS / name

    def add_blob_file(self, name: str, source: Path) -> int:
        """Copies a file into the spool, so later changes to it do not change what is uploaded."""
        dest = self.blob_path(name)
        shutil.copyfile(source, dest)
        return dest.stat().st_size

    def add_blob_bytes(self, name: str, data: bytes) -> int:
        dest = self.blob_path(name)
        with open(dest, "wb") as f:
            f.write(data)
        return len(data)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


@dataclass
class Progress:
    """How far the sender has got: everything before (segment, offset) is delivered."""

    segment: int = 0
    offset: int = 0
    #: (segment, start, end) being sent; delivered again, identically, after a crash.
    inflight: tuple[int, int, int] | None = None

    @classmethod
    def load(cls, directory: Path) -> Progress:
        try:
            with open(Path(directory) / PROGRESS_FILE, encoding="utf-8") as f:
                d = json.load(f)
        except FileNotFoundError:
            return cls()
        inflight = d.get("inflight")
        return cls(d["segment"], d["offset"], tuple(inflight) if inflight else None)  # type: ignore[arg-type]

    def save(self, directory: Path) -> None:
        write_json_atomic(
            Path(directory) / PROGRESS_FILE,
            {
                "segment": self.segment,
                "offset": self.offset,
                "inflight": list(self.inflight) if self.inflight else None,
            },
        )


@dataclass
class Unit:
    """Records ``[start, end)`` of one segment, sent together.

    ``kind`` is ``"points"`` (binary float points, sent as protobuf), ``"events"`` (JSON events
    batches), ``"file"`` (one file record) or ``"none"`` (templates only: nothing to send).
    ``records`` holds (kind byte, payload start, payload end) into ``data``, whose first byte is
    at offset ``base`` of the segment; ``templates`` resolves the points records.
    """

    segment: int
    start: int
    end: int
    kind: str
    data: bytes
    base: int
    records: list[tuple[int, int, int]]
    templates: dict[int, rec.Template]

    def payloads(self) -> list[bytes]:
        """The payloads of the records other than templates."""
        return [self.data[a:b] for k, a, b in self.records if k != rec.TEMPLATE]

    def split(self) -> list[Unit]:
        """One unit per record (templates join the record after them)."""
        out: list[Unit] = []
        pending: list[tuple[int, int, int]] = []
        start = self.start
        for r in self.records:
            pending.append(r)
            if r[0] == rec.TEMPLATE:
                continue
            end = self.base + r[2] + rec.CRC.size
            out.append(Unit(self.segment, start, end, self.kind, self.data, self.base, pending, self.templates))
            pending, start = [], end
        if pending:
            out.append(Unit(self.segment, start, self.end, "none", self.data, self.base, pending, self.templates))
        return out

    def json_lines(self) -> list[str]:
        """The records as JSON text (points as the events they stand for), for people to read."""
        from ._encode import float_json

        out = []
        for k, a, b in self.records:
            if k == rec.TEMPLATE:
                continue
            if k != rec.POINTS:
                out.append(self.data[a:b].decode("utf-8"))
                continue
            tno, call, step, t, *values = rec.POINTS_HEAD.unpack_from(self.data, a) + tuple(
                memoryview(self.data[a + rec.POINTS_HEAD.size:b]).cast("d"))
            tpl = self.templates.get(tno)
            if tpl is None:
                out.append(json.dumps({"unknown_template": tno}))
                continue
            import uuid

            events = [
                '{"id":"%s","run":%s,"float_points":{"series":%s,"steps":[%d],"times_ms":[%d],"values":[%s]}}'
                % (uuid.UUID(bytes=tpl.event_id(call, i)), json.dumps(tpl.run), json.dumps(name, ensure_ascii=False),
                   step, t, float_json(v))
                for i, (name, v) in enumerate(zip(tpl.series, values))
            ]
            out.append('{"events":[' + ",".join(events) + "]}")
        return out


class SpoolLock:
    """An exclusive, non-blocking lock on a run's spool, released when the process dies."""

    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / LOCK_FILE
        self._fd = -1

    def acquire(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                return False
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def holder(self) -> str:
        try:
            return self.path.read_text().strip() or "?"
        except OSError:
            return "?"

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class SpoolReader:
    """Reads a run's spool from its recorded progress, in units ready to send."""

    def __init__(self, directory: Path, max_bytes: int = 8 << 20) -> None:
        self.dir = Path(directory)
        self.max_bytes = max_bytes
        self.progress = Progress.load(self.dir)
        #: Records skipped because a dead writer left them unfinished.
        self.torn_records = 0
        #: The templates of segment ``_tseg`` found in its bytes before ``_tscanned``.
        self._tseg = -1
        self._tscanned = 0
        self._templates: dict[int, rec.Template] = {}

    def _segment_path(self, n: int) -> Path:
        return self.dir / SEGMENTS / segment_name(n)

    def _learn(self, data: bytes, records: list[tuple[int, int, int]]) -> None:
        for k, a, b in records:
            if k == rec.TEMPLATE:
                no = rec.template_number(data[a:b])
                if no not in self._templates:
                    self._templates[no] = rec.Template(data[a:b])

    def _templates_for(self, seg: int, offset: int) -> dict[int, rec.Template]:
        """The templates of ``seg`` defined before ``offset``, scanning the segment if needed."""
        if self._tseg != seg:
            self._tseg, self._tscanned, self._templates = seg, 0, {}
        if self._tscanned < offset:
            with open(self._segment_path(seg), "rb") as f:
                f.seek(self._tscanned)
                data = f.read(offset - self._tscanned)
            records, _, _ = rec.parse(data)
            self._learn(data, records)
            self._tscanned = offset
        return self._templates

    def next_unit(self) -> Unit | None:
        """The next unit to send, or None when everything written so far is delivered.

        An inflight range recorded before a crash comes first, exactly as it was.
        """
        p = self.progress
        if p.inflight is not None:
            seg, start, end = p.inflight
            templates = self._templates_for(seg, start)
            with open(self._segment_path(seg), "rb") as f:
                f.seek(start)
                data = f.read(end - start)
            records, _, _ = rec.parse(data)
            self._learn(data, records)
            self._tscanned = max(self._tscanned, end)
            kind = next((_KIND[k] for k, _, _ in records if k != rec.TEMPLATE), "none")
            return Unit(seg, start, end, kind, data, start, records, templates)
        while True:
            segments = list_segments(self.dir)
            current = [s for s in segments if s >= p.segment]
            if not current:
                return None
            seg = current[0]
            if seg != p.segment:  # the recorded one is done and gone: start the next
                p.segment, p.offset = seg, 0
            # Look for a later segment before reading: if one exists now, this one is complete.
            complete = len(current) > 1
            unit = self._read_unit(seg, p.offset)
            if unit is not None:
                return unit
            if not complete:
                return None
            self._finish_segment(seg)

    def _read_unit(self, seg: int, offset: int) -> Unit | None:
        try:
            f = open(self._segment_path(seg), "rb")
        except FileNotFoundError:
            return None
        with f:
            templates = self._templates_for(seg, offset)
            f.seek(offset)
            data = f.read(self.max_bytes)
            records, _, _ = rec.parse(data)
            if not records:
                need = rec.needed(data, 0)
                if len(data) < self.max_bytes or need <= len(data):
                    return None  # unfinished record: written now, or torn by a dead writer
                data += f.read(need - len(data))  # one record longer than the read
                records, _, _ = rec.parse(data)
                if not records:
                    return None
        kind = "none"
        take: list[tuple[int, int, int]] = []
        for r in records:
            k = r[0]
            if k != rec.TEMPLATE:
                this = _KIND[k]
                if kind == "none":
                    kind = this
                elif this != kind or kind == "file":
                    break
            take.append(r)
        self._learn(data, take)
        end = offset + take[-1][2] + rec.CRC.size
        self._tscanned = max(self._tscanned, end)
        return Unit(seg, offset, end, kind, data, offset, take, templates)

    def _finish_segment(self, seg: int) -> None:
        """Moves past a complete segment, counting a torn last record, and deletes it."""
        path = self._segment_path(seg)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            size = self.progress.offset
        if size > self.progress.offset:
            self.torn_records += 1
        self.progress.segment, self.progress.offset = seg + 1, 0
        self.progress.save(self.dir)
        try:
            path.unlink()
        except FileNotFoundError:
            pass

    def begin(self, unit: Unit) -> None:
        """Records a unit as inflight before it is sent."""
        if self.progress.inflight != (unit.segment, unit.start, unit.end):
            self.progress.inflight = (unit.segment, unit.start, unit.end)
            self.progress.save(self.dir)

    def commit(self, unit: Unit) -> None:
        """Records a unit as delivered."""
        self.progress.segment, self.progress.offset = unit.segment, unit.end
        self.progress.inflight = None
        self.progress.save(self.dir)

    def reject(self, unit: Unit, answer: str) -> None:
        """Sets aside records the server refused as invalid, as JSON with its answer, and moves
        past them."""
        with open(self.dir / REJECTED_FILE, "ab") as f:
            for line in unit.json_lines():
                r = {"time_ms": int(time.time() * 1000), "answer": answer, "line": line}
                f.write(json.dumps(r).encode() + b"\n")
        self.commit(unit)

    def pending(self) -> tuple[int, int]:
        """(bytes, records) written but not yet delivered; templates and a torn tail not counted."""
        nbytes = nrecords = 0
        p = self.progress
        start = p.inflight[1] if p.inflight else p.offset
        for seg in list_segments(self.dir):
            if seg < p.segment:
                continue
            try:
                with open(self._segment_path(seg), "rb") as f:
                    if seg == p.segment:
                        f.seek(start)
                    data = f.read()
            except FileNotFoundError:
                continue
            nbytes += len(data)
            records, _, _ = rec.parse(data)
            nrecords += sum(1 for k, _, _ in records if k != rec.TEMPLATE)
        return nbytes, nrecords


_KIND = {rec.POINTS: "points", rec.EVENTS: "events", rec.FILE: "file"}
