"""Exact likelihood through the probability-flow ODE against closed-form Gaussian log-densities."""
import math

import pytest
import torch

from invscore.priors import Diffusion, Gaussian, StationaryGaussian
from invscore.samplers import bits_per_dim, decode, dequantize, encode, log_likelihood
from invscore.sde import SubVPSDE, VESDE, VPSDE


def _gaussian(d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    L = torch.randn(d, d, generator=g, dtype=torch.float64)
    return Gaussian(0.3 * torch.randn(d, generator=g, dtype=torch.float64), L @ L.T / d + 0.3 * torch.eye(d, dtype=torch.float64))


def _closed_form_at_tmin(prior, sde, x):
    """log p_{t_min}(x): x_t = alpha x0 + sigma z, so log p_t(x) = log N(x/alpha; mu, C + r² I) − d log alpha."""
    t = torch.tensor(sde.t_min, dtype=torch.float64)
    d = x[0].numel()
    return prior.log_prob(x / sde.alpha(t), sde.ratio(t)) - d * sde.log_alpha(t)


@pytest.mark.parametrize("sde", [VPSDE(), SubVPSDE(), VESDE(sigma_min=0.01, sigma_max=50.0)], ids=["vp", "subvp", "ve"])
def test_exact_trace_likelihood_matches_closed_form(sde):
    prior = _gaussian()
    x = prior.sample(6, generator=torch.Generator().manual_seed(1))
    out = log_likelihood(Diffusion(prior, sde), x, method="exact", rtol=1e-6, atol=1e-6)
    ref = _closed_form_at_tmin(prior, sde, x)
    assert torch.allclose(out["logp"], ref, rtol=0.01), (out["logp"], ref)
    # and the closed form at t_min is the data density to well within 1% (t_min is tiny)
    assert torch.allclose(ref, prior.log_prob(x), rtol=0.01)
    assert out["nfe"] > 0


def test_hutchinson_likelihood_unbiased_on_images():
    """Hutchinson–Skilling on a 1×8×8 stationary Gaussian: the batch mean is within 1% of the closed form."""
    prior = StationaryGaussian.radial((1, 8, 8), corner=0.25)
    sde = VPSDE()
    x = prior.sample(32, generator=torch.Generator().manual_seed(2))
    out = log_likelihood(Diffusion(prior, sde), x, method="hutchinson", rtol=1e-5, atol=1e-5,
                         generator=torch.Generator().manual_seed(3))
    ref = _closed_form_at_tmin(prior, sde, x)
    assert abs(float(out["logp"].mean() / ref.mean()) - 1) < 0.01


def test_encode_decode_round_trip():
    prior = StationaryGaussian.radial((1, 8, 8), corner=0.25)
    model = Diffusion(prior, VPSDE())
    x = prior.sample(4, generator=torch.Generator().manual_seed(4))
    z = encode(model, x)
    assert float((z - x).abs().max()) > 0.1  # it really moved to the latent
    assert float((decode(model, z) - x).abs().max()) < 1e-3


def test_bits_per_dim_of_uniform_density():
    """A uniform density on [−1, 1]^d (log p = −d log 2) is exactly 8 bits per dimension for 256 levels."""
    d = 10
    bpd = bits_per_dim(torch.tensor([-d * math.log(2.0)]), d)
    assert abs(float(bpd) - 8.0) < 1e-12
    u8 = torch.randint(0, 256, (3, 5), generator=torch.Generator().manual_seed(0))
    x = dequantize(u8, generator=torch.Generator().manual_seed(1))
    assert float(x.min()) >= -1 and float(x.max()) <= 1
    assert torch.equal(((x + 1) / 2 * 256).floor().long(), u8)


def test_bad_trace_method():
    with pytest.raises(ValueError, match="unknown trace method"):
        log_likelihood(Diffusion(_gaussian(), VPSDE()), torch.zeros(1, 4, dtype=torch.float64), method="nope")
