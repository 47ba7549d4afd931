"""Rectified-flow priors: the velocity network as a denoiser is exact on a closed-form mixture, the flow-matching
loss vanishes at the true velocity, and `--objective flow` trains, saves and loads as a flow-family prior."""
import pytest
import torch

from invscore.checkpoint import load_denoiser
from invscore.nets import FlowDenoiser, flow_matching_loss
from invscore.priors import GaussianMixture
from invscore.training import OBJECTIVES, main, parser, sample_sigma, train


class ExactVelocity(torch.nn.Module):
    """v(x_t, c) = (x_t − E[x0 | x_t]) / t of a closed-form prior, with t decoded from c = ¼ ln(t/(1 − t))."""

    def __init__(self, prior):
        super().__init__()
        self.prior = prior

    def forward(self, xt, c):
        t = torch.sigmoid(4 * c).view(-1, *[1] * (xt.dim() - 1))
        sigma = t / (1 - t)
        x0 = self.prior.denoise((xt / (1 - t)).flatten(1), sigma.flatten()).view_as(xt)
        return (xt - x0) / t


def _mixture(d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return GaussianMixture(torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64),
                           torch.randn(3, d, generator=g, dtype=torch.float64),
                           torch.tensor([0.05, 0.2, 0.5], dtype=torch.float64))


def test_flow_denoiser_of_the_exact_velocity_is_the_exact_posterior_mean():
    mix = _mixture()
    den = FlowDenoiser(ExactVelocity(mix))
    g = torch.Generator().manual_seed(1)
    sigma = torch.tensor([0.002, 0.05, 0.5, 2.0, 20.0, 80.0], dtype=torch.float64)
    x = mix.sample(6, generator=g).view(6, 1, 4, 4) + sigma.view(-1, 1, 1, 1) * torch.randn(
        6, 1, 4, 4, generator=g, dtype=torch.float64)
    torch.testing.assert_close(den(x, sigma).flatten(1), mix.denoise(x.flatten(1), sigma), rtol=1e-9, atol=1e-9)


def test_flow_matching_loss_is_zero_at_the_true_velocity_of_a_point_mass():
    c = torch.randn(1, 1, 4, 4, dtype=torch.float64)

    class PointMass(torch.nn.Module):
        def forward(self, xt, cn):  # all data at c: E[x0 | x_t] = c, so v = (x_t − c)/t
            t = torch.sigmoid(4 * cn).view(-1, 1, 1, 1)
            return (xt - c) / t

    g = torch.Generator().manual_seed(0)
    sigma = sample_sigma(32, g, *OBJECTIVES["flow"]).double()
    x0, noise = c.expand(32, -1, -1, -1), torch.randn(32, 1, 4, 4, generator=g, dtype=torch.float64)
    t = sigma / (1 + sigma)
    assert flow_matching_loss(FlowDenoiser(PointMass()), x0, t, noise) < 1e-20
    flipped = FlowDenoiser(type("Flip", (PointMass,), {"forward": lambda s, xt, cn: -PointMass.forward(s, xt, cn)})())
    assert flow_matching_loss(flipped, x0, t, noise) > 0.1  # a sign error in the path would not vanish


def test_objective_flow_trains_and_loads_as_a_flow_prior(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.where(torch.rand(64, 1, 1, 1, generator=g) < 0.5, -0.8, 0.8) * torch.ones(64, 1, 16, 16)
    args = parser().parse_args(["--objective", "flow", "--out", str(tmp_path), "--channels", "8,16", "--batch", "16",
                                "--lr", "2e-3", "--warmup", "1", "--steps", "40", "--save-every", "1000",
                                "--quiet", "--no-final", "--threads", "1"])
    s = train(args, data=(x, None))
    assert s["steps"] == 40 and sum(s["losses"][-10:]) < 0.7 * sum(s["losses"][:10])
    net = load_denoiser(tmp_path / "ema.safetensors")
    assert isinstance(net, FlowDenoiser) and net.card["family"] == "flow" and net.card["arch"]["name"] == "flow_unet"
    out = net(torch.randn(2, 1, 16, 16), torch.tensor([0.1, 10.0]))
    assert out.shape == (2, 1, 16, 16) and torch.isfinite(out).all()


@pytest.mark.parametrize("extra", [["--task", "classifier"], ["--arch", "deepinv_ncsnpp"]])
def test_objective_flow_refuses_what_it_cannot_train(tmp_path, extra, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--objective", "flow", "--out", str(tmp_path), *extra])
    assert exc.value.code == 2 and "--objective flow trains a prior with --arch unet" in capsys.readouterr().err


def test_the_shipped_flow_prior_runs_from_the_cli_and_lists_its_family(tmp_path, capsys):
    from invscore.cli import main as cli
    net = load_denoiser("fashion_mnist_flow")
    assert isinstance(net, FlowDenoiser) and net.card["family"] == "flow" and "eval_test_mse_by_sigma" in net.card
    assert cli(["inpaint", "--prior", "fashion_mnist_flow", "--n", "1", "--steps", "4", "--quiet", "threads=1",
                "sde=flow", "--out", str(tmp_path / "r")]) == 0
    assert cli(["list", "priors"]) in (0, None)
    row = [r for r in capsys.readouterr().out.splitlines() if r.startswith("  fashion_mnist_flow ")]
    assert len(row) == 1 and " flow " in row[0] and "steps 2843" in row[0]
