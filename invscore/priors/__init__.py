"""Frozen priors: the denoiser abstraction, adapters for users' networks, closed-form test priors."""
from .base import CallablePrior, Diffusion, NetworkPrior, Prior, as_prior, freeze
from .checkpointing import activation_checkpointing
from .gaussian import DiagonalGaussian, Gaussian, GaussianMixture, StationaryGaussian

__all__ = ["Prior", "CallablePrior", "NetworkPrior", "Diffusion", "as_prior", "freeze",
           "Gaussian", "DiagonalGaussian", "StationaryGaussian", "GaussianMixture", "activation_checkpointing"]
