"""Helpers shared by the integrations."""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any



def loggable_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters an attribute can hold: numbers, bools, strings, lists of strings.

    Libraries pass callables, None and objects among their parameters; those are stored as
    their ``str()`` when short, and left out otherwise, rather than failing the training run.
    """
    out: dict[str, Any] = {}
    for k, v in params.items():
        key = str(k).replace("/", "_") or "_"
        if v is None:
            continue
        if isinstance(v, (bool, str)) or (isinstance(v, numbers.Real) and not isinstance(v, complex)):
            out[key] = v
        elif isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v) and v:
            out[key] = list(v)
        elif isinstance(v, Mapping):
            inner = loggable_params(v)
            if inner:
                out[key] = inner
        else:
            text = str(v)
            if len(text) <= 1000:
                out[key] = text
    return out
