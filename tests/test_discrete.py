"""DiscreteVPSDE: a DDPM table as a VP SDE (Song et al. 2021, App. B) — it reproduces its table and DDPM's
chain, inverts its ratio, approximates VPSDE(0.1, 20), runs every sampler and method unchanged, and with
NetworkPrior's 'step'/'step_nearest' gives a discrete network's exact denoiser."""
import math

import pytest
import torch
from torch import nn

from invscore.conditional import METHODS, get_method, solve
from conftest import identity_latent, inpainting_problem
from invscore.priors import Diffusion, Gaussian, NetworkPrior
from invscore.samplers import SAMPLERS, sample, time_grid
from invscore.sde import DiscreteVPSDE, VPSDE

KINDS = ["linear", "scaled_linear", "cosine"]
D64 = torch.float64


def _sde(kind):
    if kind == "scaled_linear":
        return DiscreteVPSDE.schedule(kind, beta_start=0.00085, beta_end=0.012)
    return DiscreteVPSDE.schedule(kind)


def _off_knot_times(sde, n=97):
    """Times strictly inside steps (a quarter of the way between two knots), where f and g² are smooth."""
    k = torch.linspace(1, sde.num_steps - 2, n, dtype=D64).round()
    return (k + 0.25) / sde.num_steps


