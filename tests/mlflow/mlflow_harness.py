"""Helpers of the MLflow compatibility tests: the runstream server harness of the Python client's
tests (``clients/python/tests/conftest.py``, which also says how the binary is found), and raw
HTTP calls."""

from __future__ import annotations

import importlib.util
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any


REPO = Path(__file__).resolve().parents[2]

# The server harness of the Python client's tests, loaded under its own name.
_spec = importlib.util.spec_from_file_location("runstream_server_harness", REPO / "clients/python/tests/conftest.py")
assert _spec is not None and _spec.loader is not None
harness = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(harness)
Server = harness.Server


def call(server: Server, method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
    """One raw HTTP request to the server: (status, decoded JSON or text)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        server.url + path,
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {token or server.token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def issue_token(server: Server, role: str) -> str:
    status, body = call(
        server, "POST", "/api/v1/tokens", {"principal": f"{role}-bot", "grants": [{"project": "default", "role": role}]}
    )
    assert status == 201, body
    return body["token"]
