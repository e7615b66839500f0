"""The spool: an append-only, on-disk queue of one run's events and files.

A logging call encodes its events and ``write()``s them to the current segment before it
returns. Data handed to the kernel survives the death of the process (even SIGKILL), so nothing
a call accepted can be lost; no fsync is made, since surviving a power cut is not promised.

Layout of one run's directory (documented for other tools in the package README)::

    run.json              what the run is: format, url, project, run id, creation time
    segments/00000001.jsonl
    segments/00000002.jsonl   one or more per writer session; a writer never reopens one
    blobs/<event id>          copies of logged files, uploaded then removed
    progress.json         how far the sender has got: {"segment", "offset", "inflight"}
    rejected.jsonl        lines the server refused as invalid, with its answer
    lock                  held (flock) by the one process sending this run
    closed                present once the run reached a final state and its writer ended

Each segment line is one JSON object followed by ``\\n``: either an events batch body exactly
as ``POST /api/v1/projects/{project}/events`` takes it (``{"events": [...]}``), or a file
upload record ``{"file": {...}}``. A segment is complete once a later segment exists; a last
line without its newline belongs to a call that never returned and is skipped.

Exactly-once delivery: before the sender posts lines ``[start, end)`` of a segment it records
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
    return f"{n:08d}.jsonl"


def list_segments(directory: Path) -> list[int]:
    """Segment numbers present in a run directory, in order."""
    try:
        names = os.listdir(directory / SEGMENTS)
    except FileNotFoundError:
        return []
    out = []
    for name in names:
        stem, dot, ext = name.partition(".")
        if ext == "jsonl" and stem.isdigit():
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
    """Appends lines to a run's spool. One per process and run; callers serialise writes."""

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

    def write(self, data: bytes) -> None:
        """Hands one or more complete lines to the kernel; returns once all bytes are written."""
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
    """Lines ``[start, end)`` of one segment, sent together: event lines, or one file record."""

    segment: int
    start: int
    end: int
    lines: list[bytes]
    is_file: bool


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
        #: Lines skipped because a dead writer left them unfinished.
        self.torn_lines = 0

    def _segment_path(self, n: int) -> Path:
        return self.dir / SEGMENTS / segment_name(n)

    def next_unit(self) -> Unit | None:
        """The next unit to send, or None when everything written so far is delivered.

        An inflight range recorded before a crash comes first, exactly as it was.
        """
        p = self.progress
        if p.inflight is not None:
            seg, start, end = p.inflight
            with open(self._segment_path(seg), "rb") as f:
                f.seek(start)
                data = f.read(end - start)
            lines = data.splitlines(keepends=True)
            return Unit(seg, start, end, lines, is_file=_is_file_line(lines[0]))
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
            f.seek(offset)
            data = f.read(self.max_bytes)
            if not data:
                return None
            lines = data.splitlines(keepends=True)
            if not lines[-1].endswith(b"\n"):
                tail = lines.pop()
                if not lines:
                    if len(data) < self.max_bytes:
                        return None  # unfinished line: written now, or torn by a dead writer
                    # One line longer than the read: read it whole.
                    rest = f.readline()
                    if not rest.endswith(b"\n"):
                        return None
                    lines = [tail + rest]
        if _is_file_line(lines[0]):
            return Unit(seg, offset, offset + len(lines[0]), lines[:1], is_file=True)
        out: list[bytes] = []
        end = offset
        for line in lines:
            if _is_file_line(line):
                break
            out.append(line)
            end += len(line)
        return Unit(seg, offset, end, out, is_file=False)

    def _finish_segment(self, seg: int) -> None:
        """Moves past a complete segment, counting a torn last line, and deletes it."""
        path = self._segment_path(seg)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            size = self.progress.offset
        if size > self.progress.offset:
            self.torn_lines += 1
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
        """Sets aside lines the server refused as invalid, with its answer, and moves past them."""
        with open(self.dir / REJECTED_FILE, "ab") as f:
            for line in unit.lines:
                rec = {"time_ms": int(time.time() * 1000), "answer": answer, "line": line.decode()}
                f.write(json.dumps(rec).encode() + b"\n")
        self.commit(unit)

    def pending(self) -> tuple[int, int]:
        """(bytes, lines) written but not yet delivered."""
        nbytes = nlines = 0
        p = self.progress
        start = p.inflight[1] if p.inflight else p.offset
        for seg in list_segments(self.dir):
            if seg < p.segment:
                continue
            try:
                with open(self._segment_path(seg), "rb") as f:
                    if seg == p.segment:
                        f.seek(start)
                    while chunk := f.read(1 << 20):
                        nbytes += len(chunk)
                        nlines += chunk.count(b"\n")
            except FileNotFoundError:
                continue
        return nbytes, nlines


def _is_file_line(line: bytes) -> bool:
    return line.startswith(b'{"file"')
