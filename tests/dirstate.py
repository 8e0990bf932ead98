"""What the bad-input tests compare: a work dir's names and bytes, hashed."""

import hashlib
from pathlib import Path


def tree_hash(path: Path) -> str:
    """SHA-256 over every path below ``path`` and every file's bytes, in sorted order."""
    h = hashlib.sha256()
    for p in sorted(Path(path).rglob("*")):
        h.update(str(p.relative_to(path)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()
