"""Hydra composition of configs/ and the simple ``-m`` sweep (cartesian product of comma-separated values)."""
from __future__ import annotations

import itertools
import os
import re
from pathlib import Path

from .args import CLIError, override_key

__all__ = ["config_dir", "group_options", "merge_overrides", "expand_sweep", "compose_config", "method_configs",
           "store_method_configs"]


def config_dir() -> Path:
    """The Hydra config folder: $INVSCORE_CONFIGS, else configs/ at the repository root (a source checkout
    or an editable install), else the copy a wheel ships as invscore/_configs (see setup.py)."""
    env = os.environ.get("INVSCORE_CONFIGS")
    here = Path(__file__).resolve().parents[1]
    candidates = [Path(env)] if env else [here.parent / "configs", here / "_configs"]
    for d in candidates:
        if (d / "config.yaml").is_file():
            return d
    raise CLIError(f"no Hydra configs at {' or '.join(map(str, candidates))} (config.yaml missing); "
                   "set INVSCORE_CONFIGS to the configs/ folder")


def group_options(group: str) -> list[str]:
    """Names of the files of one config group (e.g. 'prior' → ['emoji', 'fashion_mnist'])."""
    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))


def method_configs() -> dict[str, dict]:
    """The ``method`` config group, generated from the method registry (one home for a method's defaults):
    ``name``, ``steps``, ``grid`` and every option with its default, so ``method.options.cg_iters=2`` works."""
    from ..conditional import METHODS
    # a method that picks another (auto) has no grid of its own: null lets the picked method use its own
    return {name: {"name": name, "steps": m.steps, "grid": None if m.delegates else m.grid,
                   "options": dict(m.defaults)} for name, m in METHODS.items()}


def store_method_configs() -> None:
    """Put :func:`method_configs` into Hydra's ConfigStore as the ``method`` group (before composing)."""
    from hydra.core.config_store import ConfigStore
    cs = ConfigStore.instance()
    for name, node in method_configs().items():
        cs.store(group="method", name=name, node=node)


def merge_overrides(*lists: list[str]) -> list[str]:
    """Concatenate override lists, a later value for the same key replacing an earlier one in place."""
    out: dict[str, str] = {}
    for lst in lists:
        for tok in lst:
            out.pop(override_key(tok), None)  # re-insert at the end: later overrides are applied later
            out[override_key(tok)] = tok
    return list(out.values())


def _parse(overrides: list[str]):
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException
    try:
        return OverridesParser.create().parse_overrides(overrides)
    except OverrideParseException as exc:
        raise CLIError(f"cannot parse override: {_one_line(str(exc))}") from None


def expand_sweep(overrides: list[str], multirun: bool) -> list[list[str]]:
    """One override list per run: the cartesian product of every swept key's values (Hydra's grammar:
    ``a=1,2``, ``a=range(1,4)``, ``a=choice(x,y)``). Without ``multirun`` a sweep is an error."""
    parsed = _parse(overrides)
    axes = []
    for tok, ov in zip(overrides, parsed):
        if ov.is_sweep_override():
            if not multirun:
                raise CLIError(f"{tok!r} lists several values; add -m (--multirun) to run every combination")
            key = ov.get_key_element()
            axes.append([f"{key}={v}" for v in ov.sweep_string_iterator()])
        else:
            axes.append([tok])
    return [list(combo) for combo in itertools.product(*axes)]


def _one_line(msg: str) -> str:
    msg = msg.split("\nConfig search path", 1)[0]  # Hydra's search-path dump is noise to a user
    msg = re.sub(r"\n\s*\n", ". ", msg.strip())
    msg = re.sub(r":\s*\n\t", ": ", msg)
    msg = re.sub(r"\n\t", ", ", msg)
    return re.sub(r"\s*\n\s*", " ", msg)


def compose_config(overrides: list[str]):
    """Compose configs/config.yaml with ``overrides`` (hydra.compose) and resolve it; Hydra's and
    OmegaConf's errors become one-line :class:`CLIError` s that name the valid choices."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException
    store_method_configs()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides)
        OmegaConf.resolve(cfg)
    except (HydraException, OmegaConfBaseException) as exc:
        raise CLIError(f"bad configuration: {_one_line(str(exc))}") from None
    missing = OmegaConf.missing_keys(cfg)
    if missing:
        raise CLIError(f"missing value(s) for {', '.join(sorted(missing))}; set them as key=value overrides")
    return cfg
