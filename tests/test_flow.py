"""Flow-matching priors (issue 15 §1): the rectified-flow path as an SDE, velocity networks through
NetworkPrior(parametrization='flow'), exact on a Gaussian mixture, whose velocity field is known."""
import pytest
import torch

from invscore.priors import Diffusion, GaussianMixture, NetworkPrior
from invscore.samplers import sample_ddim, sample_euler, time_grid
from invscore.sde import FlowSDE, VPSDE, bcast, make_sde


def _mixture():
    means = torch.tensor([[-1.0, 0.5, 0.0, 2.0], [1.5, -0.5, 1.0, -1.0]], dtype=torch.float64)
    return GaussianMixture(torch.tensor([0.3, 0.7], dtype=torch.float64), means,
                           torch.tensor([0.2, 0.5], dtype=torch.float64))


class ExactVelocity(torch.nn.Module):
    """v(x_t, t) = ȧ x̂0 + ṡ ε̂ of the mixture under ``sde``, from its exact denoiser (no learning)."""

    def __init__(self, prior, sde):
        super().__init__()
        self.prior, self.sde = prior, sde

    def forward(self, xt, t):
        a, s = bcast(self.sde.alpha(t), xt), bcast(self.sde.sigma(t), xt)
        x0 = self.prior.denoise(xt / a, self.sde.ratio(t))
        eps = (xt - a * x0) / s
        h = 1e-6  # the path's derivatives by central differences: independent of the adapter's f, g² formula
        da = bcast((self.sde.alpha(t + h) - self.sde.alpha(t - h)) / (2 * h), xt)
        ds = bcast((self.sde.sigma(t + h) - self.sde.sigma(t - h)) / (2 * h), xt)
        return da * x0 + ds * eps


@pytest.mark.parametrize("sde", [FlowSDE(), VPSDE()], ids=["flow", "vp"])
def test_a_velocity_network_is_the_exact_denoiser(sde):
    prior = _mixture()
    flow_prior = NetworkPrior(ExactVelocity(prior, sde), sde, parametrization="flow", time_input="t")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 4, generator=g, dtype=torch.float64) * 2
    sigma = torch.tensor([0.01, 0.1, 0.5, 1.0, 5.0, 40.0], dtype=torch.float64)
    torch.testing.assert_close(flow_prior.denoise(x, sigma), prior.denoise(x, sigma), rtol=1e-6, atol=1e-6)


def test_rectified_flow_x0_is_x_minus_t_v():
    sde = FlowSDE()
    class Constant(torch.nn.Module):
        def forward(self, xt, t):
            return torch.full_like(xt, 0.25)

    prior = NetworkPrior(Constant(), sde, parametrization="flow")
    t = torch.tensor([0.2, 0.6], dtype=torch.float64)
    xt = torch.randn(2, 3, dtype=torch.float64)
    x0 = prior.denoise(xt / bcast(sde.alpha(t), xt), sde.ratio(t))
    torch.testing.assert_close(x0, xt - bcast(t, xt) * 0.25)


def test_ddim_on_the_flow_path_is_the_flows_euler_step():
    # on a = 1 − t, s = t, DDIM(η = 0) x_s = (1 − s) x̂0 + s ε̂ equals x_t + (s − t) v exactly
    sde = make_sde("flow")
    model = Diffusion(_mixture(), sde)
    ts = time_grid(sde, 12, "uniform", dtype=torch.float64)
    x = sde.prior_sampling((256, 4), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    a = sample_ddim(model, x.clone(), ts, eta=0.0, denoise=False).x
    b = sample_euler(model, x.clone(), ts, denoise=False).x
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_flow_samples_have_the_mixtures_moments():
    prior, sde = _mixture(), FlowSDE()
    model = Diffusion(prior, sde)
    n = 4000
    x = sde.prior_sampling((n, 4), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    out = sample_euler(model, x, time_grid(sde, 200, "edm", dtype=torch.float64)).x
    ref = prior.sample(200_000, generator=torch.Generator().manual_seed(3))
    se = ref.std(0) / n ** 0.5
    assert ((out.mean(0) - ref.mean(0)).abs() < 5 * se + 0.02).all(), (out.mean(0), ref.mean(0))
    assert ((out.std(0) / ref.std(0) - 1).abs() < 5 / (2 * n) ** 0.5 + 0.03).all()
