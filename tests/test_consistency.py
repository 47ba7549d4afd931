"""Consistency models: the boundary condition, multistep consistency sampling exact on a mixture's exact
consistency map, the distillation loss's fixed point, and `python -m invscore.distill` end to end."""
import pytest
import torch

from invscore.checkpoint import load_denoiser
from invscore.distill import consistency_distillation_loss, heun_teacher_step, karras_sigmas, main
from invscore.nets import ConsistencyDenoiser, UNet
from invscore.priors import Diffusion, GaussianMixture, Prior
from invscore.samplers import sample
from invscore.samplers.ode import rk45
from invscore.sde import make_sde
from invscore.stats import sliced_wasserstein

SIGMA_MIN = 0.002


class ExactConsistency(Prior):
    """f*(x, σ): the probability-flow ODE dx/dσ = (x − D(x; σ))/σ of a closed-form prior solved from σ down to
    σ_min by RK45 (one σ per batch, as consistency sampling queries it)."""

    def __init__(self, prior):
        super().__init__()
        self.prior = prior

    def denoise(self, x, sigma):
        s0 = float(sigma.flatten()[0])
        assert torch.all(sigma == s0)
        if s0 <= SIGMA_MIN:
            return x
        field = lambda s, v: (v - self.prior.denoise(v, s.expand(v.shape[0]))) / s  # noqa: E731
        return rk45(field, x, s0, SIGMA_MIN, rtol=1e-7, atol=1e-7)[0]


def _mixture():
    return GaussianMixture(torch.tensor([0.3, 0.7], dtype=torch.float64),
                           torch.tensor([[-1.5, 0.5], [1.0, -0.5]], dtype=torch.float64),
                           torch.tensor([0.05, 0.2], dtype=torch.float64))


def test_the_boundary_condition_holds_exactly():
    f = ConsistencyDenoiser(UNet(in_channels=1, channels=[8, 16]), sigma_min=SIGMA_MIN)
    torch.nn.init.normal_(f.net.conv_out.weight)  # a network whose output is far from zero
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    f = f.double()
    torch.testing.assert_close(f(x, torch.full((3,), SIGMA_MIN, dtype=torch.float64)), x, rtol=0, atol=1e-12)
    assert (f(x, torch.full((3,), 1.0, dtype=torch.float64)) - x).abs().max() > 1e-2


@pytest.mark.parametrize("steps", [1, 2])
def test_consistency_sampling_on_the_exact_map_draws_the_prior(steps):
    mix, n = _mixture(), 2000
    model = Diffusion(ExactConsistency(mix), make_sde("edm"))
    g = torch.Generator().manual_seed(steps)
    res = sample(model, (n, 2), "consistency", steps=steps, generator=g, dtype=torch.float64)
    assert res.nfe == steps
    exact, exact2 = mix.sample(n, generator=g), mix.sample(n, generator=g)
    dirs = torch.randn(2, 64, generator=g, dtype=torch.float64)
    dirs = dirs / dirs.norm(dim=0)
    floor = sliced_wasserstein(exact, exact2, directions=dirs)
    assert sliced_wasserstein(res.x, exact, directions=dirs) < 2 * floor
    # the same chain on the plain denoiser (posterior means) collapses the spread: the test can tell
    plain = sample(Diffusion(mix, make_sde("edm")), (n, 2), "consistency", steps=1, generator=g, dtype=torch.float64)
    assert sliced_wasserstein(plain.x, exact, directions=dirs) > 5 * floor


def test_distillation_loss_vanishes_at_the_consistency_map_of_a_point_mass():
    c = torch.randn(1, 1, 4, 4, dtype=torch.float64)
    teacher = lambda x, s: c.expand_as(x)  # noqa: E731  (D = c: every ODE path ends at c)
    exact = lambda x, s: c.expand_as(x)  # noqa: E731
    sig = karras_sigmas(18).double()
    g = torch.Generator().manual_seed(0)
    n = torch.randint(17, (16,), generator=g)
    x0, z = c.expand(16, -1, -1, -1), torch.randn(16, 1, 4, 4, generator=g, dtype=torch.float64)
    assert consistency_distillation_loss(exact, exact, teacher, x0, n, sig, z) < 1e-24
    assert consistency_distillation_loss(lambda x, s: x, lambda x, s: x, teacher, x0, n, sig, z) > 1e-3
    # Heun is exact on this linear ODE: x(σ) = c + (σ/σ')(x' − c)
    x_hi = c + 3.0 * z
    torch.testing.assert_close(heun_teacher_step(teacher, x_hi, torch.full((16,), 3.0, dtype=torch.float64),
                                                 torch.full((16,), 1.5, dtype=torch.float64)), c + 1.5 * z)


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory):
    from invscore.training import parser, train
    out = tmp_path_factory.mktemp("teacher")
    x = torch.where(torch.rand(64, 1, 1, 1, generator=torch.Generator().manual_seed(0)) < 0.5, -0.8, 0.8) \
        * torch.ones(64, 1, 16, 16)
    train(parser().parse_args(["--out", str(out), "--channels", "8,16", "--batch", "16", "--steps", "30",
                               "--lr", "2e-3", "--warmup", "1", "--quiet", "--no-final", "--threads", "1"]),
          data=(x, None))
    return out / "ema.safetensors", x


def test_distill_trains_and_ships_a_consistency_family_prior(tiny_teacher, tmp_path):
    from invscore.distill import distill, parser
    teacher, x = tiny_teacher
    args = parser().parse_args(["--teacher", str(teacher), "--out", str(tmp_path), "--steps", "12", "--batch", "8",
                                "--levels", "6", "--save-every", "5", "--quiet", "--no-final", "--threads", "1"])
    s = distill(args, data=(x, None))
    assert s["steps"] == 12 and all(v == v for v in s["losses"])
    f = load_denoiser(tmp_path / "ema.safetensors")
    assert isinstance(f, ConsistencyDenoiser) and f.card["family"] == "consistency" and f.card["steps"] == 12
    x1 = torch.randn(2, 1, 16, 16)
    torch.testing.assert_close(f(x1, torch.full((2,), f.sigma_min)), x1)
    assert not any(p.requires_grad for p in f.parameters())


def test_distill_refuses_a_teacher_it_cannot_use(tmp_path, capsys):
    assert main(["--teacher", str(tmp_path / "missing.safetensors"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("invscore: error:") and len(err.strip().splitlines()) == 1


def test_the_shipped_consistency_model_generates_in_one_step_from_the_cli(tmp_path):
    import json
    from invscore.cli import main as cli
    f = load_denoiser("fashion_mnist_cm")
    assert isinstance(f, ConsistencyDenoiser) and f.card["family"] == "consistency" and f.card["teacher"] == "fashion_mnist"
    assert cli(["generate", "--prior", "fashion_mnist_cm", "--method", "consistency", "--steps", "1", "--n", "2",
                "--quiet", "threads=1", "--out", str(tmp_path / "g")]) == 0
    assert json.loads((tmp_path / "g" / "summary.json").read_text())["nfe"] == 1
