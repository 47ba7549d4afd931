"""The method registry: every method's declared facts hold when it runs, a user's method works without a
library edit, the CLI's method configs come from the registry, and misuse gets a one-line answer."""
import pytest
import torch

import operators
from invscore.conditional import DPS, METHODS, Cost, Method, get_method, methods_for, register_method, solve
from conftest import identity_latent, inpainting_problem
from invscore.samplers import sample_pc


@pytest.mark.parametrize("name", sorted(METHODS))
@pytest.mark.parametrize("options", [{}, "cheap"])
def test_declared_cost_is_the_counted_cost(name, options):
    """A method's declared NFE per step and image, times the steps, is what solve counts, with its defaults and
    with options that change the cost (fewer particles, no corrector, more CG iterations)."""
    cheap = {"smc": {"particles": 3}, "projection": {"corrector": "none"}, "mmps": {"cg_iters": 3}}
    opts = cheap.get(name, {}) if options == "cheap" else {}
    prior, op, y = inpainting_problem()
    seen = op
    if name == "psld":  # a method for latent priors: run on the identity autoencoder
        from invscore.priors.latent import LatentOperator
        prior = identity_latent(prior)
        seen = LatentOperator(op, prior)
    m = get_method(name, **opts)
    run, steps = m.resolve(seen, 4)  # the method itself, or the one 'auto' picks within 4 NFE
    assert (run is m and steps == 4) or m.delegates
    res = solve(prior, op, y, method=m, steps=4, generator=torch.Generator().manual_seed(2))
    assert res.nfe == run.nfe(steps) == steps * run.cost().nfe and res.vjp == steps * run.cost().vjp
    assert res.method == run.name and res.nfe <= 4 * run.cost().nfe
    assert m.check(seen) is None and name in methods_for(seen)


def test_every_registered_method_declares_valid_facts():
    for name, cls in METHODS.items():
        m = cls()
        assert m.name == name and m.description and m.needs in ("any", "linear", "svd")
        assert m.grid in ("uniform", "edm") and m.steps >= 1 and (m.delegates or isinstance(m.cost(), Cost))
        assert set(m.options) == set(cls.defaults)


class HalfDPS(Method):
    """DPS (Chung et al. 2023) with a smaller default step; a user's method written outside the library."""

    name, description, needs, steps, vjp_per_step = "half_dps_test", "DPS with zeta' = 0.5", "any", 6, 1
    defaults = {"zeta": 0.5}

    def terms(self, op, y, sigma_y):
        return [DPS(op, y, zeta=self.options["zeta"])]

    def sample(self, model, x, ts, **kw):
        return sample_pc(model, x, ts, predictor="ancestral", corrector="none", return_mean=False, **kw)


def test_user_method_as_object_and_registered_equals_builtin():
    """A user's Method subclass runs through solve as an object and, once registered, by name; with the
    built-in DPS's sampler and terms it gives the built-in DPS's samples bit for bit."""
    prior, op, y = inpainting_problem()
    run = lambda method, **kw: solve(prior, op, y, method=method, steps=6, generator=torch.Generator().manual_seed(3),  # noqa: E731
                                     **kw)
    ours = run(HalfDPS(zeta=0.5))
    builtin = run("dps", zeta=0.5)
    assert ours.nfe == 6 and torch.equal(ours.x, builtin.x)
    try:
        register_method(HalfDPS)
        assert torch.equal(run("half_dps_test").x, ours.x)
        from invscore.cli.compose import method_configs
        assert method_configs()["half_dps_test"] == {"name": "half_dps_test", "steps": 6, "grid": "uniform",
                                                     "options": {"zeta": 0.5}}
    finally:
        METHODS.pop("half_dps_test", None)


def test_cli_method_configs_come_from_the_registry():
    from invscore.cli.compose import compose_config
    cfg = compose_config(["method=mmps", "method.options.cg_iters=3"])
    assert cfg.method.name == "mmps" and cfg.steps == METHODS["mmps"].steps and cfg.method.grid == "edm"
    assert dict(cfg.method.options) == {**METHODS["mmps"].defaults, "cg_iters": 3}


