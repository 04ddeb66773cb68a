"""Content hashes: of arrays (keys of results computed from them) and of files (cache entries, weights files)."""
import hashlib
import json
from pathlib import Path
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


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB blocks (64 hex digits)."""
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def text_key(*parts: Any) -> str:
    """A 32-hex-digit name for a JSON-able description (a cache entry's identity)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]
