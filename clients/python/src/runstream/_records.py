"""The framing of spool records, and the binary record of a point-logging call.

Every record is ``kind (1 byte) | payload length (u32 LE) | payload | CRC-32 (u32 LE)``, the
CRC covering the kind, the length and the payload. A record is handed to the kernel with one
``write()``; a last record that is short or fails its CRC belongs to a call that never returned.

Kinds:

- ``T`` template: ``number (u32 LE)`` then UTF-8 JSON
  ``{"run": RUN, "ids": 20 HEX DIGITS, "series": [NAME, ...]}``; numbered within a writer
  session, and written again at the start of each of its segments, so a segment is readable
  alone.
- ``P`` points: ``template (u32) | call (u64) | step (i64) | time_ms (i64) | one f64 per series``,
  all little-endian. Point ``i`` is the event with id ``ids`` followed by ``call`` as 10 hex
  digits and ``i`` as 2 (a UUID).
- ``J`` events: an events batch body as ``POST .../events`` takes it, ``{"events": [...]}``.
- ``F`` file: ``{"file": {...}}``, a file upload record.
"""

from __future__ import annotations

import json
import struct
import zlib
from typing import Any

HEAD = struct.Struct("<BI")
CRC = struct.Struct("<I")
POINTS_HEAD = struct.Struct("<IQqq")
TEMPLATE_NO = struct.Struct("<I")
#: Kind, length and CRC: what a record adds to its payload.
OVERHEAD = HEAD.size + CRC.size

TEMPLATE, POINTS, EVENTS, FILE = b"T"[0], b"P"[0], b"J"[0], b"F"[0]
KINDS = frozenset({TEMPLATE, POINTS, EVENTS, FILE})

crc32 = zlib.crc32


def frame(kind: int, payload: bytes) -> bytes:
    """One whole record."""
    head = HEAD.pack(kind, len(payload)) + payload
    return head + CRC.pack(crc32(head))


def points_struct(n: int) -> struct.Struct:
    """The whole record of a points call of ``n`` series, CRC left out: kind and length first."""
    return struct.Struct(f"<BIIQqq{n}d")


def points_payload_struct(n: int) -> struct.Struct:
    return struct.Struct(f"<IQqq{n}d")


def template_payload(number: int, run: str, ids_hex: str, series: list[str]) -> bytes:
    body = json.dumps({"run": run, "ids": ids_hex, "series": series}, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8")
    return TEMPLATE_NO.pack(number) + body


class Template:
    """A decoded template: what a points record refers to."""

    __slots__ = ("run", "ids", "series", "unpack", "size")

    def __init__(self, payload: bytes | memoryview) -> None:
        d: dict[str, Any] = json.loads(bytes(payload[TEMPLATE_NO.size:]))
        self.run: str = d["run"]
        self.ids: bytes = bytes.fromhex(d["ids"])
        self.series: list[str] = d["series"]
        s = points_payload_struct(len(self.series))
        self.unpack = s.unpack_from
        self.size = s.size

    def event_id(self, call: int, index: int) -> bytes:
        """The 16 bytes of point ``index``'s event id."""
        return self.ids + ((call << 8) | index).to_bytes(6, "big")


def template_number(payload: bytes | memoryview) -> int:
    return TEMPLATE_NO.unpack_from(payload)[0]


def parse(data: bytes, start: int = 0) -> tuple[list[tuple[int, int, int]], int, bool]:
    """Whole records of ``data`` from ``start``: ([(kind, payload start, payload end)], end of
    the last whole record, whether a bad record (failed CRC, unknown kind) stopped the scan).
    Scanning stops at the first record that is short or bad."""
    out: list[tuple[int, int, int]] = []
    view = memoryview(data)
    off, n = start, len(data)
    head, crc_from = HEAD.unpack_from, CRC.unpack_from
    bad = False
    while off + OVERHEAD <= n:
        kind, plen = head(data, off)
        pend = off + 5 + plen
        if pend + 4 > n:
            break
        if kind not in KINDS or crc32(view[off:pend]) != crc_from(data, pend)[0]:
            bad = True
            break
        out.append((kind, off + 5, pend))
        off = pend + 4
    return out, off, bad


def needed(data: bytes, start: int) -> int:
    """Bytes the record at ``start`` needs in all, from its header (0 if the header is short)."""
    if len(data) - start < HEAD.size:
        return 0
    return HEAD.unpack_from(data, start)[1] + OVERHEAD
