"""What ``VERB --help`` and ``list`` show, read from the real registries once per state of the sources.

The registries (``invscore.conditional.METHODS``, ``invscore.samplers.SAMPLERS``, ``operators``, the prior
formats of ``invscore.priors.formats``, the shipped model cards) live in modules that import torch, which takes
seconds; a help text should not. :func:`fact` answers from a snapshot in ``$INVSCORE_CACHE/cli_facts.json``
(default ``~/.cache/invscore``) that :func:`collect` builds from the live registries. The snapshot is keyed by
:func:`source_key`, a SHA-256 of every ``.py`` file of the invscore and operators packages, the shipped assets
and the Hydra ``config.yaml``: any edit makes the next call read the registries again and rewrite it, so the
snapshot is never a second, drifting copy (``tests/test_cli_fast.py`` compares the two). Once torch is
imported (a run, a test, a notebook) the registries are read directly, so methods registered in-process show.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import sys
from importlib.util import find_spec
from pathlib import Path

from ..files import atomic_write_text, cache_dir

__all__ = ["FACTS", "fact", "collect", "source_key", "cache_path", "train_help"]

#: bump when the meaning of a fact changes without a source file changing
_LAYOUT = 1

#: fact name -> (module, function) that computes it from the live registries; every value is JSON of strings
FACTS = {
    "method_names": ("invscore.cli.facts", "_method_names"),
    "operator_defaults": ("invscore.cli.facts", "_operator_defaults"),
    "sigma_y": ("invscore.cli.facts", "_sigma_y"),
    "dataset_names": ("invscore.cli.facts", "_dataset_names"),
    "list_priors": ("invscore.cli.listing", "priors_rows"),
    "list_methods": ("invscore.cli.listing", "methods_rows"),
    "list_operators": ("invscore.cli.listing", "operators_rows"),
    "list_samplers": ("invscore.cli.listing", "samplers_rows"),
}


def cache_path() -> Path:
    """The snapshot file: ``$INVSCORE_CACHE/cli_facts.json``, else ``~/.cache/invscore/cli_facts.json``."""
    return cache_dir() / "cli_facts.json"


def _roots() -> list[Path]:
    pkg = Path(__file__).resolve().parents[1]
    spec = find_spec("operators")  # locates the package without running it
    return [pkg, *[Path(p) for p in ((spec.submodule_search_locations or []) if spec else [])]]


def source_key(roots: list[Path] | None = None, assets: Path | None = None, config: Path | None = None) -> str:
    """SHA-256 over what the facts are computed from: each ``.py`` file under ``roots`` (name and bytes), the
    names of the files in ``assets`` and of its test-image sets, the model cards' bytes and ``config``."""
    roots = _roots() if roots is None else roots
    assets = Path(__file__).resolve().parents[1] / "assets" if assets is None else assets
    h = hashlib.sha256(f"layout {_LAYOUT}\n".encode())
    # the rows show absolute paths (shipped cards), so two checkouts sharing one cache must not share a key
    h.update("\n".join(str(r.resolve()) for r in [*roots, assets]).encode())
    files = [(f"{i}/{p.relative_to(r).as_posix()}", p) for i, r in enumerate(roots) for p in sorted(r.rglob("*.py"))]
    if assets.is_dir():
        h.update("\n".join(sorted(p.name for p in assets.iterdir())).encode())
        tests = assets / "test_images"
        if tests.is_dir():
            h.update("\n".join(sorted(p.name for p in tests.iterdir() if p.is_dir())).encode())
        files += [(f"assets/{p.name}", p) for p in sorted(assets.glob("*.json"))]
    if config is None:
        config = _config_file()
    if config is not None:
        files.append(("config.yaml", config))
    for name, p in files:
        h.update(f"\0{name}\0{p.stat().st_size}\0".encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def _config_file() -> Path | None:
    from .args import CLIError
    from .compose import config_dir
    try:
        return config_dir() / "config.yaml"
    except CLIError:  # no configs: left out of the key; the sigma_y fact itself reports the missing folder
        return None


def _compute(name: str):
    import importlib
    module, func = FACTS[name]
    return getattr(importlib.import_module(module), func)()


def collect() -> dict:
    """Every fact of :data:`FACTS`, computed from the live registries (imports torch)."""
    return {name: _compute(name) for name in FACTS}


def _read(key: str) -> dict | None:
    try:
        payload = json.loads(cache_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(payload, dict) or payload.get("key") != key or not isinstance(payload.get("facts"), dict):
        return None
    return payload["facts"] if set(FACTS) <= set(payload["facts"]) else None


def _write(key: str, facts: dict) -> None:
    try:
        atomic_write_text(cache_path(), json.dumps({"key": key, "facts": facts}, ensure_ascii=False))
    except OSError:
        pass  # an unwritable cache costs only speed: the next call reads the registries again


#: cache file -> (key, facts) already read by this process: a help text asks for several facts, one hash will do
_MEMO: dict[str, tuple[str, dict]] = {}


def _snapshot() -> tuple[str, dict]:
    where = str(cache_path())
    if where in _MEMO:
        return _MEMO[where]
    try:
        key = source_key()
    except OSError:  # a source file replaced while hashing (an editor saving): no key to trust, so no snapshot
        key, facts = "", {}
    else:
        facts = _read(key) or _refresh(key)
    _MEMO[where] = key, facts
    return key, facts


def _refresh(key: str) -> dict:
    try:
        facts = collect()
        # the training help for this width too: one miss, not two, for a user who asks for both
        facts["train_help"] = {str(shutil.get_terminal_size().columns): _train_help_text()}
    except Exception:  # noqa: BLE001 -- a registry that fails to load must not break the help of the others;
        return {}      # each fact is then computed alone (fact()), so the failing one keeps its traceback
    _write(key, facts)
    return facts


def fact(name: str):
    """One fact of :data:`FACTS`: from the live registries when torch is already imported, else from the
    snapshot (recomputed and rewritten when its key no longer matches the sources)."""
    if name not in FACTS:
        raise ValueError(f"unknown CLI fact {name!r}; expected one of {', '.join(FACTS)}")
    facts = {} if "torch" in sys.modules else _snapshot()[1]
    return facts[name] if name in facts else _compute(name)


def train_help() -> str:
    """``python -m invscore.training --help`` as argparse formats it at the current terminal width (the
    snapshot keeps one text per width, since argparse wraps to it)."""
    if "torch" in sys.modules:
        return _train_help_text()
    width = str(shutil.get_terminal_size().columns)
    key, facts = _snapshot()
    if not facts:
        return _train_help_text()
    texts = facts.get("train_help") if isinstance(facts.get("train_help"), dict) else {}
    if not isinstance(texts.get(width), str):
        texts = {**texts, width: _train_help_text()}
        facts = {**facts, "train_help": texts}
        _MEMO[str(cache_path())] = key, facts
        _write(key, facts)
    return texts[width]


def _train_help_text() -> str:
    from ..training import parser
    return parser().format_help()


# --- the facts the help texts need besides the listing rows (``listing.*_rows``) --------------------------
def _method_names() -> list[str]:
    from ..conditional import METHODS
    return list(METHODS)


def _operator_defaults() -> dict[str, dict[str, str]]:
    import operators  # the operator owns its parameters' defaults
    return {name: {k: str(v) for k, v in operators.defaults(name).items()} for name in operators.available()}


def _sigma_y() -> str:
    from omegaconf import OmegaConf
    from .compose import config_dir
    return str(OmegaConf.load(config_dir() / "config.yaml")["sigma_y"])


def _dataset_names() -> list[str]:
    from ..data import available  # its keys are the registered names; the probe itself is `list datasets`
    return list(available())