def test_misuse_gets_one_line_errors():
    prior, op, y = inpainting_problem()
    with pytest.raises(ValueError, match=r"'ddrm' does not take \['zeta'\]; its options are \['eta', 'eta_b', 'noise_scale', 'nu_max', 'r_max'\]"):
        solve(prior, op, y, method="ddrm", zeta=1.0)
    with pytest.raises(ValueError, match="go to the Method object itself"):
        solve(prior, op, y, method=HalfDPS(), zeta=1.0)
    with pytest.raises(ValueError, match="unknown method 'nope'.*or a Method object"):
        get_method("nope")
    with pytest.raises(ValueError, match="already registered"):
        register_method(type("Other", (HalfDPS,), {"name": "dps"}))
    with pytest.raises(TypeError, match="Method subclass"):
        register_method(object)
    with pytest.raises(ValueError, match="smc does not take extra guidance"):
        solve(prior, op, y, method="smc", guidance=[DPS(op, y)])
    bent = operators.FunctionOperator(torch.tanh, input_shape=(1, 8, 8))
    with pytest.raises(TypeError, match=r"'smc' needs an operator with an SVD.*Methods that take it: dps"):
        solve(prior, bent, bent(y), method="smc")


def test_sigma_y_has_one_home_and_the_argument_overrides_it():
    """The operator's noise model is σ_y's home; solve's sigma_y only overrides it, validated once."""
    prior, op, y = inpainting_problem()
    run = lambda **kw: solve(prior, op, y, method="pigdm", steps=3,  # noqa: E731
                             generator=torch.Generator().manual_seed(4), **kw).x
    assert torch.equal(run(), run(sigma_y=0.05))
    assert not torch.equal(run(), run(sigma_y=0.5))
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="sigma_y must be >= 0"):
            run(sigma_y=bad)
    with pytest.raises(ValueError, match="sigma_y must be a finite number >= 0"):
        operators.make("inpaint_center", img_size=(1, 8, 8), noise=-1.0)


def test_only_the_last_gradient_term_frees_the_graph():
    """Two terms that differentiate through x̂0 compose: the first keeps the network's graph, the last frees
    it, and the first's score is the same as when it runs alone."""
    from invscore.conditional import Guided, PiGDM
    from invscore.priors import Diffusion
    from invscore.sde import VPSDE
    prior, op, y = inpainting_problem()
    base = Diffusion(prior, VPSDE())
    x, t = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(5)), torch.tensor(0.5)
    terms = [PiGDM(op, y), DPS(op, y, zeta=0.7)]
    both = Guided(base, terms)
    assert both.keep_graph(terms[0]) and not both.keep_graph(terms[1])
    shift = both.x0(x, t) - base.x0(x, t)
    alone = Guided(base, [PiGDM(op, y)]).x0(x, t) - base.x0(x, t)
    torch.testing.assert_close(shift, alone)  # DPS acts in post(), not in the score: the shift is ΠGDM's
    assert terms[1]._corr is not None  # and DPS's gradient was taken after ΠGDM's, from the same graph


def test_classifier_free_guidance_at_weight_one_is_the_conditional_model():
    """Ho & Salimans 2022, eq. 6 with our w = 1: x̂0_u + (x̂0_c − x̂0_u) is the conditional denoiser itself, at
    the cost of one extra network evaluation; w = 0 is the unconditional model."""
    from invscore.conditional import ClassifierFreeGuidance, Guided
    from invscore.priors import Diffusion, Gaussian
    from invscore.sde import VPSDE
    d = dict(dtype=torch.float64)
    uncond, cond = Gaussian(torch.zeros(3, **d), torch.eye(3, **d)), Gaussian(torch.ones(3, **d), 0.5 * torch.eye(3, **d))
    base = Diffusion(uncond, VPSDE())
    x, t = torch.randn(4, 3, generator=torch.Generator().manual_seed(6), dtype=torch.float64), torch.tensor(0.4)
    cfg = Guided(base, [ClassifierFreeGuidance(lambda xv, r, c: cond.denoise(xv, r), label=1, weight=1.0)])
    before = base.nfe
    torch.testing.assert_close(cfg.x0(x, t), Diffusion(cond, VPSDE()).x0(x, t))
    assert base.nfe - before == 2
    off = Guided(base, [ClassifierFreeGuidance(lambda xv, r, c: cond.denoise(xv, r), label=1, weight=0.0)])
    torch.testing.assert_close(off.x0(x, t), base.x0(x, t))


def test_a_method_class_with_bad_facts_is_refused_when_written():
    with pytest.raises(ValueError, match="declares needs='matrix'; expected one of"):
        type("Bad", (Method,), {"name": "bad", "needs": "matrix"})
    with pytest.raises(ValueError, match="declares grid='log'"):
        type("Bad", (Method,), {"name": "bad", "grid": "log"})
