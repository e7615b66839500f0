"""Round trip through the real server: everything the client logs is read back exactly."""

from __future__ import annotations

import datetime as dt
import io
import math
import os
import random
import struct
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import runstream

from conftest import PROJECT, Server, point_counts


def api_float(v: Any) -> float:
    if isinstance(v, str):
        return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}[v]
    return float(v)


def bits(f: float) -> int:
    return struct.unpack("<q", struct.pack("<d", f))[0]


def same(a: float, b: float) -> bool:
    """NaN equals NaN; everything else bit for bit (so -0.0 differs from 0.0)."""
    return (math.isnan(a) and math.isnan(b)) or bits(a) == bits(b)


SPECIALS = [math.nan, math.inf, -math.inf, -0.0, 0.0, 5e-324, 2.2250738585072014e-308,
            1.7976931348623157e308, -1.7976931348623157e308, 0.1, 1 / 3, 1e-300, 123456789.123456789]


def random_double(rng: random.Random) -> float:
    return struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0]


def start(server: Server, spool: Path, **kw: Any) -> runstream.Run:
    kw.setdefault("capture_environment", False)
    kw.setdefault("system_metrics", False)
    return runstream.init(project=PROJECT, url=server.url, token=server.token, spool_dir=spool, **kw)


def test_every_kind_of_data_reads_back_exactly(server: Server, spool: Path, tmp_path: Path) -> None:
    rng = random.Random(7)
    run = start(server, spool, name="round trip", config={"optimizer": {"name": "adam", "lr": 1e-3},
                                                           "epochs": 10, "layers": ["conv", "fc"]},
                tags=["baseline", "résumé ✓"], experiment="exp-1", description="every kind of data")

    # Float series: special values, random bit patterns, explicit steps and times, several types.
    expected: dict[str, dict[int, tuple[float, int]]] = {"a/special": {}, "a/random": {}, "b/mixed": {}}
    t0 = 1_700_000_000.0
    for step in range(2000):
        special = SPECIALS[step % len(SPECIALS)]
        randomv = random_double(rng)
        when = t0 + step * 0.25
        run.log({"a": {"special": special, "random": randomv}}, step=step * 3, time=when)
        expected["a/special"][step * 3] = (special, int(round(when * 1000)))
        expected["a/random"][step * 3] = (randomv, int(round(when * 1000)))
    mixed = [1, True, np.float32(0.5), np.float64(-2.75), np.int64(7), np.array(3.5), 10**15]
    for i, v in enumerate(mixed):
        run.log({"b/mixed": v}, step=i, time=dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(seconds=i))
        expected["b/mixed"][i] = (float(v), 1_704_067_200_000 + i * 1000)
    # Automatic steps continue from the last one.
    run.log({"auto": 1.0}, step=100)
    run.log({"auto": 2.0})
    run.log({"auto": 3.0})

    # Attributes of every type; nested paths; a deletion.
    run["params/optimizer/lr"] = 3e-4  # overrides the config
    run["flags/ok"] = True
    run["when"] = dt.datetime(2024, 3, 1, 12, 0, 0, 250000, tzinfo=dt.timezone.utc)
    run["bad/nan"] = math.nan
    run["bad/inf"] = -math.inf
    run["big"] = -(2**63)
    run["text"] = "line one\nline two ✓"
    run["data"] = {"name": "mnist", "split": {"train": 0.9}}
    run["gone"] = 1
    del run["gone"]
    run.remove_tags("baseline")
    run.add_tags("second")

    # String series.
    for i in range(5):
        run.log_text("console", f"epoch {i}: ✓ \"quoted\" \\ back")
    run.log_text("notes", "at step 42", step=42)

    # Files: bytes, a file, a folder, images (numpy and PIL) as a file series.
    payload = os.urandom(300_000)
    (tmp_path / "model.bin").write_bytes(payload)
    run.log_file("checkpoints/model.bin", tmp_path / "model.bin")
    (tmp_path / "model.bin").write_bytes(b"changed after logging")  # the spool kept a copy
    run.log_bytes("report.json", b'{"ok": true}')
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.txt").write_text("A")
    (tree / "sub" / "b.csv").write_text("x,y\n1,2\n")
    assert run.log_dir("outputs", tree) == 2
    gray = (np.arange(64 * 48) % 256).astype(np.uint8).reshape(48, 64)
    rgb = np.random.default_rng(1).random((20, 30, 3))
    chw = np.random.default_rng(2).integers(0, 256, (4, 16, 8), dtype=np.uint8)
    pil = Image.new("RGB", (10, 6), (200, 100, 50))
    for step, img in enumerate([gray, rgb, chw, pil]):
        run.log_image("samples/image", img)

    # Lineage.
    digest = runstream.digest_file(tmp_path / "tree" / "a.txt")
    run.log_input("mnist", version="v3", digest=digest, uri="s3://data/mnist")
    run.log_output("classifier", version="1", digest="sha256:" + "ab" * 32)
    run.log_input("prep-run", kind="run", version="r1")

    assert run.finish(timeout=60)
    position = run.last_position
    assert position
    got = server.run(run.id, min_position=position)

    # Run row.
    r = got["run"]
    assert (r["name"], r["experiment"], r["description"], r["state"]) == (
        "round trip", "exp-1", "every kind of data", "finished")

    # Series, bit for bit.
    for series, want in expected.items():
        steps, times, values = server.points(run.id, series)
        assert steps == sorted(want), series
        for s, t, v in zip(steps, times, values):
            wv, wt = want[s]
            assert same(api_float(v), wv), (series, s, v, wv)
            assert t == wt, (series, s, t, wt)
    assert server.points(run.id, "auto")[0] == [100, 101, 102]
    # Exactly once at the event level too.
    counts = point_counts(server.events(run.id))
    assert counts and max(counts.values()) == 1

    # Attributes.
    a = got["attributes"]
    assert a["params/optimizer/name"] == "adam"
    assert a["params/optimizer/lr"] == 3e-4
    assert a["params/epochs"] == 10
    assert a["params/layers"] == {"$set": ["conv", "fc"]}
    assert a["flags/ok"] is True
    assert a["when"] == {"$datetime": 1_709_294_400_250}
    assert a["bad/nan"] == {"$float": "NaN"}
    assert a["bad/inf"] == {"$float": "-Infinity"}
    assert a["big"] == -(2**63)
    assert a["text"] == "line one\nline two ✓"
    assert a["data/name"] == "mnist" and a["data/split/train"] == 0.9
    assert "gone" not in a
    assert sorted(got["tags"]) == sorted(["résumé ✓", "second"])

    # String series.
    lines = server.lines(run.id, "console")
    assert lines["steps"] == [0, 1, 2, 3, 4]
    assert lines["lines"] == [f"epoch {i}: ✓ \"quoted\" \\ back" for i in range(5)]
    assert server.lines(run.id, "notes")["steps"] == [42]

    # Files.
    assert server.file(run.id, "checkpoints/model.bin")[0] == payload
    body, ctype = server.file(run.id, "report.json")
    assert body == b'{"ok": true}' and ctype == "application/json"
    assert server.file(run.id, "outputs/a.txt")[0] == b"A"
    assert server.file(run.id, "outputs/sub/b.csv")[0] == b"x,y\n1,2\n"
    decoded = []
    for step in range(4):
        body, ctype = server.file(run.id, "samples/image", step=step)
        assert ctype == "image/png"
        decoded.append(np.asarray(Image.open(io.BytesIO(body))))
    assert np.array_equal(decoded[0], gray)
    assert np.array_equal(decoded[1], np.round(rgb * 255).astype(np.uint8))
    assert np.array_equal(decoded[2], np.transpose(chw, (1, 2, 0)))
    assert np.array_equal(decoded[3], np.asarray(pil))

    # Lineage.
    lineage = {(x["direction"], x["kind"], x["name"]): x for x in got["lineage"]}
    assert lineage[("input", "dataset", "mnist")]["version"] == "v3"
    assert lineage[("input", "dataset", "mnist")]["digest"] == digest
    assert lineage[("input", "dataset", "mnist")]["uri"] == "s3://data/mnist"
    assert lineage[("output", "model", "classifier")]["digest"] == "sha256:" + "ab" * 32
    assert ("input", "run", "prep-run") in lineage

    # A run that delivered everything leaves no spool behind.
    assert not (spool / PROJECT / run.id).exists()


