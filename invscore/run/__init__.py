"""One run: resolved config → build (prior, images, operator) → execute (measure → solve → score) → write.

``execute(cfg)`` takes the OmegaConf config composed from ``configs/`` (see docs/cli.md) and writes a fresh
run directory (:mod:`invscore.run.outputs`). Building checks every input before that directory exists
(:mod:`invscore.run.build`); mistakes a user can fix raise :class:`UserError` with a one-line message.
"""
from .build import UserError, build_operator, configure_threads, load_guidance, load_inputs, load_prior
from .execute import batch_seed, execute
from .outputs import measurement_view, new_run_dir

__all__ = ["UserError", "configure_threads", "load_prior", "load_inputs", "build_operator", "measurement_view",
           "load_guidance", "new_run_dir", "batch_seed", "execute"]
