"""Memory-saving changes that must not change results (no memory is measured here: see experiments/bench_256.py).

* MMPS (Rozet et al. 2024) takes its guidance Jᵀ Aᵀ v from the CG steps' VJPs instead of one more backward
  pass: it must equal the straightforward computation (CG with graph-keeping VJPs, then one more VJP).
* Activation checkpointing (Chen et al. 2016) of a frozen network must give the same input gradients and
  the same DPS / MMPS samples.
"""
from __future__ import annotations

import copy

import pytest
import torch

import operators
from invscore.conditional import METHODS, Guided, MMPS, Term, solve
from invscore.nets.unet import EDMDenoiser, UNet
from invscore.priors import CallablePrior, Diffusion, freeze
from invscore.priors.checkpointing import activation_checkpointing, checkpointed_blocks, find_blocks
from invscore.sde import VPSDE, bcast
from invscore.testing import mixture_problem
from invscore.utils import per_sample


class ReferenceMMPS(Term):
    """MMPS as first written: ``cg_iters`` CG steps whose VJPs all keep the graph, then Jᵀ Aᵀ v."""

    needs_grad = True

    def __init__(self, op, y, sigma_y, cg_iters):
        self.op, self.y, self.n, self.sigma_y = op, y, cg_iters, op.noise_std(sigma_y)

    def score(self, x, t, x0, model):
        sde = model.sde
        c = bcast(per_sample(sde.ratio(t), x) ** 2 * per_sample(sde.alpha(t), x), x)

        def vjp(w):
            return torch.autograd.grad(x0, x, grad_outputs=w, retain_graph=True)[0]

        def matvec(w):
            return self.sigma_y**2 * w + self.op.A(c * vjp(self.op.A_T(w)))

        res = self.y - self.op(x0.detach())
        v = operators.conjugate_gradient(matvec, res, tol=1e-6, maxiter=self.n, check_every=self.n + 1)
        return vjp(self.op.A_T(v))


class ReferenceMMPSMethod(METHODS["mmps"]):
    def terms(self, op, y, sigma_y):
        return [ReferenceMMPS(op, y, sigma_y, self.options["cg_iters"])]


@pytest.mark.parametrize("cg_iters", [1, 2, 4])
def test_mmps_term_equals_cg_then_one_more_vjp(cg_iters):
    """Nonlinear closed-form prior (a Gaussian mixture, float64): the term equals the reference, takes
    ``cg_iters`` backward passes, and its last one frees the graph (a further backward pass must fail)."""
    pb = mixture_problem(d=6, d_y=3, seed=1)
    model = Diffusion(pb.prior, VPSDE())
    g = torch.Generator().manual_seed(0)
    y = pb.y.expand(4, -1)
    for t in (0.1, 0.5, 0.9):
        t = torch.tensor(t, dtype=torch.float64)
        x = torch.randn(4, 6, generator=g, dtype=torch.float64).requires_grad_(True)
        want = ReferenceMMPS(pb.operator, y, None, cg_iters).score(x, t, model.x0(x, t), model)
        term = MMPS(pb.operator, y, cg_iters=cg_iters)
        x0 = model.x0(x, t)
        passes = []
        x0.register_hook(lambda grad: passes.append(1))
        got = term.score(x, t, x0, Guided(model, [term]))
        torch.testing.assert_close(got, want, rtol=1e-11, atol=1e-13)
        assert len(passes) == cg_iters
        with pytest.raises(RuntimeError, match="backward through the graph a second time"):
            torch.autograd.grad(x0, x, grad_outputs=torch.ones_like(x0))


