"""Argument checks that mirror the server's schema rules.

Everything a logging call is given is checked here, in the calling thread, so that a programmer
error raises at once with a message naming the argument, instead of surfacing minutes later as
a batch the server refuses. The limits are the server's (``schema/src/event.rs``).
"""

from __future__ import annotations

import datetime as _dt
import math
import numbers
import re
from typing import Any, NoReturn

#: Largest step: 2^53 - 1, the largest integer a JavaScript chart shows exactly.
MAX_STEP = (1 << 53) - 1
#: Latest time accepted, in ms since the epoch (2200-01-01); earlier than 1970 is refused too.
MAX_TIME_MS = 7_258_118_400_000
#: Longest attribute, series or file path, in UTF-8 bytes.
MAX_PATH_LEN = 512
#: Longest string value, line or description, in UTF-8 bytes.
MAX_STRING_LEN = 65_536
#: Longest tag, in UTF-8 bytes.
MAX_TAG_LEN = 256
#: Longest name, experiment, lineage name, version or digest, in UTF-8 bytes.
MAX_NAME_LEN = 1024
#: Longest lineage URI, in UTF-8 bytes.
MAX_URI_LEN = 4096
#: Longest run or project id.
MAX_ID_LEN = 128

_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class ValidationError(ValueError):
    """An argument breaks a rule of the runstream schema (a programmer error)."""


def fail(what: str, message: str) -> NoReturn:
    raise ValidationError(f"{what}: {message}")


def check_id(kind: str, value: Any) -> str:
    """A run or project id: 1 to 128 of letters, digits, '.', '_', '-', starting alphanumeric."""
    if not isinstance(value, str):
        raise TypeError(f"{kind} id must be a str, not {type(value).__name__}")
    if not value:
        fail(f"{kind} id", "is empty")
    if len(value) > MAX_ID_LEN:
        fail(f"{kind} id", f"is {len(value)} characters long, at most {MAX_ID_LEN} are allowed")
    if not _ID_RE.match(value):
        fail(
            f"{kind} id {value!r}",
            "must start with a letter or digit and hold only letters, digits, '.', '_' and '-'",
        )
    return value


def check_path(what: str, value: Any) -> str:
    """A slash-separated path such as ``train/loss``: no empty segment, no control character."""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__} ({value!r})")
    if not value:
        fail(what, "is empty")
    n = len(value.encode("utf-8"))
    if n > MAX_PATH_LEN:
        fail(f"{what} {value[:40]!r}...", f"is {n} bytes long, at most {MAX_PATH_LEN} are allowed")
    m = _CONTROL_RE.search(value)
    if m:
        fail(f"{what} {value!r}", f"holds the control character {m.group()!r}")
    if "//" in value or value.startswith("/") or value.endswith("/"):
        fail(f"{what} {value!r}", "has an empty segment (a leading, trailing or doubled '/')")
    return value


def check_text(what: str, value: Any, limit: int = MAX_STRING_LEN) -> str:
    """A string of at most ``limit`` UTF-8 bytes without NUL characters."""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    if len(value) * 4 > limit and len(value.encode("utf-8")) > limit:
        fail(what, f"is {len(value.encode('utf-8'))} bytes long, at most {limit} are allowed")
    if "\x00" in value:
        fail(what, "must not contain NUL characters")
    return value


def check_tag(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"a tag must be a str, not {type(value).__name__} ({value!r})")
    if not value:
        fail("tag", "is empty")
    return check_text(f"tag {value[:40]!r}", value, MAX_TAG_LEN)


def check_step(value: Any, what: str = "step") -> int:
    """A step: an integer (not a bool) in 0..2^53-1."""
    if type(value) is not int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{what} must be an int, not {type(value).__name__} ({value!r})")
        value = int(value)
    if not 0 <= value <= MAX_STEP:
        fail(what, f"{value} is outside 0..{MAX_STEP}")
    return value


def time_ms(value: Any, what: str = "time") -> int:
    """Milliseconds since the epoch from seconds (int or float, as ``time.time()``) or a datetime.

    A naive datetime is taken as local time, as ``datetime.timestamp()`` does.
    """
    if isinstance(value, _dt.datetime):
        ms = int(round(value.timestamp() * 1000))
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):
        f = float(value)
        if not math.isfinite(f):
            fail(what, f"{value!r} is not a finite number of seconds")
        ms = int(round(f * 1000))
    else:
        raise TypeError(
            f"{what} must be seconds since the epoch (as time.time() returns) or a datetime, "
            f"not {type(value).__name__}"
        )
    if not 0 <= ms <= MAX_TIME_MS:
        fail(what, f"{value!r} is outside 1970-01-01..2200-01-01")
    return ms


def metric_value(name: str, value: Any) -> float:
    """A metric value as a float: ints, floats, bools, numpy scalars and 0-d arrays or tensors."""
    if isinstance(value, numbers.Real):
        return float(value)
    if getattr(value, "shape", None) == () or getattr(value, "ndim", None) == 0:
        # 0-d numpy arrays, and tensors of frameworks that mirror numpy (torch, jax).
        item = value.item() if hasattr(value, "item") else value
        if isinstance(item, numbers.Real):
            return float(item)
    if isinstance(value, str):
        raise TypeError(
            f"metric {name!r} is a str ({value[:40]!r}); metrics are numbers, log text with "
            "run.log_text() or set it with run[path] = value"
        )
    raise TypeError(
        f"metric {name!r} must be a number (int, float, numpy scalar or 0-d array), "
        f"not {type(value).__name__}"
    )