def test_resume_appends_to_the_same_run(server: Server, spool: Path) -> None:
    first = start(server, spool, name="resumable")
    first.log({"loss": 1.0}, step=0)
    assert first.finish("aborted", "preempted", timeout=30)
    second = start(server, spool, run_id=first.id, name="ignored on resume")
    second.log({"loss": 0.5}, step=1)
    assert second.finish(timeout=30)
    got = server.run(first.id, min_position=second.last_position)
    assert got["run"]["name"] == "resumable"  # not created again
    assert got["run"]["state"] == "finished"
    assert server.points(first.id, "loss")[0] == [0, 1]


def test_context_manager_marks_failure(server: Server, spool: Path) -> None:
    with pytest.raises(ZeroDivisionError):
        with start(server, spool, name="doomed") as run:
            run.log({"x": 1.0})
            1 / 0
    got = server.run(run.id, min_position=run.last_position)
    assert got["run"]["state"] == "failed"
    assert "ZeroDivisionError" in got["run"]["state_message"]


def test_environment_is_captured(server: Server, tmp_path: Path) -> None:
    """A script in a git work tree with uncommitted changes records commit, diff and the rest."""
    repo = tmp_path / "proj"
    repo.mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    (repo / "train.py").write_text(textwrap.dedent("""
        import sys, runstream
        run = runstream.init(name="captured", spool_dir=sys.argv[1], system_metrics=True,
                             system_metrics_interval=0.2)
        import time; time.sleep(1.0)
        print(run.id, flush=True)
        run.finish()
        print(run.last_position, flush=True)
    """))
    subprocess.run([*git, "add", "train.py"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "init"], cwd=repo, check=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    with open(repo / "train.py", "a") as f:
        f.write("# uncommitted change\n")
    env = dict(os.environ, RUNSTREAM_URL=server.url, RUNSTREAM_TOKEN=server.token, RUNSTREAM_PROJECT=PROJECT)
    out = subprocess.run([sys.executable, str(repo / "train.py"), str(tmp_path / "spool"), "--lr", "0.1"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    run_id, position = out.stdout.split()
    a = server.run(run_id, min_position=position)["attributes"]
    assert a["sys/git/commit"] == commit
    assert a["sys/git/branch"] == "main"
    assert a["sys/git/dirty"] is True
    assert a["sys/command"].endswith("train.py " + str(tmp_path / "spool") + " --lr 0.1")
    assert a["sys/python/version"] == ".".join(map(str, sys.version_info[:3]))
    assert a["sys/hostname"] and a["sys/os/name"]
    diff = server.file(run_id, "sys/git/diff.patch")[0].decode()
    assert "+# uncommitted change" in diff
    reqs = server.file(run_id, "sys/requirements.txt")[0].decode()
    assert "runstream==" in reqs and "numpy==" in reqs
    metrics = server.run(run_id)["metrics"]
    assert metrics["system/cpu_percent"]["count"] >= 2
    assert metrics["system/memory_percent"]["count"] >= 2
    assert metrics["system/process/rss_bytes"]["last"] > 1e6
