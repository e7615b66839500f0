"""The JSON form of events, as the server's ``POST /api/v1/projects/{project}/events`` takes it.

Floats are written with ``repr``, the shortest string that reads back to the same double, so a
value survives the trip bit for bit; NaN and the infinities, which JSON cannot write, become the
strings ``"NaN"``, ``"Infinity"`` and ``"-Infinity"`` the server reads.

Event ids are client-generated UUIDs, the server's idempotency key. Drawing a random UUID per
event costs more than the rest of a logging call, so a writer draws 80 random bits once and
counts in the last 48 bits: ids stay unique across processes and restarts at the cost of one
increment per call.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import json
import math
import numbers
import os
from collections.abc import Iterable, Mapping
from typing import Any

from ._validate import (
    MAX_STRING_LEN,
    ValidationError,
    check_path,
    check_text,
    time_ms,
)

_SPECIAL = {"nan": '"NaN"', "inf": '"Infinity"', "-inf": '"-Infinity"'}


def float_json(v: float) -> str:
    """A float as a JSON token: the shortest exact decimal, or a quoted NaN / infinity."""
    s = repr(v)
    if s[-1] > "9":  # 'nan', 'inf', '-inf' end in a letter; every finite repr ends in a digit
        return _SPECIAL[s]
    return s


def float_value(v: float) -> float | str:
    """A float as a JSON value for ``json.dumps``: itself, or the string the server reads."""
    if math.isfinite(v):
        return v
    return "NaN" if v != v else ("Infinity" if v > 0 else "-Infinity")


class EventIds:
    """Unique event ids: 80 random bits per instance, a 40-bit call number, an 8-bit index.

    One logging call takes one call number and numbers its events 0..255 within it, so a call
    that writes ten events pays for one counter increment.
    """

    __slots__ = ("prefix", "_calls")

    def __init__(self) -> None:
        r = bytearray(os.urandom(10))
        r[6] = (r[6] & 0x0F) | 0x40  # version 4
        r[8] = (r[8] & 0x3F) | 0x80  # RFC 4122 variant
        h = r.hex()
        #: ``xxxxxxxx-xxxx-4xxx-yxxx-``; 12 more hex digits make an id.
        self.prefix = f"{h[0:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-"
        self._calls = itertools.count(1)  # thread-safe under the GIL

    def next_call(self) -> int:
        return next(self._calls)

    def id(self, call: int, index: int) -> str:
        return f"{self.prefix}{call:010x}{index:02x}"

    def next(self) -> str:
        """An id for a call that writes one event."""
        return f"{self.prefix}{next(self._calls):010x}00"


def dumps(obj: Any) -> str:
    """Compact JSON with non-ASCII kept as is (the server reads UTF-8)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


# ---- attributes -------------------------------------------------------------------------------


def attribute_value(path: str, value: Any) -> Any:
    """The JSON value of one attribute, typed as the server reads it.

    int, float (NaN and infinities tagged), bool, str, datetime / date, and collections of
    strings (a string set). Anything else is a programmer error and raises.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, numbers.Integral):
        i = int(value)
        if not -(1 << 63) <= i < (1 << 63):
            raise ValidationError(f"attribute {path!r}: {i} does not fit a 64-bit signed integer")
        return i
    if isinstance(value, numbers.Real):
        f = float(value)
        if math.isfinite(f):
            return f
        return {"$float": float_value(f)}
    if isinstance(value, str):
        check_text(f"attribute {path!r}", value, MAX_STRING_LEN)
        return value
    if isinstance(value, _dt.datetime):
        return {"$datetime": time_ms(value, f"attribute {path!r}")}
    if isinstance(value, _dt.date):
        d = _dt.datetime(value.year, value.month, value.day, tzinfo=_dt.timezone.utc)
        return {"$datetime": time_ms(d, f"attribute {path!r}")}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value) if isinstance(value, (set, frozenset)) else list(value)
        for i, item in enumerate(items):
            if not isinstance(item, str):
                raise TypeError(
                    f"attribute {path!r}: a list is stored as a set of strings, but item {i} is "
                    f"{type(item).__name__} ({item!r}); log numbers as a series with run.log(), "
                    "or set each one under its own path"
                )
            check_text(f"attribute {path!r}[{i}]", item, MAX_STRING_LEN)
        if not items:
            raise ValidationError(f"attribute {path!r}: an empty list cannot be stored")
        return {"$set": items}
    if getattr(value, "shape", None) == () and hasattr(value, "item"):
        return attribute_value(path, value.item())  # numpy scalars and 0-d arrays
    if value is None:
        raise TypeError(
            f"attribute {path!r} is None; delete an attribute with `del run[path]`, "
            "or leave the key out"
        )
    raise TypeError(
        f"attribute {path!r} must be an int, float, bool, str, datetime or list of str, "
        f"not {type(value).__name__}"
    )


def as_mapping(config: Any, what: str = "config") -> Mapping[str, Any]:
    """A mapping from a dict, a dataclass, an argparse Namespace or any object with __dict__."""
    if isinstance(config, Mapping):
        return config
    import dataclasses

    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    if hasattr(config, "__dict__") and not isinstance(config, type):
        return {k: v for k, v in vars(config).items() if not k.startswith("_")}
    raise TypeError(
        f"{what} must be a mapping (dict), a dataclass or a namespace, not {type(config).__name__}"
    )


def flatten_attributes(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings flattened to slash paths, each value typed for the server."""
    out: dict[str, Any] = {}

    def walk(m: Mapping[str, Any], pre: str) -> None:
        for k, v in m.items():
            if not isinstance(k, str):
                raise TypeError(f"attribute keys must be str, {pre or 'the top level'} has {k!r}")
            path = check_path("attribute path", f"{pre}/{k}" if pre else k)
            if isinstance(v, Mapping) or (
                hasattr(v, "__dataclass_fields__") and not isinstance(v, type)
            ):
                inner = as_mapping(v, f"attribute {path!r}")
                if not inner:
                    continue
                walk(inner, path)
            else:
                out[path] = attribute_value(path, v)

    walk(values, prefix)
    return out


def flatten_metrics(values: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    """Nested metric dicts as (slash path, value) pairs: ``{"train": {"loss": 1}}`` -> train/loss."""
    for k, v in values.items():
        if not isinstance(k, str):
            raise TypeError(f"metric names must be str, not {type(k).__name__} ({k!r})")
        path = f"{prefix}/{k}" if prefix else k
        if isinstance(v, Mapping):
            yield from flatten_metrics(v, path)
        else:
            yield path, v