def test_mmps_keeps_the_graph_for_a_later_term():
    """Followed by another gradient term, MMPS's last backward pass must keep the graph for it."""
    pb = mixture_problem(d=6, d_y=3, seed=2)
    model = Diffusion(pb.prior, VPSDE())
    x = torch.randn(2, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    t = torch.tensor(0.4, dtype=torch.float64)
    first, second = MMPS(pb.operator, pb.y.expand(2, -1), cg_iters=2), MMPS(pb.operator, pb.y.expand(2, -1), cg_iters=2)
    guided = Guided(model, [first, second])
    x0 = model.x0(x, t)
    a = first.score(x, t, x0, guided)
    b = second.score(x, t, x0, guided)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_mmps_samples_equal_the_reference():
    """Whole solves (float64 mixture, same seed): the new term gives the reference's samples to round-off."""
    pb = mixture_problem(d=8, d_y=4, seed=5)
    y = pb.y.expand(3, -1).contiguous()
    for cg_iters in (1, 3):
        new = solve(pb.prior, pb.operator, y, method="mmps", cg_iters=cg_iters, steps=5,
                    generator=torch.Generator().manual_seed(7))
        ref = solve(pb.prior, pb.operator, y, method=ReferenceMMPSMethod(cg_iters=cg_iters), steps=5,
                    generator=torch.Generator().manual_seed(7))
        torch.testing.assert_close(new.x, ref.x, rtol=1e-10, atol=1e-12)
        assert new.nfe == ref.nfe == 5


def _unet():
    torch.manual_seed(0)
    net = UNet(in_channels=1, channels=(8, 16), num_res_blocks=1, attn_levels=(1,), mid_attention=True)
    torch.nn.init.normal_(net.conv_out.weight, std=0.1)  # zero-initialised: give the output some weight
    return freeze(EDMDenoiser(net).double())


def test_checkpointing_gives_the_same_input_gradient_with_frozen_parameters():
    """float64 UNet at 16×16, parameters frozen: the same output and input VJP, the blocks really recompute
    (each runs twice per differentiated call), state-dict keys unchanged, and ``on=False`` restores it."""
    den = _unet()
    x = torch.randn(2, 1, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    sigma = torch.tensor([0.3, 2.0], dtype=torch.float64)
    w = torch.randn(2, 1, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(2))

    def value_and_vjp():
        xg = x.clone().requires_grad_(True)
        out = den(xg, sigma)
        return out.detach(), torch.autograd.grad(out, xg, grad_outputs=w)[0]

    keys = list(den.state_dict())
    out0, g0 = value_and_vjp()
    activation_checkpointing(den)
    names = checkpointed_blocks(den)
    assert names == [n for n, _ in find_blocks(den)] and any(n.startswith("net.up.") for n in names)
    block = den.net.down[0]
    conv = next(m for m in block.modules() if isinstance(m, torch.nn.Conv2d))
    calls = []
    conv.register_forward_pre_hook(lambda *_: calls.append(1))
    out1, g1 = value_and_vjp()
    assert len(calls) == 2  # forward, then recomputed in the backward pass
    torch.testing.assert_close(out1, out0, rtol=0, atol=1e-12)
    torch.testing.assert_close(g1, g0, rtol=1e-10, atol=1e-12)
    assert list(den.state_dict()) == keys
    with torch.no_grad():
        den(x, sigma)
    assert len(calls) == 3  # without gradients a block runs once
    copied = copy.deepcopy(den)
    assert checkpointed_blocks(copied) == names
    activation_checkpointing(den, on=False)
    assert checkpointed_blocks(den) == [] and "forward" not in vars(block)
    out2, g2 = value_and_vjp()
    assert len(calls) == 4
    torch.testing.assert_close(g2, g0, rtol=0, atol=0)


@pytest.mark.parametrize("method,opts", [("dps", {}), ("mmps", {"cg_iters": 2})])
def test_checkpointing_gives_the_same_samples(method, opts):
    """DPS (one backward pass per step) and MMPS with 2 CG steps (a backward pass that keeps the graph,
    then one that frees it): the same float64 samples with and without checkpointing."""
    op = operators.make("inpaint_center", img_size=(1, 16, 16), noise=0.05)
    x = torch.rand(2, 1, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * 2 - 1
    y = op.measure(x, generator=torch.Generator().manual_seed(4))
    runs = []
    for on in (False, True):
        prior = CallablePrior(activation_checkpointing(_unet(), on=on), data_shape=(1, 16, 16))
        res = solve(prior, op, y, method=method, steps=3, generator=torch.Generator().manual_seed(5), **opts)
        runs.append(res.x)
    torch.testing.assert_close(runs[1], runs[0], rtol=1e-10, atol=1e-10)


def test_checkpointing_errors_name_the_fix():
    with pytest.raises(ValueError, match="no blocks to checkpoint.*blocks="):
        activation_checkpointing(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match=r"blocks \['nope'\] are not submodules"):
        activation_checkpointing(_unet(), blocks=["nope"])
    with pytest.raises(TypeError, match="takes a prior or an nn.Module"):
        activation_checkpointing(lambda x, s: x)
    lin = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    assert checkpointed_blocks(activation_checkpointing(lin, blocks=["1"])) == ["1"]


def test_the_cli_switch_checkpoints_the_prior(tmp_path, capsys, monkeypatch):
    """checkpointing=true (configs/config.yaml) runs a gradient method on the checkpointed shipped prior; the
    samples equal the run without it (the arithmetic is the same), and the summary records the switch."""
    import json
    import invscore.priors.checkpointing as ckpt
    from invscore.cli import main
    seen = []
    monkeypatch.setattr(ckpt, "activation_checkpointing",
                        lambda prior: seen.append(checkpointed_blocks(activation_checkpointing(prior))))
    runs = {}
    for flag in ("false", "true"):
        out = tmp_path / flag
        assert main(["inpaint", "--method", "dps", "--steps", "3", "--n", "1", "--quiet", "--threads", "1",
                     "--out", str(out), f"checkpointing={flag}"]) == 0, capsys.readouterr().err
        runs[flag] = json.loads((out / "summary.json").read_text())
    assert len(seen) == 1 and len(seen[0]) > 3  # only the 'true' run, and its UNet's blocks
    assert runs["true"]["metrics"]["psnr"] == pytest.approx(runs["false"]["metrics"]["psnr"], abs=1e-4)
