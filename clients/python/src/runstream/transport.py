"""HTTP to the runstream server over one kept-alive connection (standard library only)."""

from __future__ import annotations

import email.utils
import http.client
import json
import socket
import ssl
import time
import urllib.parse
from dataclasses import dataclass
from typing import IO, Any

from ._version import __version__

#: Statuses worth retrying: the server is busy, restarting or briefly unable to answer.
RETRYABLE = frozenset({408, 425, 429, 500, 502, 503, 504})


class TransportError(Exception):
    """The server could not be reached or did not answer (retryable)."""


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    @property
    def retryable(self) -> bool:
        return self.status in RETRYABLE

    def retry_after(self) -> float | None:
        """Seconds the server asked to wait (Retry-After as seconds or an HTTP date), if any."""
        raw = self.headers.get("retry-after")
        if not raw:
            return None
        raw = raw.strip()
        if raw.isdigit():
            return float(raw)
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())

    def error_message(self) -> str:
        """The server's error message, or the body as text."""
        try:
            return str(self.json()["error"]["message"])
        except Exception:
            return self.body[:500].decode("utf-8", "replace")


class Transport:
    """Requests to one server; reconnects after any connection failure. Not thread-safe."""

    def __init__(self, url: str, token: str | None, timeout: float = 60.0) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"server url {url!r} must look like http://host:port")
        self.url = url.rstrip("/")
        self._https = parsed.scheme == "https"
        self._host = parsed.hostname
        self._port = parsed.port
        self._base = parsed.path.rstrip("/")
        self._timeout = timeout
        self._headers = {"User-Agent": f"runstream-python/{__version__}"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self._https:
                self._conn = http.client.HTTPSConnection(
                    self._host, self._port, timeout=self._timeout, context=ssl.create_default_context()
                )
            else:
                self._conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def request(
        self,
        method: str,
        path: str,
        body: bytes | IO[bytes] | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> Response:
        """One request; raises TransportError when no answer came back."""
        h = dict(self._headers)
        if headers:
            h.update(headers)
        conn = self._connection()
        try:
            if timeout is not None:
                conn.timeout = timeout
                if conn.sock is not None:
                    conn.sock.settimeout(timeout)
            conn.request(method, self._base + path, body=body, headers=h)
            r = conn.getresponse()
            data = r.read()
            resp = Response(r.status, {k.lower(): v for k, v in r.getheaders()}, data)
            if r.will_close:
                self.close()
            return resp
        except (OSError, http.client.HTTPException, socket.timeout) as e:
            self.close()
            raise TransportError(f"{method} {self.url}{path}: {e}") from e
        finally:
            if timeout is not None and self._conn is not None:
                self._conn.timeout = self._timeout
                if self._conn.sock is not None:
                    self._conn.sock.settimeout(self._timeout)

    def post_events(self, project: str, body: bytes, content_type: str = "application/json") -> Response:
        return self.request(
            "POST",
            f"/api/v1/projects/{urllib.parse.quote(project, safe='')}/events",
            body,
            {"Content-Type": content_type},
        )

    def upload(
        self,
        project: str,
        run: str,
        path: str,
        stream: IO[bytes],
        size: int,
        query: dict[str, Any],
    ) -> Response:
        qs = urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        target = (
            f"/api/v1/projects/{urllib.parse.quote(project, safe='')}/runs/"
            f"{urllib.parse.quote(run, safe='')}/files/{urllib.parse.quote(path, safe='/')}"
        )
        return self.request(
            "PUT",
            f"{target}?{qs}" if qs else target,
            stream,
            {"Content-Type": "application/octet-stream", "Content-Length": str(size)},
        )
