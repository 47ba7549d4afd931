"""Torch-free file helpers, so the fast CLI paths (``--help``, ``list``) can use them: the cache directory
(``$INVSCORE_CACHE``, else ``~/.cache/invscore``: converted LPIPS weights, the CLI's help facts) and atomic
writes (readers see the old file or the whole new one)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

__all__ = ["cache_dir", "atomic_write", "atomic_write_bytes", "atomic_write_text"]


def cache_dir() -> Path:
    """The invscore cache directory: $INVSCORE_CACHE, else ~/.cache/invscore."""
    return Path(os.environ.get("INVSCORE_CACHE") or Path.home() / ".cache" / "invscore")


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Run ``write(tmp)`` on a temporary path in ``path``'s folder, then ``os.replace(tmp, path)``: readers
    see the old file or the whole new one, never a half-written one. For writers that take a file name
    (``torch.save``, ``safetensors.torch.save_file``); the temporary file is removed if ``write`` fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # the pid keeps concurrent writers (torchrun ranks, parallel installs) off each other's temp file
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (:func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomic text write (UTF-8)."""
    return atomic_write_bytes(path, text.encode("utf-8"))
