"""Programmer errors raise at once with a clear message, and write nothing to the spool.

Also unit tests of the pieces below the API: encoding, merging, the spool reader, PNG, HTTP
answers. None of these needs the server.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import math
import struct
import uuid
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from PIL import Image

import runstream
from runstream import _records
from runstream._encode import EventIds, float_json
from runstream._records import frame
from runstream._wire import Column, event_batch, varint
from runstream.images import to_png
from runstream.sender import merge_lines, merge_points
from runstream.spool import SpoolReader, SpoolWriter, Unit, list_segments
from runstream.transport import Response


@pytest.fixture
def run(tmp_path: Path) -> runstream.Run:
    r = runstream.init(project="p", name="v", mode="offline", spool_dir=tmp_path, capture_environment=False,
                       system_metrics=False, handle_exit=False)
    yield r
    r.finish(timeout=1)


def spool_bytes(run: runstream.Run) -> int:
    return sum(p.stat().st_size for p in (run.spool_dir / "segments").iterdir())


def segment_units(directory: Path) -> list[Unit]:
    """Each segment's records as one unit, read plainly (no progress kept, nothing deleted)."""
    out = []
    for seg in sorted((directory / "segments").iterdir()):
        data = seg.read_bytes()
        records, _, _ = _records.parse(data)
        templates = {_records.template_number(data[a:b]): _records.Template(data[a:b])
                     for k, a, b in records if k == _records.TEMPLATE}
        out.append(Unit(int(seg.stem), 0, len(data), "mixed", data, 0, records, templates))
    return out


def spool_events(run: runstream.Run) -> list[dict[str, Any]]:
    out = []
    for unit in segment_units(run.spool_dir):
        for line in unit.json_lines():
            out.extend(json.loads(line).get("events", []))
    return out


# ---- a reference protobuf decoder, written plainly from the .proto -----------------------------


def read_varint(b: bytes, i: int) -> tuple[int, int]:
    shift = v = 0
    while True:
        byte = b[i]
        i += 1
        v |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return v, i


def pb_fields(b: bytes) -> list[tuple[int, Any]]:
    out, i = [], 0
    while i < len(b):
        key, i = read_varint(b, i)
        field, wt = key >> 3, key & 7
        if wt == 0:
            v, i = read_varint(b, i)
        elif wt == 1:
            v, i = b[i:i + 8], i + 8
        elif wt == 2:
            n, i = read_varint(b, i)
            v, i = b[i:i + n], i + n
        else:
            raise AssertionError(f"wire type {wt}")
        out.append((field, v))
    return out


def packed_int64(b: bytes) -> list[int]:
    out, i = [], 0
    while i < len(b):
        v, i = read_varint(b, i)
        out.append(v - (1 << 64) if v >= 1 << 63 else v)
    return out


def decode_batch(body: bytes) -> list[dict[str, Any]]:
    """EventBatch of float_points events as dicts; values as the raw 8 bytes of each double."""
    events = []
    for field, ev in pb_fields(body):
        assert field == 1
        e: dict[str, Any] = {}
        for f, v in pb_fields(ev):
            if f == 1:
                e["id"] = str(uuid.UUID(bytes=v))
            elif f == 4:
                e["run"] = v.decode()
            elif f == 26:
                fp: dict[str, Any] = {"steps": [], "times_ms": [], "values": []}
                for g, w in pb_fields(v):
                    if g == 1:
                        fp["series"] = w.decode()
                    elif g == 2:
                        fp["steps"] += packed_int64(w)
                    elif g == 3:
                        fp["times_ms"] += packed_int64(w)
                    elif g == 4:
                        fp["values"] += [w[i:i + 8] for i in range(0, len(w), 8)]
                e["float_points"] = fp
            else:
                raise AssertionError(f"unexpected Event field {f}")
        events.append(e)
    return events


