"""PSLD (Rout, Raoof, Daras, Caramanis, Dimakis & Shakkottai 2023, "Solving Linear Inverse Problems Provably
via Posterior Sampling with Latent Diffusion Models", Algorithm 2) as a registered method for latent priors.

After each ancestral step on the latent z_t, with ẑ0 = E[z0 | z_t] from the latent prior and x̂ = 𝒟(ẑ0):

    z ← z − ζ ∇_z ‖y − A x̂‖² / ‖y − A x̂‖  −  γ ∇_z ‖ẑ0 − E(A⁺y + (I − A⁺A) x̂)‖² / ‖ẑ0 − E(…)‖

The first term is DPS in latent space (the measurement through the decoder); the second, the "gluing" term,
pulls ẑ0 towards a fixed point of E ∘ 𝒟 whose decoding agrees with y on the measured subspace. Both
gradients pass through the decoder, the second also through the encoder: PSLD costs one network backward
pass and two autoencoder backward passes per step (counted in ``SolveResult.autoencoder_vjp``).
"""
from __future__ import annotations

import torch

from .measurement import DPS, _keep
from .methods import Method, register_method

__all__ = ["PSLD", "PSLDMethod"]


class PSLD(DPS):
    """The PSLD correction above for a :class:`~invscore.priors.latent.LatentOperator` ``op`` whose image
    operator is linear (A⁺ is its pseudo-inverse); ``zeta`` and the step after each move as in :class:`DPS`,
    ``gamma`` the gluing weight."""

    def __init__(self, op, y, zeta: float = 1.0, gamma: float = 0.1):
        super().__init__(op, y, zeta)
        self.gamma = float(gamma)

    def score(self, x, t, x0, model):
        a = self.op.pixel_op
        xdec = self.op.decode(x0)
        sq = (self.y - a._A(xdec)).flatten(1).pow(2).sum(1)
        loss = self.zeta * sq / sq.detach().sqrt().clamp_min(1e-12)
        if self.gamma > 0:
            target = a._A_pinv(self.y) + xdec - a._A_pinv(a._A(xdec))
            g = (x0 - self.op.encode(target)).flatten(1).pow(2).sum(1)
            loss = loss + self.gamma * g / g.detach().sqrt().clamp_min(1e-12)
        self._corr = -torch.autograd.grad(loss.sum(), x, retain_graph=_keep(model, self))[0]
        return None


@register_method
class PSLDMethod(Method):
    """PSLD (Rout et al. 2023, Algorithm 2): DPS on the latent through the decoder plus the gluing term, after
    an ancestral step; for latent priors and linear image operators. ζ = 1 is :class:`DPS`'s default (the
    authors' ω = 1 on ‖·‖), γ = 0.1 the authors' inpainting setting."""

    name, needs, steps, vjp_per_step = "psld", "any", 100, 1
    description = "PSLD: latent DPS through the decoder + gluing term (latent priors, linear operators)"
    defaults = {"zeta": 1.0, "gamma": 0.1}

    @classmethod
    def accepts(cls, operator) -> bool:
        from operators import LinearOperator
        from ..priors.latent import LatentOperator
        return isinstance(operator, LatentOperator) and isinstance(operator.pixel_op, LinearOperator)

    def check(self, operator) -> None:
        from ..priors.latent import LatentOperator
        if not isinstance(operator, LatentOperator):
            raise TypeError("method 'psld' needs a latent prior (a LatentPrior, e.g. --prior fashion_mnist_latent); "
                            "for a pixel prior use 'dps', which PSLD extends")
        if not self.accepts(operator):
            raise TypeError(f"method 'psld' needs a linear image operator for its gluing term (A⁺); got "
                            f"{type(operator.pixel_op).__name__}: use 'dps' or 'daps' with the latent prior")

    def terms(self, op, y, sigma_y):
        return [PSLD(op, y, zeta=self.options["zeta"], gamma=self.options["gamma"])]

    def sample(self, model, x, ts, **kw):
        from ..samplers import sample_pc
        return sample_pc(model, x, ts, predictor="ancestral", corrector="none", return_mean=False, **kw)
