"""Just enough protobuf to send float points as a ``runstream.v1.EventBatch``, by hand.

Only these fields are written (see schema/proto/runstream/v1/events.proto)::

    EventBatch  { repeated Event events = 1; }
    Event       { bytes id = 1; string run = 4; FloatPoints float_points = 26; }
    FloatPoints { string series = 1; repeated int64 steps = 2 [packed];
                  repeated int64 times_ms = 3 [packed]; repeated double values = 4 [packed]; }

Doubles go as their 8 little-endian bytes (``array('d').tobytes()``), so no float is ever
turned into text. Envelope fields the server fills (workspace, project, ingest time, actor,
schema version) are left unset.
"""

from __future__ import annotations

import sys
from array import array

if sys.byteorder != "little":  # pragma: no cover - every platform the client runs on today
    raise ImportError("runstream's protobuf encoder assumes a little-endian machine")

_ONE = [bytes((i,)) for i in range(128)]


def varint(v: int) -> bytes:
    """An int64 / uint64 as a protobuf varint (negatives as their 64-bit two's complement)."""
    if 0 <= v < 128:
        return _ONE[v]
    # Unrolled for the sizes steps usually have; a loop of appends costs several times more.
    if 0 < v < 0x4000:
        return bytes(((v & 0x7F) | 0x80, v >> 7))
    if 0 < v < 0x200000:
        return bytes(((v & 0x7F) | 0x80, ((v >> 7) & 0x7F) | 0x80, v >> 14))
    if 0 < v < 0x10000000:
        return bytes(((v & 0x7F) | 0x80, ((v >> 7) & 0x7F) | 0x80, ((v >> 14) & 0x7F) | 0x80, v >> 21))
    if v < 0:
        v += 1 << 64
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def _ld(tag: bytes, data: bytes) -> bytes:
    return tag + varint(len(data)) + data


class Column:
    """The merged points of one series: encoded chunks of steps and times, and raw doubles."""

    __slots__ = ("id", "run", "series", "steps", "times", "values")

    def __init__(self, id_: bytes, run: bytes, series: bytes) -> None:
        self.id, self.run, self.series = id_, run, series
        self.steps: list[bytes] = []
        self.times: list[bytes] = []
        self.values: array[float] = array("d")

    def encode(self) -> bytes:
        points = (
            _ld(b"\x0a", self.series)
            + _ld(b"\x12", b"".join(self.steps))
            + _ld(b"\x1a", b"".join(self.times))
            + _ld(b"\x22", self.values.tobytes())
        )
        event = _ld(b"\x0a", self.id) + _ld(b"\x22", self.run) + _ld(b"\xd2\x01", points)
        return _ld(b"\x0a", event)


def event_batch(columns: list[Column]) -> bytes:
    """An ``EventBatch`` of one float_points event per column, in order."""
    return b"".join(c.encode() for c in columns)