ERRORS: list[tuple[str, Callable[[runstream.Run], Any], type, str]] = [
    ("metric name empty", lambda r: r.log({"": 1.0}), runstream.ValidationError, "metric name: is empty"),
    ("metric name empty segment", lambda r: r.log({"a//b": 1.0}), runstream.ValidationError, "empty segment"),
    ("metric name control char", lambda r: r.log({"a\nb": 1.0}), runstream.ValidationError, "control character"),
    ("metric name too long", lambda r: r.log({"x" * 513: 1.0}), runstream.ValidationError, "at most 512"),
    ("metric name not str", lambda r: r.log({3: 1.0}), TypeError, "metric names must be str"),
    ("metric value str", lambda r: r.log({"loss": "0.5"}), TypeError, "log text with run.log_text()"),
    ("metric value None", lambda r: r.log({"loss": None}), TypeError, "must be a number"),
    ("metric value list", lambda r: r.log({"loss": [1.0]}), TypeError, "must be a number"),
    ("metric value array", lambda r: r.log({"loss": np.ones(3)}), TypeError, "must be a number"),
    ("metrics not a dict", lambda r: r.log([("a", 1.0)]), TypeError, "metrics must be a dict"),
    ("step negative", lambda r: r.log({"a": 1.0}, step=-1), runstream.ValidationError, "outside 0.."),
    ("step too large", lambda r: r.log({"a": 1.0}, step=2**53), runstream.ValidationError, "outside 0.."),
    ("step float", lambda r: r.log({"a": 1.0}, step=1.5), TypeError, "step must be an int"),
    ("step bool", lambda r: r.log({"a": 1.0}, step=True), TypeError, "step must be an int"),
    ("time before 1970", lambda r: r.log({"a": 1.0}, time=-5), runstream.ValidationError, "outside 1970"),
    ("time str", lambda r: r.log({"a": 1.0}, time="now"), TypeError, "seconds since the epoch"),
    ("time NaN", lambda r: r.log({"a": 1.0}, time=math.nan), runstream.ValidationError, "finite"),
    ("attribute None", lambda r: r.__setitem__("a", None), TypeError, "is None"),
    ("attribute list of ints", lambda r: r.__setitem__("a", [1, 2]), TypeError, "set of strings"),
    ("attribute object", lambda r: r.__setitem__("a", object()), TypeError, "must be an int, float"),
    ("attribute huge int", lambda r: r.__setitem__("a", 2**70), runstream.ValidationError, "64-bit"),
    ("attribute path", lambda r: r.__setitem__("a/", 1), runstream.ValidationError, "empty segment"),
    ("attribute NUL", lambda r: r.__setitem__("a", "x\0y"), runstream.ValidationError, "NUL"),
    ("tag empty", lambda r: r.add_tags(""), runstream.ValidationError, "tag: is empty"),
    ("tag not str", lambda r: r.add_tags(5), TypeError, "a tag must be a str"),
    ("tag too long", lambda r: r.add_tags("t" * 300), runstream.ValidationError, "at most 256"),
    ("text not str", lambda r: r.log_text("console", 5), TypeError, "must be a str"),
    ("lineage direction", lambda r: r.log_lineage("sideways", "d"), runstream.ValidationError, "direction"),
    ("lineage kind", lambda r: r.log_input("d", kind="table"), runstream.ValidationError, "lineage kind"),
    ("lineage name", lambda r: r.log_output(""), runstream.ValidationError, "non-empty"),
    ("file missing", lambda r: r.log_file("f.txt", "/no/such/file"), FileNotFoundError, "not a file"),
    ("bytes not bytes", lambda r: r.log_bytes("f.txt", "text"), TypeError, "data must be bytes"),
    ("image 1-d", lambda r: r.log_image("img", np.zeros(5)), ValueError, "shape"),
    ("image out of range", lambda r: r.log_image("img", np.full((2, 2), 300)), ValueError, "0..255"),
    ("image NaN", lambda r: r.log_image("img", np.full((2, 2), np.nan)), ValueError, "NaN"),
    ("image type", lambda r: r.log_image("img", "cat.png"), TypeError, "PIL image or an array"),
    ("finish state", lambda r: r.finish("done"), runstream.ValidationError, "run state"),
]


