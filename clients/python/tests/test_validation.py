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
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from PIL import Image

import runstream
from runstream._encode import EventIds, float_json
from runstream.images import to_png
from runstream.sender import merge_lines
from runstream.spool import SpoolReader, SpoolWriter, list_segments
from runstream.transport import Response


@pytest.fixture
def run(tmp_path: Path) -> runstream.Run:
    r = runstream.init(project="p", name="v", mode="offline", spool_dir=tmp_path, capture_environment=False,
                       system_metrics=False, handle_exit=False)
    yield r
    r.finish(timeout=1)


def spool_bytes(run: runstream.Run) -> int:
    return sum(p.stat().st_size for p in (run.spool_dir / "segments").iterdir())


def spool_events(run: runstream.Run) -> list[dict[str, Any]]:
    out = []
    for seg in sorted((run.spool_dir / "segments").iterdir()):
        for line in seg.read_bytes().splitlines():
            rec = json.loads(line)
            out.extend(rec.get("events", []))
    return out


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


def test_reader_skips_a_torn_line_only_when_its_segment_is_complete(tmp_path: Path) -> None:
    w = SpoolWriter(tmp_path, {"project": "p", "run": "r", "url": ""})
    w.write(b'{"events":[1]}\n{"events":[2]}\n{"events":[')  # a writer killed mid-line
    r = SpoolReader(tmp_path)
    unit = r.next_unit()
    assert unit is not None and unit.lines == [b'{"events":[1]}\n', b'{"events":[2]}\n']
    r.commit(unit)
    assert r.next_unit() is None, "an unfinished line of a live segment is waited for"
    w2 = SpoolWriter(tmp_path, {"project": "p", "run": "r", "url": ""})  # the next writer session
    w2.write(b'{"events":[3]}\n{"file":{"path":"x"}}\n{"events":[4]}\n')
    unit = r.next_unit()
    assert unit is not None and unit.lines == [b'{"events":[3]}\n'] and r.torn_lines == 1
    r.commit(unit)
    unit = r.next_unit()
    assert unit is not None and unit.is_file
    r.commit(unit)
    # Progress survives a restart of the reader.
    again = SpoolReader(tmp_path).next_unit()
    assert again is not None and again.lines == [b'{"events":[4]}\n']
    assert list_segments(tmp_path) == [w2.segment]


def test_inflight_unit_is_sent_again_identically(tmp_path: Path) -> None:
    w = SpoolWriter(tmp_path, {"project": "p", "run": "r", "url": ""})
    w.write(b'{"events":[1]}\n{"events":[2]}\n')
    r = SpoolReader(tmp_path)
    unit = r.next_unit()
    assert unit is not None
    r.begin(unit)
    w.write(b'{"events":[3]}\n')  # more arrives while the unit is in flight, then a crash
    again = SpoolReader(tmp_path).next_unit()
    assert again is not None and (again.start, again.end, again.lines) == (unit.start, unit.end, unit.lines)


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
        line = b'{"events":[{"id":"00000000-0000-4000-8000-000000000001","run":"r","run_created":{"name":"n"}}]}\n'
        w.write(line)
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


def test_fast_merge_equals_the_plain_rule(tmp_path: Path) -> None:
    """Lines a real Run writes (fast and slow paths mixed) merge exactly as the plain rule says."""
    r = runstream.init(project="p", mode="offline", spool_dir=tmp_path, capture_environment=False,
                       system_metrics=False, handle_exit=False)
    rng = np.random.default_rng(5)
    names = ["loss", 'quote"d', "ünï/cödé", "back\\slash", "a/b"]
    for step in range(300):
        keys = names if step % 50 else names[:3]  # the set of names changes now and then
        values = {k: float(rng.normal()) for k in keys}
        if step % 17 == 0:
            values["loss"] = math.nan  # slow path
        if step % 23 == 0:
            values["a/b"] = 7  # an int
        if step % 31 == 0:
            r.log_text("console", f"line {step}")
        if step % 41 == 0:
            r[f"attr/{step}"] = step
        r.log(values, step=step)
    r.finish()
    lines = []
    for seg in sorted((r.spool_dir / "segments").iterdir()):
        lines += seg.read_bytes().splitlines(keepends=True)
    for lo, hi in [(0, len(lines)), (3, 120), (100, 101), (57, 290)]:
        body, n = merge_lines(lines[lo:hi])
        got = json.loads(body)["events"]
        want = reference_merge(lines[lo:hi])
        assert n == len(got)
        assert got == want or json.dumps(got) == json.dumps(want)  # NaN != NaN, so compare text too


def test_segments_rotate_and_read_back_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import runstream.run as run_module
    import runstream.spool as spool_module

    monkeypatch.setattr(run_module, "SEGMENT_BYTES", 4096)
    monkeypatch.setattr(spool_module, "SEGMENT_BYTES", 4096)
    r = runstream.init(project="p", mode="offline", spool_dir=tmp_path, capture_environment=False,
                       system_metrics=False, handle_exit=False)
    for step in range(300):
        r.log({"a": step + 0.5, "b": -1.0}, step=step)  # the inlined fast path
        if step % 50 == 0:
            r.log_text("t", "x" * 100)  # the general path
    r.finish()
    assert len(list((r.spool_dir / "segments").iterdir())) > 10
    reader = SpoolReader(r.spool_dir)
    steps = []
    while (unit := reader.next_unit()) is not None:
        for line in unit.lines:
            for ev in json.loads(line)["events"]:
                if ev.get("float_points", {}).get("series") == "a":
                    steps += ev["float_points"]["steps"]
        reader.commit(unit)
    assert steps == list(range(300))
    assert reader.torn_lines == 0
