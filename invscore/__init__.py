"""invscore: imaging inverse problems with a frozen score (diffusion) model as the prior.

Data flows one way: prior → SDE → sampler ← conditional terms ← operator ← measurement.
"""
from .priors import (CallablePrior, DiagonalGaussian, Diffusion, Gaussian, GaussianMixture, NetworkPrior, Prior,
                     StationaryGaussian)
from .samplers import SAMPLERS, SampleResult, sample, time_grid
from .sde import SDE, DiscreteVPSDE, SubVPSDE, VESDE, VPSDE, make_sde
from .utils import resolve_device

__version__ = "0.1.0"
__all__ = ["SDE", "VESDE", "VPSDE", "SubVPSDE", "DiscreteVPSDE", "make_sde", "Prior", "CallablePrior", "NetworkPrior",
           "Diffusion",
           "Gaussian", "DiagonalGaussian", "StationaryGaussian", "GaussianMixture", "sample", "time_grid",
           "SampleResult", "SAMPLERS", "resolve_device"]
