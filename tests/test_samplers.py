"""Every unconditional sampler, under every SDE, reproduces a Gaussian-mixture prior from its exact score:
sliced Wasserstein distance to exact samples within 2x of the floor. The floor is the distance between
two independent exact sets of the same size, averaged over 8 pairs: one pair alone varies 3x with N=1200
(mode proportions fluctuate by sqrt(p(1-p)/N)), which would make the bar a coin toss."""
import pytest
import torch

import invscore.samplers as S
from invscore.priors import Diffusion
from invscore.sde import SubVPSDE, VESDE, VPSDE
from invscore.stats import sliced_wasserstein

N = 1200
STEPS = {"pc": 150, "euler_maruyama": 300, "reverse_diffusion": 300, "ancestral": 300, "ode_euler": 150,
         "ode_heun": 40, "ddim": 60, "rk45": 1}
SDES = {"vp": VPSDE, "subvp": SubVPSDE, "ve": lambda: VESDE(sigma_min=0.01, sigma_max=30.0)}


@pytest.fixture(scope="module")
def references():
    """Exact samples, the floor, and fixed slicing directions for each mixture."""
    from conftest import mixture_2d, mixture_20d
    out = {}
    for name, make in [("2d", mixture_2d), ("20d", mixture_20d)]:
        gm = make()
        g = torch.Generator().manual_seed(11)
        a = gm.sample(N, g)
        dirs = torch.randn(gm.dim, 400, generator=g, dtype=torch.float64)
        dirs /= dirs.norm(dim=0)
        floor = sum(float(sliced_wasserstein(a, gm.sample(N, g), directions=dirs)) for _ in range(8)) / 8
        out[name] = (gm, a, dirs, floor)
    return out


@pytest.mark.parametrize("sde_name", list(SDES))
@pytest.mark.parametrize("method", list(S.SAMPLERS))
@pytest.mark.parametrize("mix", ["2d", "20d"])
def test_sampler_matches_mixture(references, mix, method, sde_name):
    gm, exact, dirs, floor = references[mix]
    model = Diffusion(gm, SDES[sde_name]())
    g = torch.Generator().manual_seed(3)
    res = S.sample(model, (N, gm.dim), method=method, steps=STEPS[method], generator=g, dtype=torch.float64)
    assert res.x.shape == (N, gm.dim) and res.x.dtype == torch.float64
    assert res.nfe == model.nfe > 0
    dist = float(sliced_wasserstein(res.x, exact, directions=dirs))
    assert dist < 2.0 * floor, f"{method}/{sde_name}/{mix}: SW {dist:.4f} vs floor {floor:.4f}"


def test_wrong_sampler_is_detected(references):
    """The test can fail: a sampler with far too few steps is flagged (sanity check of the bar)."""
    gm, exact, dirs, floor = references["2d"]
    res = S.sample(Diffusion(gm, VPSDE()), (N, 2), method="ode_euler", steps=3,
                   generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert float(sliced_wasserstein(res.x, exact, directions=dirs)) > 2.0 * floor


def test_nfe_counts_and_callback():
    from conftest import mixture_2d
    model = Diffusion(mixture_2d(), VPSDE())
    seen = []
    x = torch.randn(8, 2, dtype=torch.float64)
    ts = S.time_grid(model.sde, 10, dtype=torch.float64)
    assert S.sample_heun(model, x, ts, callback=lambda d: seen.append(d["i"])).nfe == 20
    assert seen == list(range(10))
    assert S.sample_pc(model, x, ts, corrector="langevin", n_corrector=2).nfe == 30
    res = S.sample_ddim(model, x, ts, return_trajectory=True)
    assert res.nfe == 10 and len(res.trajectory) == 10


def test_seeded_and_batch_independent():
    """Same generator seed -> same samples; float32 works; start states stay on the caller's device."""
    from conftest import mixture_2d
    gm = mixture_2d().float()
    model = Diffusion(gm, VPSDE())
    r1 = S.sample(model, (16, 2), method="ancestral", steps=20, generator=torch.Generator().manual_seed(5))
    r2 = S.sample(model, (16, 2), method="ancestral", steps=20, generator=torch.Generator().manual_seed(5))
    assert r1.x.dtype == torch.float32 and torch.equal(r1.x, r2.x)


def test_bad_inputs_speak():
    from conftest import mixture_2d
    model = Diffusion(mixture_2d(), VPSDE())
    x = torch.randn(4, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        S.time_grid(model.sde, 0)
    with pytest.raises(ValueError, match="outside the SDE's range"):
        S.sample_euler(model, x, torch.tensor([1.5, 0.5], dtype=torch.float64))
    with pytest.raises(ValueError, match="strictly decreasing"):
        S.sample_euler(model, x, torch.tensor([0.1, 0.5], dtype=torch.float64))
    with pytest.raises(TypeError, match="floating-point"):
        S.sample_euler(model, torch.zeros(4, 2, dtype=torch.long), S.time_grid(model.sde, 3))
    with pytest.raises(ValueError, match="unknown sampler"):
        S.sample(model, (4, 2), method="nope")
    with pytest.raises(ValueError, match="unknown predictor"):
        S.sample_pc(model, x, S.time_grid(model.sde, 3, dtype=torch.float64), predictor="nope")


@pytest.mark.parametrize("method", ["pc", "ode_heun", "ddim", "rk45"])
def test_nan_prior_stops_with_step_and_time(method):
    """A prior that returns NaN below some noise level: sampling stops and names the step and t."""
    from invscore.priors import CallablePrior

    def bad(x, sigma):
        return torch.where((sigma < 0.5)[:, None], torch.full_like(x, float("nan")), x / (1 + sigma[:, None] ** 2))

    model = Diffusion(CallablePrior(bad), VPSDE())
    with pytest.raises(FloatingPointError, match=r"NaN or inf"):
        S.sample(model, (4, 2), method=method, steps=30, dtype=torch.float64)
