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
# consistency sampling is exact only on a consistency map, not on a denoiser: tests/test_consistency.py
@pytest.mark.parametrize("method", [m for m in S.SAMPLERS if m != "consistency"])
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


def _noise_kind(method):
    """How a registered sampler uses randomness after its start state (read off its function and options)."""
    fn, kw = S.SAMPLERS[method]
    if fn is S.sample_rk45:
        return "adaptive"  # deterministic, step sizes from one error norm over the whole batch
    if fn is S.sample_pc:
        return "coupled" if kw.get("corrector", "langevin") != "none" else "noisy"
    if fn is S.sample_ddim and kw.get("eta", 0.0) > 0:
        return "noisy"
    if fn in (S.sample_euler, S.sample_heun, S.sample_ddim):
        return "deterministic"
    return "unknown"


@pytest.mark.parametrize("method", list(S.SAMPLERS))
def test_seeded_and_batch_independent(method):
    """(a) The same generator seed gives identical samples and the global RNG is untouched (all randomness
    comes from the generator); a stochastic sampler gives other samples for another seed, a deterministic
    one the same. (b) Batch independence, as far as it holds — every stochastic step draws its noise for the
    whole batch from the one generator, so the noise row i gets depends on the batch's size and on i, and
    running row i alone is *not* the same draw; what holds:
      - fixed-grid ODE/DDIM(η=0) samplers: row i run alone, or with the other rows' start states replaced,
        gives the same row (to rounding);
      - rk45 picks its steps from one error norm over the batch: row i alone agrees to within the tolerance;
      - noisy predictors without a corrector: replacing the other rows' start states leaves row i
        bit-for-bit unchanged (same noise tensor, row-wise update);
      - 'pc' (Langevin corrector): its step size uses batch-mean norms (Song et al.'s code, see
        invscore.samplers.pc.langevin), so row i *does* change with the other rows — by design.
    (c) The output lies on the start state's device (CPU, and CUDA where present) and dtype (float32 and
    float64, with a prior of that dtype), called directly and through S.sample."""
    from conftest import mixture_2d
    fn, kw = S.SAMPLERS[method]
    kind = _noise_kind(method)
    B, steps, i = 6, 8, 2

    def run(model, start, seed=5):
        g = torch.Generator(start.device).manual_seed(seed)
        if fn is S.sample_rk45:  # loose tolerances: 37 evaluations instead of the defaults' 61
            return fn(model, start, generator=g, **{"rtol": 1e-3, "atol": 1e-3, **kw}).x
        return fn(model, start, S.time_grid(model.sde, steps, device=start.device, dtype=start.dtype),
                  generator=g, **kw).x

    model = Diffusion(mixture_2d(), VPSDE())
    x = torch.randn(B, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    # (a)
    rng = torch.get_rng_state()
    r1 = run(model, x)
    assert torch.equal(r1, run(model, x)), method
    assert torch.equal(torch.get_rng_state(), rng), "a sampler drew from the global RNG"
    if kind in ("noisy", "coupled"):
        assert not torch.allclose(r1, run(model, x, seed=6)), "another seed gave the same samples"
    elif kind in ("deterministic", "adaptive"):
        assert torch.equal(r1, run(model, x, seed=6))
    # (b)
    others = x.clone()
    rows = [j for j in range(B) if j != i]
    others[rows] = 3 * torch.randn(B - 1, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    if kind == "deterministic":
        torch.testing.assert_close(run(model, x[i:i + 1])[0], r1[i], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(run(model, others)[i], r1[i], rtol=1e-12, atol=1e-12)
    elif kind == "adaptive":  # per-step rtol = atol = 1e-3 (see run); the rows differ by 6e-3 here
        torch.testing.assert_close(run(model, x[i:i + 1])[0], r1[i], rtol=1e-2, atol=1e-2)
    elif kind == "noisy":
        assert torch.equal(run(model, others)[i], r1[i])
    elif kind == "coupled":
        assert not torch.allclose(run(model, others)[i], r1[i]), "pc's rows became independent: update this test"
    # (c)
    for device in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
        for dtype in (torch.float32, torch.float64):
            m = Diffusion(mixture_2d().to(device=device, dtype=dtype), VPSDE())
            start = x.to(device=device, dtype=dtype)
            out = r1 if (device, dtype) == ("cpu", torch.float64) else run(m, start)
            assert out.dtype == dtype and out.device == start.device, (device, dtype, out.dtype, out.device)
            res = S.sample(m, (B, 2), method=method, steps=steps, generator=torch.Generator(device).manual_seed(5),
                           device=device, dtype=dtype)
            assert res.x.dtype == dtype and res.x.device.type == device and res.x.shape == (B, 2)
            assert torch.isfinite(res.x).all()


def test_float32_start_with_a_float64_prior_stays_float32():
    from conftest import mixture_2d
    res = S.sample(Diffusion(mixture_2d(), VPSDE()), (4, 2), method="ddim", steps=3, dtype=torch.float32,
                   generator=torch.Generator().manual_seed(0))
    assert res.x.dtype == torch.float32


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
