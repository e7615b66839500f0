"""Images to PNG: PIL images through PIL, arrays (numpy, or anything numpy can read) with zlib.

The PNG writer needs only numpy and the standard library, so logging an array works without PIL.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any


def is_pil_image(obj: Any) -> bool:
    return any(c.__module__.startswith("PIL.") and c.__name__ == "Image" for c in type(obj).__mro__)


def to_png(image: Any) -> bytes:
    """PNG bytes of a PIL image or an array of shape (H, W), (H, W, 1|3|4) or (1|3|4, H, W).

    Float arrays are read as 0..1 and clipped; integer arrays must hold 0..255; bool arrays are
    black and white.
    """
    if is_pil_image(image):
        import io

        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return buf.getvalue()
    try:
        import numpy as np
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise TypeError(
            f"cannot log {type(image).__name__} as an image: pass a PIL image, or install numpy "
            "to log arrays"
        ) from e
    if not hasattr(image, "__array__") and not isinstance(image, (list, tuple)):
        raise TypeError(
            f"an image must be a PIL image or an array (numpy, or array-like), not "
            f"{type(image).__name__}"
        )
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[2] not in (1, 3, 4):
        a = np.transpose(a, (1, 2, 0))  # channels first (torch's layout) to channels last
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise ValueError(
            f"an image array must have shape (H, W), (H, W, 1|3|4) or (1|3|4, H, W), not {a.shape}"
        )
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"an image array must not be empty, its shape is {a.shape}")
    if a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    elif np.issubdtype(a.dtype, np.floating):
        if not np.all(np.isfinite(a)):
            raise ValueError("a float image array holds NaN or infinity")
        a = np.round(np.clip(a, 0.0, 1.0) * 255.0).astype(np.uint8)
    elif np.issubdtype(a.dtype, np.integer):
        if a.dtype != np.uint8:
            lo, hi = int(a.min()), int(a.max())
            if lo < 0 or hi > 255:
                raise ValueError(
                    f"an integer image array must hold values in 0..255, this one spans {lo}..{hi}"
                )
            a = a.astype(np.uint8)
    else:
        raise TypeError(f"an image array must hold numbers, not {a.dtype}")
    return encode_png(np.ascontiguousarray(a))


def encode_png(a: Any) -> bytes:
    """PNG of a C-contiguous uint8 array of shape (H, W), (H, W, 3) or (H, W, 4)."""
    height, width = a.shape[0], a.shape[1]
    color_type = {2: 0, 3: {3: 2, 4: 6}.get(a.shape[2] if a.ndim == 3 else 0, 0)}[a.ndim]
    channels = 1 if a.ndim == 2 else a.shape[2]
    row_bytes = width * channels
    raw = a.tobytes()
    # Filter type 0 (none) before each row.
    scan = b"".join(b"\x00" + raw[i * row_bytes : (i + 1) * row_bytes] for i in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(scan, 6))
        + chunk(b"IEND", b"")
    )
