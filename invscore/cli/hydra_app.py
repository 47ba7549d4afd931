"""The same runs as a ``@hydra.main`` app, so Hydra's launcher plugins (joblib, submitit) can farm out sweeps:

    python -m invscore.cli.hydra_app -m task=deblur method=pigdm,dps steps=20,50 hydra/launcher=joblib

Takes only overrides (no flags): every flag of ``python -m invscore`` has one (docs/cli.md). Hydra writes
its own logs under ``multirun/``; each run still writes its results under ``outputs/<task>/``.
"""
from __future__ import annotations

import sys

import hydra

from .compose import config_dir, store_method_configs


def run(cfg) -> float | None:
    """Execute one composed config; returns the mean PSNR so Hydra sweepers can optimise it."""
    from hydra.core.hydra_config import HydraConfig
    from ..run import UserError, execute
    try:
        summary = execute(cfg, list(HydraConfig.get().overrides.task))
    except UserError as exc:
        print(f"invscore: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"{summary['task']}: results in {summary['run_dir']}/")
    return (summary.get("metrics") or {}).get("psnr")


store_method_configs()  # the method group comes from the registry, not from files
app = hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")(run)

if __name__ == "__main__":
    app()