@pytest.mark.parametrize("case", ERRORS, ids=[c[0] for c in ERRORS])
def test_programmer_errors_raise_and_write_nothing(run: runstream.Run, case: Any) -> None:
    _, call, exc, message = case
    run.log({"a": 1.0, "b": 2.0})  # a known set of names: errors must also be caught on the fast path
    before = spool_bytes(run)
    with pytest.raises(exc, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        call(run)
    assert spool_bytes(run) == before
    assert run.state == "running"


def test_fast_path_rechecks_values(run: runstream.Run) -> None:
    run.log({"a": 1.0, "b": 2.0})
    with pytest.raises(TypeError):
        run.log({"a": 1.0, "b": "two"})
    run.log({"a": math.nan, "b": True}, step=7)  # special values take the slow path and are kept
    ev = spool_events(run)[-2:]
    assert [e["float_points"]["values"] for e in ev] == [["NaN"], [1.0]]
    assert [e["float_points"]["steps"] for e in ev] == [[7], [7]]


def test_logging_after_finish_raises(run: runstream.Run) -> None:
    run.finish()
    with pytest.raises(runstream.RunClosedError, match="finished"):
        run.log({"a": 1.0})
    with pytest.raises(runstream.RunClosedError):
        run["x"] = 1


def test_init_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RUNSTREAM_URL", raising=False)
    with pytest.raises(ValueError, match="no server to log to"):
        runstream.init(spool_dir=tmp_path)
    with pytest.raises(runstream.ValidationError, match="project id"):
        runstream.init(project="my project", mode="offline", spool_dir=tmp_path)
    with pytest.raises(runstream.ValidationError, match="run id"):
        runstream.init(run_id="-x", mode="offline", spool_dir=tmp_path)
    with pytest.raises(runstream.ValidationError, match="mode"):
        runstream.init(mode="later", spool_dir=tmp_path)
    with pytest.raises(ValueError, match="must look like http"):
        runstream.init(url="localhost:8080", spool_dir=tmp_path)
    with pytest.raises(TypeError, match="config must be a mapping"):
        runstream.init(mode="offline", config=[1, 2], spool_dir=tmp_path)
    assert not list(tmp_path.iterdir()), "a refused init leaves nothing behind"


def test_environment_variables_configure_init(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNSTREAM_PROJECT", "envproj")
    monkeypatch.setenv("RUNSTREAM_MODE", "offline")
    monkeypatch.setenv("RUNSTREAM_SPOOL_DIR", str(tmp_path))
    r = runstream.init(capture_environment=False, system_metrics=False, handle_exit=False)
    assert r.project == "envproj" and r.mode == "offline"
    assert r.spool_dir.parent == tmp_path / "envproj"
    r.finish()


def test_floats_encode_to_the_same_bits() -> None:
    rng = np.random.default_rng(3)
    for bits_ in rng.integers(0, 2**63, 20_000, dtype=np.uint64):
        v = struct.unpack("<d", struct.pack("<Q", int(bits_) | (int(rng.integers(0, 2)) << 63)))[0]
        token = float_json(v)
        back = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}.get(json.loads(token), None) \
            if token.startswith('"') else float(token)
        assert back is not None
        assert (math.isnan(v) and math.isnan(back)) or struct.pack("<d", v) == struct.pack("<d", back)
    assert float_json(-0.0) == "-0.0"


def test_event_ids_are_uuids_and_unique() -> None:
    import uuid

    a, b = EventIds(), EventIds()
    ids = [a.next() for _ in range(1000)] + [b.id(b.next_call(), i) for i in range(256)]
    assert len(set(ids)) == len(ids)
    for i in ids[:5] + ids[-5:]:
        assert uuid.UUID(i).version == 4
    assert a.prefix != b.prefix


def test_merge_is_columnar_deterministic_and_keeps_other_events() -> None:
    lines = [
        b'{"events":[{"id":"00000000-0000-4000-8000-000000000001","run":"r","run_created":{"name":"n"}}]}\n',
        b'{"events":[{"id":"00000000-0000-4000-8000-000000000002","run":"r","float_points":{"series":"a","steps":[0],"times_ms":[5],"values":[1.5]}},'
        b'{"id":"00000000-0000-4000-8000-000000000003","run":"r","float_points":{"series":"b","steps":[0],"times_ms":[5],"values":["NaN"]}}]}\n',
        b'{"events":[{"id":"00000000-0000-4000-8000-000000000004","run":"r","client_time_ms":9,"attributes_set":{"attributes":{"x":1}}}]}\n',
        b'{"events":[{"id":"00000000-0000-4000-8000-000000000005","run":"r","float_points":{"series":"a","steps":[1],"times_ms":[6],"values":[0.1]}},'
        b'{"id":"00000000-0000-4000-8000-000000000006","run":"r","float_points":{"series":"b","steps":[1],"times_ms":[6],"values":[-0.0]}}]}\n',
        b'{"events":[{"id":"00000000-0000-4000-8000-000000000007","run":"r","string_lines":{"series":"c","steps":[0],"times_ms":[7],"lines":["x"]}}]}\n',
    ]
    body, n = merge_lines(lines)
    assert merge_lines(lines) == (body, n), "the same lines must give the same bytes"
    events = json.loads(body)["events"]
    assert n == len(events) == 5
    assert list(events[0]) == ["id", "run", "run_created"]
    a = events[1]
    assert a["id"].endswith("0002")
    assert a["float_points"] == {"series": "a", "steps": [0, 1], "times_ms": [5, 6], "values": [1.5, 0.1]}
    assert events[2]["float_points"]["values"] == ["NaN", -0.0]
    assert b'"values":["NaN",-0.0]' in body
    assert events[3]["attributes_set"] == {"attributes": {"x": 1}}
    assert events[4]["string_lines"]["lines"] == ["x"]


def J(body: bytes) -> bytes:
    return frame(_records.EVENTS, body)


def test_reader_skips_a_torn_record_only_when_its_segment_is_complete(tmp_path: Path) -> None:
    w = SpoolWriter(tmp_path, {"project": "p", "run": "r", "url": ""})
    w.write(J(b'{"events":[1]}') + J(b'{"events":[2]}') + J(b'{"events":[')[:9])  # killed mid-record
    r = SpoolReader(tmp_path)
    unit = r.next_unit()
    assert unit is not None and unit.payloads() == [b'{"events":[1]}', b'{"events":[2]}']
    r.commit(unit)
    assert r.next_unit() is None, "an unfinished record of a live segment is waited for"
    w2 = SpoolWriter(tmp_path, {"project": "p", "run": "r", "url": ""})  # the next writer session
    w2.write(J(b'{"events":[3]}') + frame(_records.FILE, b'{"file":{"path":"x"}}') + J(b'{"events":[4]}'))
    unit = r.next_unit()
    assert unit is not None and unit.payloads() == [b'{"events":[3]}'] and r.torn_records == 1
    r.commit(unit)
    unit = r.next_unit()
    assert unit is not None and unit.kind == "file"
    r.commit(unit)
    # Progress survives a restart of the reader.
    again = SpoolReader(tmp_path).next_unit()
    assert again is not None and again.payloads() == [b'{"events":[4]}']
    assert list_segments(tmp_path) == [w2.segment]


@pytest.mark.parametrize("damage", ["short", "bad crc"])
def test_a_torn_trailing_binary_record_is_ignored(tmp_path: Path, damage: str) -> None:
    """A writer killed in the middle of a points record: the whole records before it are read,
    it is skipped once the segment is complete, and nothing after it is invented."""
    r = runstream.init(project="p", mode="offline", spool_dir=tmp_path, capture_environment=False,
                       system_metrics=False, handle_exit=False)
    for step in range(5):
        r.log({"a": step + 0.25, "b": -step}, step=step)
    seg = r.spool_dir / "segments" / f"{r._writer.segment:08d}.seg"
    data = seg.read_bytes()
    records, _, _ = _records.parse(data)
    k, a, b = records[-1]
    assert k == _records.POINTS
    whole = data[a - 5:b + 4]
    if damage == "short":
        torn = whole[:-7]
    else:
        torn = bytearray(whole)
        torn[-12] ^= 0x40  # a flipped bit in the last value
        torn = bytes(torn)
    with open(seg, "ab") as f:
        f.write(torn)
    reader = SpoolReader(r.spool_dir)
    unit = reader.next_unit()
    while unit is not None and unit.kind == "events":  # run_created, run_state
        reader.commit(unit)
        unit = reader.next_unit()
    assert unit is not None and unit.kind == "points" and unit.end == len(data)
    assert [e["float_points"]["steps"] for e in decode_batch(merge_points(unit)[0])] == [[0, 1, 2, 3, 4]] * 2
    reader.commit(unit)
    assert reader.next_unit() is None, "the live segment's torn tail is waited on, not read"
    assert reader.pending()[1] == 0
    r2 = runstream.init(project="p", mode="offline", run_id=r.id, spool_dir=tmp_path, capture_environment=False,
                        system_metrics=False, handle_exit=False)  # a new writer session completes it
    r2.log({"a": 9.0}, step=9)
    units = []
    while (u := reader.next_unit()) is not None:
        units.append(u)
        reader.commit(u)
    assert reader.torn_records == 1
    points = [e for u in units if u.kind == "points" for e in decode_batch(merge_points(u)[0])]
    assert [(e["float_points"]["series"], e["float_points"]["steps"]) for e in points] == [("a", [9])]
    r2.finish()
    r._writer.close()


def test_inflight_unit_is_sent_again_identically(tmp_path: Path) -> None:
    r = runstream.init(project="p", mode="offline", spool_dir=tmp_path, capture_environment=False,
                       system_metrics=False, handle_exit=False)
    r["x"] = 1
    for step in range(3):
        r.log({"a": step / 3, "b": 1e300}, step=step)
    reader = SpoolReader(r.spool_dir)
    first = reader.next_unit()
    assert first is not None and first.kind == "events"
    reader.commit(first)
    unit = reader.next_unit()
    assert unit is not None and unit.kind == "points"
    reader.begin(unit)
    body = merge_points(unit)[0]
    r.log({"a": 5.0, "b": 6.0}, step=3)  # more arrives while the unit is in flight, then a crash
    again = SpoolReader(r.spool_dir).next_unit()  # a new reader must find the templates itself
    assert again is not None and (again.start, again.end) == (unit.start, unit.end)
    assert merge_points(again)[0] == body, "a unit sent again is the same bytes, so the same ids"
    r.finish()


def test_png_round_trips_through_pil() -> None:
    rng = np.random.default_rng(0)
    for arr in [rng.integers(0, 256, (7, 5), dtype=np.uint8), rng.integers(0, 256, (3, 4, 3), dtype=np.uint8),
                rng.integers(0, 256, (6, 2, 4), dtype=np.uint8), np.array([[True, False]])]:
        decoded = np.asarray(Image.open(io.BytesIO(to_png(arr))))
        want = arr.astype(np.uint8) * 255 if arr.dtype == bool else arr
        assert np.array_equal(decoded, want)


def test_retry_after_is_read_as_seconds_or_a_date() -> None:
    assert Response(503, {"retry-after": "7"}, b"").retry_after() == 7.0
    future = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=30)
    from email.utils import format_datetime

    got = Response(429, {"retry-after": format_datetime(future, usegmt=True)}, b"").retry_after()
    assert got is not None and 25 <= got <= 31
    assert Response(503, {}, b"").retry_after() is None
    assert Response(429, {}, b"").retryable and not Response(400, {}, b"").retryable
    assert Response(400, {}, b'{"error":{"message":"events[0].run: bad"}}').error_message() == "events[0].run: bad"


