"""Continuing an interrupted inverse run (``evaluate --resume DIR``) in its own run directory.

A run seeds batch ``b`` from ``(seed, b)`` alone (:func:`invscore.run.execute.batch_seed`), so a finished
batch never needs redoing: its record under ``batches/`` (:func:`invscore.run.outputs.write_batch`) holds
its metric rows exactly, and a resumed run merges them with the batches it computes into the same files an
uninterrupted run writes. That holds only for the same configuration, which is checked here first.
"""
from __future__ import annotations

import json
from pathlib import Path

from .build import UserError

__all__ = ["resume_dir", "config_differences"]

#: settings that do not change any result, so a resumed run may change them
_FREE = ("out", "quiet")


def config_differences(saved, now, prefix: str = "") -> list[tuple[str, object, object]]:
    """``(key, saved value, new value)`` for every leaf where two plain config dicts differ."""
    if isinstance(saved, dict) and isinstance(now, dict):
        out = []
        for key in sorted(set(saved) | set(now), key=str):
            out += config_differences(saved.get(key), now.get(key), f"{prefix}{key}.")
        return out
    return [] if saved == now else [(prefix.rstrip("."), saved, now)]


def resume_dir(cfg) -> Path:
    """The run directory ``cfg.out`` of an unfinished run whose ``config.yaml`` equals ``cfg`` (but for
    ``out`` and ``quiet``); a one-line :class:`UserError` says why it cannot be resumed otherwise."""
    from omegaconf import OmegaConf
    if not cfg.get("out"):
        raise UserError("--resume needs the directory of the interrupted run: --resume DIR")
    d = Path(str(cfg.out))
    if not (d / "config.yaml").is_file():
        raise UserError(f"--resume {d}: no run there (config.yaml missing); pass the directory of an "
                        "interrupted run, as its error message or summary.json names it")
    summary = d / "summary.json"
    if summary.is_file() and json.loads(summary.read_text() or "{}").get("complete") is True:
        raise UserError(f"--resume {d}: that run is complete; nothing to resume")
    if str(cfg.task.name) == "generate":
        raise UserError("--resume continues an inverse run (evaluate, inpaint, …); generate runs cannot resume")
    saved = OmegaConf.to_container(OmegaConf.load(d / "config.yaml"), resolve=True)
    now = OmegaConf.to_container(cfg, resolve=True)
    diffs = [x for x in config_differences(saved, now) if x[0] not in _FREE]
    if diffs:
        key, was, new = diffs[0]
        more = f" (and {len(diffs) - 1} more setting(s))" if len(diffs) > 1 else ""
        raise UserError(f"--resume {d}: this command sets {key}={new!r} but the run used {key}={was!r}{more}; "
                        "repeat the run's own command (its config.yaml) and add --resume")
    return d
