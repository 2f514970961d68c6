"""Content hashes: an image's id is the hash of its bytes, so identical images are one image."""

from __future__ import annotations

import hashlib
import json

ID_BYTES = 16


def content_id(data: bytes) -> str:
    """128-bit BLAKE2b of the bytes, as 32 hex characters."""
    return hashlib.blake2b(data, digest_size=ID_BYTES).hexdigest()


def canonical(value):
    """JSON for what json cannot write itself: sets as sorted lists (their order changes from one
    process to the next with Python's hash seed), anything else as its str."""
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    return str(value)


def fingerprint(payload) -> str:
    """A short hash of a JSON-serialisable value (configs, versions), the same in every process."""
    text = json.dumps(payload, sort_keys=True, default=canonical)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()