@pytest.mark.parametrize("kind", KINDS)
def test_reproduces_its_table(kind):
    sde = _sde(kind)
    N, ac = sde.num_steps, sde.alphas_cumprod
    i = torch.arange(N, dtype=D64)
    t = sde.step_to_t(i)
    assert N == 1000 and ac.dtype == D64 and (sde.T, sde.t_min) == (1.0, 1 / N)
    torch.testing.assert_close(t, (i + 1) / N, rtol=0, atol=0)
    torch.testing.assert_close(sde.alpha(t) ** 2, ac, rtol=0, atol=1e-12)
    torch.testing.assert_close(sde.sigma(t) ** 2, 1 - ac, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(sde.timestep(t), i, rtol=0, atol=1e-9)
    assert float(sde.timestep(torch.tensor(0.0))) == 0 and float(sde.timestep(torch.tensor(2.0))) == N - 1
    # from_betas inverts betas, and the table is strictly decreasing in (0, 1)
    torch.testing.assert_close(DiscreteVPSDE.from_betas(sde.betas).alphas_cumprod, ac, rtol=1e-12, atol=0)
    assert bool((ac[1:] < ac[:-1]).all()) and 0 < float(ac[-1]) and float(ac[0]) < 1
    # VP everywhere, including between steps and on [0, t_min]
    tt = torch.linspace(0, 1, 1237, dtype=D64)
    torch.testing.assert_close(sde.alpha(tt) ** 2 + sde.sigma(tt) ** 2, torch.ones_like(tt), rtol=0, atol=1e-14)
    assert float(sde.alpha(torch.tensor(0.0, dtype=D64))) == 1.0


def test_schedules_are_the_published_ones():
    N = 1000
    lin = DiscreteVPSDE.schedule("linear")
    torch.testing.assert_close(lin.betas, torch.linspace(1e-4, 0.02, N, dtype=D64), rtol=1e-9, atol=1e-15)
    sl = DiscreteVPSDE.schedule("scaled_linear", beta_start=0.00085, beta_end=0.012)
    torch.testing.assert_close(sl.betas, torch.linspace(0.00085**0.5, 0.012**0.5, N, dtype=D64) ** 2,
                               rtol=1e-9, atol=1e-15)
    # cosine (Nichol & Dhariwal eq. 17): ᾱ_i = fbar((i+1)/N)/fbar(0) wherever beta was not clipped at 0.999
    cos = DiscreteVPSDE.schedule("cosine")
    s = 0.008
    fbar = lambda u: math.cos((u + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    b = cos.betas
    assert float(b.max()) <= 0.999 + 1e-12 and abs(float(b[-1]) - 0.999) < 1e-12
    clipped = int((b >= 0.999 - 1e-12).sum())
    ref = torch.tensor([fbar((i + 1) / N) / fbar(0) for i in range(N - clipped)], dtype=D64)
    torch.testing.assert_close(cos.alphas_cumprod[: N - clipped], ref, rtol=1e-10, atol=1e-15)
    assert DiscreteVPSDE.schedule("linear", num_steps=50).num_steps == 50


def test_bad_tables_are_refused():
    with pytest.raises(ValueError, match="strictly decreasing"):
        DiscreteVPSDE(torch.tensor([0.9, 0.95, 0.5]))
    with pytest.raises(ValueError, match="strictly decreasing"):
        DiscreteVPSDE(torch.tensor([1.0, 0.5]))
    with pytest.raises(ValueError, match="betas must lie"):
        DiscreteVPSDE.from_betas(torch.tensor([0.1, 1.0]))
    with pytest.raises(ValueError, match="unknown schedule"):
        DiscreteVPSDE.schedule("quadratic")


@pytest.mark.parametrize("kind", KINDS)
def test_ratio_to_t_inverts_ratio(kind):
    sde = _sde(kind)
    t = torch.cat([torch.linspace(sde.t_min, sde.T, 4001, dtype=D64), _off_knot_times(sde),
                   sde.step_to_t(torch.arange(sde.num_steps, dtype=D64))])
    torch.testing.assert_close(sde.ratio_to_t(sde.ratio(t)), t, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(sde.ratio(t), sde.sigma(t) / sde.alpha(t), rtol=1e-10, atol=0)
    # shapes and the clamp of time_to_ratio_grid
    r = sde.ratio(t[:24]).reshape(8, 3)
    assert sde.ratio_to_t(r).shape == r.shape
    assert float(sde.time_to_ratio_grid(torch.tensor([1e6], dtype=D64))) == sde.T


@pytest.mark.parametrize("kind", KINDS)
def test_f_and_g2_are_consistent(kind):
    """f = d log alpha/dt and g² = d sigma²/dt − 2 f sigma² (= −2f, VP) inside each step (central differences)."""
    sde = _sde(kind)
    t, h = _off_knot_times(sde), 1e-7
    dloga = (sde.log_alpha(t + h) - sde.log_alpha(t - h)) / (2 * h)
    dsig2 = (sde.sigma(t + h) ** 2 - sde.sigma(t - h) ** 2) / (2 * h)
    torch.testing.assert_close(sde.f(t), dloga, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(sde.g2(t), dsig2 - 2 * sde.f(t) * sde.sigma(t) ** 2, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(sde.g2(t), -2 * sde.f(t), rtol=0, atol=0)
    # on step i (between t_{i−1} and t_i) the drift is ½ N log(1 − β_i)
    i = torch.round(t * sde.num_steps).long()
    torch.testing.assert_close(sde.f(t), 0.5 * sde.num_steps * torch.log1p(-sde.betas[i]), rtol=1e-10, atol=0)
    assert bool((sde.g2(t) > 0).all())


@pytest.mark.parametrize("kind", KINDS)
def test_discretize_on_the_grid_is_ddpm(kind):
    """From t_{i−1} to t_i the chain is x_i = sqrt(1 − β_i) x_{i−1} + sqrt(β_i) z (Ho et al. eq. 2; Song et al.
    App. B), for every i including the first step from the data at t = 0."""
    sde = _sde(kind)
    N = sde.num_steps
    t = sde.step_to_t(torch.arange(N, dtype=D64))
    dt = torch.full_like(t, 1 / N)
    x = torch.ones(N, 1, dtype=D64)
    f, G = sde.discretize(x, t, dt)
    torch.testing.assert_close((x + f)[:, 0], torch.sqrt(1 - sde.betas), rtol=1e-12, atol=0)
    torch.testing.assert_close(G**2, sde.betas, rtol=1e-10, atol=0)
    # the chain's composition is the table: prod (1 − β_j) = ᾱ_i
    torch.testing.assert_close(torch.cumprod(1 - sde.betas, 0), sde.alphas_cumprod, rtol=1e-10, atol=0)


def test_linear_schedule_is_vpsde_discretised():
    """DDPM's linear betas with N = 1000 are VPSDE(0.1, 20) at t_i = (i+1)/N up to the discretisation:
    −log ᾱ_i = Σ_{j≤i} −log(1 − β_j) differs from ∫_0^{t_i} β(s) ds by the second-order term ½ Σ β_j²
    (≤ 0.07) plus the Riemann-sum error O(β_max/N); doubling N halves the difference."""
    disc, cont = DiscreteVPSDE.schedule("linear"), VPSDE(0.1, 20.0)

    def gap(N):
        b = (0.1 + 19.9 * torch.arange(N, dtype=D64) / (N - 1)) / N
        sde = DiscreteVPSDE.from_betas(b)
        t = sde.step_to_t(torch.arange(N, dtype=D64))
        return (-2 * sde.log_alpha(t) - cont.int_beta(t)).abs(), b, t

    err, b, t = gap(1000)
    torch.testing.assert_close(disc.betas, b, rtol=1e-9, atol=1e-15)
    bound = 0.5 * torch.cumsum(b**2, 0) / (1 - float(b.max())) + 2 * 20.0 / 1000
    assert bool((err <= bound).all()), float((err - bound).max())
    assert float(err.max()) < 0.08
    # alpha and sigma within that: |Δ log alpha| = ½ err
    tt = torch.linspace(disc.t_min, 1, 301, dtype=D64)
    assert float((disc.log_alpha(tt) - cont.log_alpha(tt)).abs().max()) < 0.04 + 0.5 * 20 / 1000
    assert float((disc.sigma(tt) - cont.sigma(tt)).abs().max()) < 0.01
    err2, _, _ = gap(2000)
    assert 0.45 < float(err2.max()) / float(err.max()) < 0.55
    # and g² ≈ beta(t) to O(beta²/N + beta_max/N)
    tq = _off_knot_times(disc)
    assert float((disc.g2(tq) - cont.beta(tq)).abs().max()) < 0.3


# -- every sampler and every method runs unchanged ----------------------------------------------------------
def _gaussian(d=3, c=0.7):
    mu = torch.tensor([0.5, -1.0, 2.0][:d], dtype=D64)
    return Gaussian(mu, c**2 * torch.eye(d, dtype=D64)), mu, c


@pytest.mark.parametrize("method", sorted(SAMPLERS))
@pytest.mark.parametrize("grid", ["uniform", "edm"])
def test_every_sampler_runs(method, grid):
    if method == "rk45" and grid == "edm":
        pytest.skip("rk45 chooses its own steps")
    prior, mu, c = _gaussian()
    sde = DiscreteVPSDE.schedule("linear")
    model = Diffusion(prior, sde)
    kw = {"rtol": 1e-3, "atol": 1e-3} if method == "rk45" else {"grid": grid}
    run = lambda model: sample(model, (64, 3), method=method, steps=5, generator=torch.Generator().manual_seed(0),  # noqa: E731
                               dtype=D64, **kw)
    res = run(model)
    assert res.x.shape == (64, 3) and bool(torch.isfinite(res.x).all()) and res.nfe > 0
    # with the same noise, the same sampler on the VPSDE(0.1, 20) this table discretises gives nearly the same
    # samples, to the schedules' ~1% difference in g² (5 steps are far from converged for the SDE samplers, for
    # both SDEs alike; Euler–Maruyama on the 'edm' grid, steps of dt ≈ 0.3 at g² ≈ 20, amplifies it to ~4%)
    ref = run(Diffusion(prior, VPSDE(0.1, 20.0, t_min=sde.t_min)))
    err = float((res.x - ref.x).abs().max())
    assert err < (0.05 if method == "euler_maruyama" else 0.01) * float(ref.x.abs().max()), err


def test_ode_sampler_moments_match_the_gaussian():
    """Heun on the 'edm' grid (40 steps) from p_T: samples at t_min have mean alpha μ and variance
    alpha² c² + sigma² (the exact marginal at t_min), within 4.5 standard errors of n = 20000 draws
    (mean: sqrt(v/n); variance: v sqrt(2/(n−1))) plus 1e-3 for the solver."""
    prior, mu, c = _gaussian()
    sde = DiscreteVPSDE.schedule("linear")
    n = 20000
    res = sample(Diffusion(prior, sde), (n, 3), method="ode_heun", steps=40, grid="edm",
                 generator=torch.Generator().manual_seed(1), dtype=D64)
    tm = torch.tensor(sde.t_min, dtype=D64)
    a, s = sde.alpha(tm), sde.sigma(tm)
    v = a**2 * c**2 + s**2
    assert bool(((res.x.mean(0) - a * mu).abs() < 4.5 * (v / n).sqrt() + 1e-3).all()), res.x.mean(0)
    assert bool(((res.x.var(0) - v).abs() < 4.5 * v * math.sqrt(2 / (n - 1)) + 1e-3).all()), res.x.var(0)


def test_ddim_on_the_trained_grid_hits_trained_steps():
    """A 'uniform' grid of N/k steps lands on t_i exactly: DDIM then queries the network at integral steps."""
    sde = DiscreteVPSDE.schedule("linear")
    ts = time_grid(sde, 999, "uniform")
    steps = sde.timestep(ts)
    torch.testing.assert_close(steps, steps.round(), rtol=0, atol=1e-9)


@pytest.mark.parametrize("name", sorted(METHODS))
@pytest.mark.parametrize("grid", ["uniform", "edm"])
def test_every_method_runs(name, grid):
    prior, op, y = inpainting_problem()
    opts = {"smc": {"particles": 3}, "mmps": {"cg_iters": 3}}.get(name, {})
    m = get_method(name, **opts)
    prior = identity_latent(prior) if name == "psld" else prior  # PSLD is for latent priors
    res = solve(prior, op, y, method=m, steps=4, sde=DiscreteVPSDE.schedule("linear"), grid=grid,
                generator=torch.Generator().manual_seed(2))
    run, steps = m.resolve(op, 4)  # 'auto' runs the method it picks
    assert res.x.shape == y.shape[:1] + (1, 8, 8) and bool(torch.isfinite(res.x).all())
    assert res.nfe == run.nfe(steps) and res.method == run.name


# -- a discrete network through NetworkPrior ----------------------------------------------------------------
class _TableNet(nn.Module):
    """The exact network of N(μ, c² I) trained on a DDPM table, written as a function of the step: ε̂(x_i, i) =
    (x_i − sqrt(ᾱ_i) μ) sqrt(1 − ᾱ_i)/(ᾱ_i c² + 1 − ᾱ_i) (and its x0 and v forms). ``integral``: assert the step
    is a whole number (a network that only knows its table); otherwise interpolate log ᾱ linearly in the step."""

    def __init__(self, alphas_cumprod, mu, c, kind, integral):
        super().__init__()
        self.logac, self.mu, self.c, self.kind, self.integral = alphas_cumprod.log(), mu, c, kind, integral

    def forward(self, x, step):
        step = torch.as_tensor(step, dtype=D64).expand(x.shape[0])
        if self.integral:
            assert bool((step == step.round()).all()), step
            ac = self.logac[step.long()].exp()
        else:
            k = step.floor().long().clamp(0, self.logac.numel() - 2)
            w = step - k
            ac = (self.logac[k] + w * (self.logac[k + 1] - self.logac[k])).exp()
        ac = ac[:, None]
        a, s = ac.sqrt(), (1 - ac).sqrt()
        eps = (x - a * self.mu) * s / (ac * self.c**2 + 1 - ac)
        x0 = (x - s * eps) / a
        return {"eps": eps, "x0": x0, "v": a * eps - s * x0}[self.kind]


@pytest.mark.parametrize("kind", ["eps", "v", "x0"])
@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_network_prior_on_a_discrete_table_is_exact(kind, schedule):
    sde = _sde(schedule)
    prior, mu, c = _gaussian()
    x = 2 * torch.randn(7, 3, dtype=D64, generator=torch.Generator().manual_seed(3))
    i = torch.tensor([0, 1, 17, 250, 500, 998, 999])
    on_grid = sde.ratio(sde.step_to_t(i.to(D64)))
    between = sde.ratio(sde.step_to_t(i.to(D64).clamp(max=998) + 0.37))
    for ti, integral in (("step", False), ("step_nearest", True)):
        p = NetworkPrior(_TableNet(sde.alphas_cumprod, mu, c, kind, integral), sde, parametrization=kind,
                         time_input=ti)
        torch.testing.assert_close(p.denoise(x, on_grid), prior.denoise(x, on_grid), rtol=0, atol=1e-10)
    # between trained steps 'step' is exact for a network that interpolates its table
    p = NetworkPrior(_TableNet(sde.alphas_cumprod, mu, c, kind, False), sde, parametrization=kind, time_input="step")
    torch.testing.assert_close(p.denoise(x, between), prior.denoise(x, between), rtol=0, atol=1e-10)
    # 'step_nearest' evaluates the integral-only network there too, at the nearest step: not the exact denoiser
    # (its noise level is off by up to half a step), but close to it
    pn = NetworkPrior(_TableNet(sde.alphas_cumprod, mu, c, kind, True), sde, parametrization=kind,
                      time_input="step_nearest")
    near = pn.denoise(x, between)
    assert bool(torch.isfinite(near).all())
    assert float((near - prior.denoise(x, between)).abs().max()) < 0.1


def test_step_nearest_snaps_to_the_nearest_trained_step():
    sde = DiscreteVPSDE.schedule("linear")
    seen = []

    class Spy(nn.Module):
        def forward(self, x, step):
            seen.append(step.clone())
            return torch.zeros_like(x)

    sig = sde.ratio(sde.step_to_t(torch.tensor([10.2, 10.7, 500.49, 0.0, 999.0], dtype=D64)))
    x = torch.randn(5, 2, dtype=D64)
    NetworkPrior(Spy(), sde, time_input="step_nearest").denoise(x, sig)
    NetworkPrior(Spy(), sde, time_input="step").denoise(x, sig)
    torch.testing.assert_close(seen[0], torch.tensor([10.0, 11.0, 500.0, 0.0, 999.0], dtype=D64), rtol=0, atol=0)
    torch.testing.assert_close(seen[1], torch.tensor([10.2, 10.7, 500.49, 0.0, 999.0], dtype=D64), rtol=0, atol=1e-9)
    # eps-prediction with eps = 0: x0 = x_t / alpha = x at the step used (snapped: alpha(t_i)·x / alpha(t_i))
    out = NetworkPrior(Spy(), sde, time_input="step_nearest").denoise(x, sig)
    torch.testing.assert_close(out, x)


def test_step_time_inputs_need_a_discrete_sde():
    for ti in ("step", "step_nearest"):
        with pytest.raises(ValueError, match="needs a discrete-schedule SDE"):
            NetworkPrior(nn.Identity(), VPSDE(), time_input=ti)
        assert NetworkPrior(nn.Identity(), DiscreteVPSDE.schedule("linear"), time_input=ti).time_input == ti
    # 'v' is accepted (variance preserving) and 'ddpm' still works as before on the discrete SDE
    assert NetworkPrior(nn.Identity(), DiscreteVPSDE.schedule("cosine"), parametrization="v").parametrization == "v"
    sde = DiscreteVPSDE.schedule("linear")
    p = NetworkPrior(nn.Identity(), sde, time_input="ddpm", num_steps=1000)
    t = torch.tensor([0.5], dtype=D64)
    torch.testing.assert_close(p._cond(t), t * 999)


def test_float32_and_device_tables():
    """float32 times get float32 values; the table is cached per (device, dtype)."""
    sde = DiscreteVPSDE.schedule("linear")
    t = torch.linspace(sde.t_min, 1, 11)
    for fn in (sde.alpha, sde.sigma, sde.f, sde.g2, sde.ratio, sde.timestep):
        assert fn(t).dtype == torch.float32
    torch.testing.assert_close(sde.alpha(t), sde.alpha(t.double()).float())
    torch.testing.assert_close(sde.ratio_to_t(sde.ratio(t)), t, rtol=1e-4, atol=1e-5)
    assert float(sde.alpha(0.5)) == pytest.approx(float(sde.alpha(torch.tensor(0.5, dtype=D64))), rel=1e-6)