def test_sender_honours_429_and_503_with_retry_after(tmp_path: Path) -> None:
    """A stand-in server answers 429, then 503, each with Retry-After, then 200."""
    import http.server
    import threading
    import time

    from runstream.sender import Sender
    from runstream.transport import Transport

    answers = [(429, "1"), (503, "1"), (200, None)]
    seen: list[tuple[float, bytes]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            seen.append((time.monotonic(), body))
            status, retry = answers[min(len(seen) - 1, len(answers) - 1)]
            payload = b'{"accepted":1,"duplicates":0,"position":"0:1"}' if status == 200 else b'{"error":{"message":"busy"}}'
            self.send_response(status)
            if retry:
                self.send_header("Retry-After", retry)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        w = SpoolWriter(tmp_path, {"project": "p", "run": "r", "url": ""})
        line = b'{"events":[{"id":"00000000-0000-4000-8000-000000000001","run":"r","run_created":{"name":"n"}}]}'
        w.write(J(line))
        sender = Sender(tmp_path, Transport(f"http://127.0.0.1:{httpd.server_port}", "t"), "p", "r")
        warnings_seen: list[str] = []
        sender.on_warning = warnings_seen.append
        sender.pump(lambda: True, give_up_after=30)
    finally:
        httpd.shutdown()
    assert len(seen) == 3
    assert seen[1][0] - seen[0][0] >= 1.0 and seen[2][0] - seen[1][0] >= 1.0, "Retry-After was not honoured"
    assert seen[0][1] == seen[1][1] == seen[2][1], "a retry sends the same bytes (same event ids)"
    assert sender.stats.events == 1 and sender.reader.next_unit() is None
    assert len(warnings_seen) == 1 and "busy" in warnings_seen[0], "one warning per outage"


def reference_merge(lines: list[bytes]) -> list[dict[str, Any]]:
    """The merge rule, written plainly on decoded JSON: what merge_lines must produce."""
    out: list[dict[str, Any]] = []
    heads: dict[tuple[str, str, str], dict[str, Any]] = {}
    for line in lines:
        for ev in json.loads(line)["events"]:
            kind = next((k for k in ("float_points", "string_lines") if k in ev), None)
            body = ev.get(kind) if kind else None
            if len(ev) == 3 and body is not None and len(body.get("times_ms", [])) == len(body["steps"]):
                col = "values" if kind == "float_points" else "lines"
                key = (ev["run"], kind, body["series"])
                if key in heads:
                    for f in ("steps", "times_ms", col):
                        heads[key][kind][f] += body[f]
                    continue
                heads[key] = ev
            out.append(ev)
    return out


def as_bits(v: Any) -> bytes:
    """A value of the JSON form (a number or "NaN"/"Infinity"/"-Infinity") as its 8 bytes."""
    if isinstance(v, str):
        v = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}[v]
    return struct.pack("<d", float(v))


