"""A content hash of arrays, for keys of results computed from them (caches and in-process memos)."""
from __future__ import annotations

import hashlib
from typing import Any


def content_digest(*arrays: Any) -> str:
    """A short SHA-256 of numpy arrays or torch tensors: each one's dtype, shape and bytes, in order."""
    import numpy as np

    h = hashlib.sha256()
    for array in arrays:
        if hasattr(array, "detach"):
            array = array.detach().cpu().numpy()
        array = np.ascontiguousarray(array)
        h.update(f"{array.dtype}{array.shape}".encode())
        h.update(array.reshape(-1).view(np.uint8).data)
    return h.hexdigest()[:24]
