"""Conditional terms composed around a frozen prior, so no sampler changes.

Bayes' rule splits the conditional score (Song et al. 2021, eq. 14; Dhariwal & Nichol 2021, eq. 12):

    ∇ log p_t(x_t | y) = ∇ log p_t(x_t) + ∇ log p_t(y | x_t).

**Sign convention (stated once, tested in tests/test_conditional.py):** a term returns
``+∇_{x_t} log p_t(· | x_t)``, the direction that *raises* the conditional likelihood; it is *added* to
the score. Since score = (α x̂0 − x)/σ², adding g to the score equals shifting the Tweedie estimate by
``σ²/α · g`` and the noise prediction by ``−σ g`` (Dhariwal & Nichol's ε̂ − √(1−ᾱ) ∇ for DDIM), so every
sampler — SDE, ODE or DDIM — sees the same guided model. Terms that act *after* a step instead
(projections, DPS's correction) implement ``post``.
"""
from __future__ import annotations

import math
import warnings

import torch

from ..priors.base import Diffusion
from ..sde import bcast
from ..utils import per_sample

__all__ = ["Term", "Guided", "ClassifierGuidance", "ClassifierFreeGuidance"]


class Term:
    """A conditional term. ``needs_grad``: it differentiates through the Tweedie estimate.

    ``score(x, t, x0)`` returns ``+∇ log p_t(·|x_t)`` (or ``None``); ``x`` requires grad and ``x0`` is
    attached to it when ``needs_grad``. ``post(x, t, generator, final)`` corrects the state after a step.
    """

    needs_grad: bool = False
    needs_x_grad: bool = False

    def score(self, x, t, x0, model):
        return None

    def post(self, x, t, generator=None, final: bool = False, model=None):
        return x


class Guided(Diffusion):
    """A :class:`Diffusion` with conditional terms: ``x̂0' = x̂0 + σ²/α · Σ_k ∇ log p_t(c_k | x_t)`` and
    post-step corrections applied in order. Network evaluations are counted by the wrapped model."""

    def __init__(self, base: Diffusion, terms):
        self.base, self.terms = base, list(terms)
        self.prior, self.sde = base.prior, base.sde
        last = [term for term in self.terms if term.needs_grad]
        self._last_grad = last[-1] if last else None

    def keep_graph(self, term) -> bool:
        """Whether ``term``'s last backward pass through x̂0 must keep the network's graph: only the last term
        that differentiates through x̂0 may free it, which keeps a gradient method's peak memory at one
        forward graph (as deepinv's DPS) instead of holding the activations through the backward pass."""
        return term is not self._last_grad

    @property
    def nfe(self) -> int:
        return self.base.nfe

    @nfe.setter
    def nfe(self, value: int) -> None:
        self.base.nfe = value

    @property
    def vjp(self) -> int:
        """Backward passes through the network, counted by the wrapped model."""
        return self.base.vjp

    def x0(self, x, t):
        t = torch.as_tensor(t, device=x.device, dtype=x.dtype)
        grad_x0 = any(term.needs_grad for term in self.terms)
        grad_x = grad_x0 or any(term.needs_x_grad for term in self.terms)
        with torch.enable_grad() if grad_x else torch.no_grad():
            xg = x.detach().requires_grad_(True) if grad_x else x
            x0 = self.base.x0(xg, t) if grad_x0 else self.base.x0(x, t).detach()
            total = None
            for term in self.terms:
                g = term.score(xg, t, x0, self)
                if g is not None:
                    total = g if total is None else total + g
        x0 = x0.detach()
        if total is None:
            return x0
        return x0 + bcast(self.sde.sigma(t) ** 2 / self.sde.alpha(t), x) * total.detach()

    def post_step(self, x, t, generator=None, final: bool = False):
        for term in self.terms:
            x = term.post(x, t, generator, final, self)
        return x


def _ve_view(sde, x, t):
    """``(x_t/α, σ/α)``: the state in variance-exploding coordinates, as classifiers and denoisers take it."""
    return x / bcast(sde.alpha(t), x), per_sample(sde.ratio(t), x)


#: far above it the classifier's gradient swamps the prior's score and samples saturate into blobs (the
#: shipped pair was measured up to 32: experiments/results/prior_report.md)
GAMMA_WARN = 100.0


def guidance_scale(gamma) -> float:
    """A classifier-guidance scale γ as a finite float >= 0 (ValueError otherwise); warns above
    :data:`GAMMA_WARN`, where guidance overwhelms the prior."""
    try:
        value = float(gamma)
    except (TypeError, ValueError):
        value = float("nan")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"the guidance scale gamma must be a finite number >= 0 (0 is unguided), got {gamma!r}")
    if value > GAMMA_WARN:
        warnings.warn(f"gamma {value:g} is far above the guidance scales measured to work (up to 32): the "
                      "classifier's gradient overwhelms the prior and samples saturate; try 4 to 32", stacklevel=3)
    return value


class ClassifierGuidance(Term):
    """Noisy-classifier guidance (Dhariwal & Nichol 2021, Algorithm 1 / eq. 12): ``γ ∇ log p_t(c | x_t)``.

    ``classifier(x, sigma)`` returns logits for an input in VE coordinates (the noise convention of
    the shipped classifiers: ``x = x_t/α``, ``sigma = σ/α``); ``label`` is an int or a ``(B,)`` tensor.
    ``gamma = 0`` is unconditional sampling.
    """

    needs_x_grad = True

    def __init__(self, classifier, label, gamma: float = 1.0):
        self.classifier, self.label, self.gamma = classifier, label, guidance_scale(gamma)

    def score(self, x, t, x0, model):
        if self.gamma == 0.0:
            return None
        logits = self.classifier(*_ve_view(model.sde, x, t))
        label = torch.as_tensor(self.label, device=x.device).long().expand(x.shape[0])
        logp = torch.log_softmax(logits, dim=-1).gather(1, label[:, None]).sum()
        # the classifier's graph is its own (x̂0's is separate), so nothing later needs it
        return self.gamma * torch.autograd.grad(logp, x)[0]


class ClassifierFreeGuidance(Term):
    """Classifier-free guidance (Ho & Salimans 2022, eq. 6) for a prior ``cond_denoiser(x, sigma, c)``
    that takes a condition (``None`` = unconditional): ``x̂0 = x̂0_u + w (x̂0_c − x̂0_u)`` — here ``w = 1`` is
    the plain conditional model (the paper's w is ours minus 1) — i.e. the term
    ``w ∇ log p_t(c | x_t) = w (α/σ²)(x̂0_c − x̂0_u)``. Costs one extra network evaluation per step."""

    def __init__(self, cond_denoiser, label, weight: float = 1.0):
        self.cond, self.label, self.weight = cond_denoiser, label, float(weight)

    def score(self, x, t, x0, model):
        if self.weight == 0.0:
            return None
        sde = model.sde
        x0c = self.cond(*_ve_view(sde, x.detach(), t), self.label)
        model.base.nfe += 1
        return self.weight * bcast(sde.alpha(t), x) * (x0c - x0.detach()) / bcast(sde.sigma(t) ** 2, x)