def test_mixed_binary_and_json_records_keep_their_order_and_merge_by_the_plain_rule(tmp_path: Path) -> None:
    """A real Run writes points (fast and slow paths), text, attributes and files in one stream.
    Units cover the segment in order, each a run of one kind, and each merges exactly as the
    plain rule on the events its records stand for."""
    r = runstream.init(project="p", mode="offline", spool_dir=tmp_path, capture_environment=False,
                       system_metrics=False, handle_exit=False)
    rng = np.random.default_rng(5)
    names = ["loss", 'quote"d', "ünï/cödé", "back\\slash", "a/b"]
    order: list[str] = []
    for step in range(300):
        keys = names if step % 50 else names[:3]  # the set of names changes now and then
        values = {k: float(rng.normal()) for k in keys}
        if step % 17 == 0:
            values["loss"] = math.nan
        if step % 23 == 0:
            values["a/b"] = 7  # an int
        if step % 31 == 0:
            r.log_text("console", f"line {step}")
            order.append(f"text {step}")
        if step % 41 == 0:
            r[f"attr/{step}"] = step
            order.append(f"attr {step}")
        if step % 97 == 0:
            r.log_bytes(f"f{step}.txt", b"x")
            order.append(f"file {step}")
        r.log(values, step=step)
        order.append(f"points {step}")
    r.log({"nested": {"x": 1.0, "y": 2.0}}, step=300)  # nested dicts take the slow path
    order.append("points 300")
    reader = SpoolReader(r.spool_dir, max_bytes=4096)  # small reads: units end mid-run too
    seen: list[str] = []
    position = 0
    while (unit := reader.next_unit()) is not None:
        assert unit.start == position
        position = unit.end
        want = reference_merge([line.encode() for line in unit.json_lines()]) if unit.kind != "file" else []
        if unit.kind == "points":
            body, n = merge_points(unit)
            assert merge_points(unit) == (body, n), "the same records must give the same bytes"
            got = decode_batch(body)
            assert n == len(got) == len(want)
            for g, w in zip(got, want):
                wf = w["float_points"]
                assert (g["id"], g["run"]) == (w["id"], w["run"])
                assert (g["float_points"]["series"], g["float_points"]["steps"], g["float_points"]["times_ms"]) \
                    == (wf["series"], wf["steps"], wf["times_ms"])
                assert g["float_points"]["values"] == [as_bits(v) for v in wf["values"]]
            steps = sorted({s for e in got for s in e["float_points"]["steps"]})
            seen += [f"points {s}" for s in steps]
        elif unit.kind == "events":
            body, n = merge_lines(unit.payloads())
            got = json.loads(body)["events"]
            assert n == len(got) and got == want
            for e in got:
                if "string_lines" in e:
                    seen += [f"text {line.split()[1]}" for line in e["string_lines"]["lines"]]
                elif "attributes_set" in e:
                    seen += [f"attr {k.split('/')[1]}" for k in e["attributes_set"]["attributes"]]
        elif unit.kind == "file":
            seen.append("file " + json.loads(unit.payloads()[0])["file"]["path"][1:-4])
        reader.commit(unit)
    r.finish()
    assert seen == order


def test_floats_are_bit_exact_through_the_binary_path(tmp_path: Path) -> None:
    specials = [0.0, -0.0, math.inf, -math.inf, math.nan, 5e-324, -5e-324, 2.2250738585072014e-308,
                1.7976931348623157e308, 0.1, 1 / 3, -1e-300, 2**53 + 1, -(2**63)]
    quiet_nan_payload = struct.unpack("<d", struct.pack("<Q", 0x7FF8_0000_DEAD_BEEF))[0]
    signalling_like = struct.unpack("<d", struct.pack("<Q", 0xFFF0_0000_0000_0001))[0]
    specials += [quiet_nan_payload, signalling_like]
    rng = np.random.default_rng(11)
    randoms = [struct.unpack("<d", struct.pack("<Q", int(x)))[0]
               for x in rng.integers(0, 2**63, 2000, dtype=np.uint64)]
    values = specials + randoms
    r = runstream.init(project="p", mode="offline", spool_dir=tmp_path, capture_environment=False,
                       system_metrics=False, handle_exit=False)
    for step, v in enumerate(values):
        r.log({"x": v, "y": -v if isinstance(v, float) else v}, step=step)  # the first call: slow path
    reader = SpoolReader(r.spool_dir)
    got: dict[str, list[bytes]] = {"x": [], "y": []}
    while (unit := reader.next_unit()) is not None:
        if unit.kind == "points":
            for e in decode_batch(merge_points(unit)[0]):
                got[e["float_points"]["series"]] += e["float_points"]["values"]
        reader.commit(unit)
    r.finish()
    assert got["x"] == [struct.pack("<d", float(v)) for v in values]
    assert got["y"] == [struct.pack("<d", -v if isinstance(v, float) else float(v)) for v in values]


def test_protobuf_encoder_writes_the_bytes_the_schema_says() -> None:
    assert varint(0) == b"\x00" and varint(127) == b"\x7f" and varint(300) == b"\xac\x02"
    assert varint(-1) == b"\xff" * 9 + b"\x01"
    c = Column(bytes(range(16)), b"r", b"s")
    c.steps.append(varint(1) + varint(300))
    c.times.append(varint(2) + varint(2))
    c.values.extend([1.0, -0.0])
    points = (b"\x0a\x01s"  # series = 1
              + b"\x12\x03\x01\xac\x02"  # steps = 2, packed
              + b"\x1a\x02\x02\x02"  # times_ms = 3, packed
              + b"\x22\x10" + struct.pack("<dd", 1.0, -0.0))  # values = 4, packed doubles
    event = b"\x0a\x10" + bytes(range(16)) + b"\x22\x01r" + b"\xd2\x01" + bytes([len(points)]) + points
    assert event_batch([c]) == b"\x0a" + bytes([len(event)]) + event
    # And a big batch decodes back with the plain decoder.
    big = Column(b"\x01" * 16, b"run", "sé".encode())
    steps = list(range(0, 10**6, 997)) + [2**53]
    big.steps.append(b"".join(map(varint, steps)))
    big.times.append(b"".join(varint(1_700_000_000_000 + s) for s in steps))
    big.values.extend(float(s) / 7 for s in steps)
    (e,) = decode_batch(event_batch([big]))
    assert e["run"] == "run" and e["float_points"]["series"] == "sé"
    assert e["float_points"]["steps"] == steps
    assert e["float_points"]["times_ms"] == [1_700_000_000_000 + s for s in steps]
    assert e["float_points"]["values"] == [struct.pack("<d", float(s) / 7) for s in steps]


def test_segments_rotate_and_read_back_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import runstream.run as run_module
    import runstream.spool as spool_module

    monkeypatch.setattr(run_module, "SEGMENT_BYTES", 1024)
    monkeypatch.setattr(spool_module, "SEGMENT_BYTES", 1024)
    r = runstream.init(project="p", mode="offline", spool_dir=tmp_path, capture_environment=False,
                       system_metrics=False, handle_exit=False)
    for step in range(300):
        r.log({"a": step + 0.5, "b": -1.0}, step=step)  # the inlined fast path
        if step % 50 == 0:
            r.log_text("t", "x" * 100)  # the general path
    r.finish()
    segments = sorted((r.spool_dir / "segments").iterdir())
    assert len(segments) > 10
    for seg in segments[1:]:  # each segment repeats the templates, so it reads alone
        data = seg.read_bytes()
        assert data[0] == _records.TEMPLATE
    reader = SpoolReader(r.spool_dir)
    steps = []
    while (unit := reader.next_unit()) is not None:
        if unit.kind == "points":
            for e in decode_batch(merge_points(unit)[0]):
                if e["float_points"]["series"] == "a":
                    steps += e["float_points"]["steps"]
        reader.commit(unit)
    assert steps == list(range(300))
    assert reader.torn_records == 0
