"""Make the ``score_sde`` fixture: a tiny NCSN++ checkpoint written by score_sde_pytorch's own code, and what
that code computes from it.

Needs a copy of the reference repository (https://github.com/yang-song/score_sde_pytorch: ``models/``,
``op/upfirdn2d.py``, ``sde_lib.py``); the test (``tests/test_fmt_score_sde.py``) does not. Run from anywhere:

    python tests/data/score_sde_tiny/make_fixture.py --ref /path/to/score_sde_pytorch

It builds the reference ``models.ncsnpp.NCSNpp`` (Song et al. 2021, NCSN++) for a tiny VE config (the options of
``configs/ve/cifar10_ncsnpp_continuous.py``, at 16x16, nf=32, ch_mult=(1, 1), one res block per level,
attention at 16x16), gives every parameter random values (score_sde zero-initialises biases and the last
convolution of each block, which would hide mistakes in the key mapping), and saves

- ``checkpoint_1.pth``: what ``utils.save_checkpoint`` writes, ``{'optimizer', 'model', 'ema', 'step'}``, the
  model wrapped in ``torch.nn.DataParallel`` (keys ``module.*``) and ``ema`` = ``models.ema.
  ExponentialMovingAverage.state_dict()`` (``shadow_params``: a list aligned with the parameters that require
  grad), with EMA weights that differ from the raw ones in every 1-D tensor (biases, norms) and the last
  convolution (the other shadow tensors are the raw tensors themselves, which torch.save stores once). To
  keep the file small (~0.3 M parameters; nf=32 is the narrowest deepinv's GroupNorm(32 groups) can build) the
  weights are float16 values (the loader casts them to float32 exactly; the ``sigmas`` buffer stays float64 as
  score_sde makes it) and the optimizer is a fresh Adam (``state`` empty); the test adds a stepped Adam state.
- ``reference.safetensors``: inputs ``x`` in [-1, 1] (``(B, 3, 16, 16)``), the times ``t`` and ``sigma`` (in
  [-1, 1] units, twice score_sde's), and the reference denoiser ``D = 2 (u + σ_u² s(u, t)) − 1`` with
  ``u = (x + 1)/2``, ``σ_u = sde.marginal_prob(0, t)[1]`` and ``s = models.utils.get_score_fn(VESDE, model,
  continuous=True)`` (Tweedie's formula for the VE SDE), for the EMA weights (``D_ema``) and the raw ones
  (``D_model``), in float64.

Two shims only, both outside the reference's maths: score_sde's ``op`` package compiles a CUDA extension on
import, so ``op.upfirdn2d`` is replaced by the reference's own CPU path (``upfirdn2d_native``, read from
``op/upfirdn2d.py``) with its FIR kernel cast to the input's dtype (the reference makes it float32, which a
float64 run cannot mix; the kernel [1, 3, 3, 1]/8 values are exact in both); and ``ml_collections.ConfigDict``
is a ``SimpleNamespace`` (NCSNpp only reads attributes).
"""
from __future__ import annotations

import argparse
import ast
import sys
import types
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
SIGMA_MIN, SIGMA_MAX, NUM_SCALES = 0.01, 50.0, 1000
TIMES = (1e-5, 0.3, 0.6, 1.0)  # score_sde samples t in [eps=1e-5, 1]


def install_op_shim(ref: Path) -> None:
    """``op.upfirdn2d`` = the reference's ``upfirdn2d_native`` (the branch it takes for CPU tensors)."""
    src = (ref / "op" / "upfirdn2d.py").read_text()
    fn = next(n for n in ast.parse(src).body if isinstance(n, ast.FunctionDef) and n.name == "upfirdn2d_native")
    ns = {"torch": torch, "F": torch.nn.functional}
    exec(compile(ast.Module([fn], []), str(ref / "op" / "upfirdn2d.py"), "exec"), ns)

    def upfirdn2d(input, kernel, up=1, down=1, pad=(0, 0)):
        return ns["upfirdn2d_native"](input, kernel.to(input.dtype), up, up, down, down,
                                      pad[0], pad[1], pad[0], pad[1])
    sys.modules["op"] = types.SimpleNamespace(upfirdn2d=upfirdn2d)


def tiny_config():
    ns = types.SimpleNamespace
    model = ns(name="ncsnpp", sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX, num_scales=NUM_SCALES, dropout=0.1,
               embedding_type="fourier", scale_by_sigma=True, ema_rate=0.999, normalization="GroupNorm",
               nonlinearity="swish", nf=32, ch_mult=(1, 1), num_res_blocks=1, attn_resolutions=(16,),
               resamp_with_conv=True, conditional=True, fir=True, fir_kernel=[1, 3, 3, 1], skip_rescale=True,
               resblock_type="biggan", progressive="none", progressive_input="residual",
               progressive_combine="sum", attention_type="ddpm", init_scale=0.0, fourier_scale=16, conv_size=3)
    data = ns(image_size=16, num_channels=3, centered=False)
    return ns(model=model, data=data, training=ns(continuous=True, sde="vesde"))


def randomise(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Every trainable parameter random at a scale that keeps activations O(1) (fan-in scaled weights)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not p.requires_grad:  # GaussianFourierProjection.W keeps its randn * fourier_scale
                continue
            if p.ndim == 1:
                base = 1.0 if "GroupNorm" in name and name.endswith("weight") else 0.0
                p.copy_(base + 0.2 * torch.randn(p.shape, generator=gen))
            else:
                fan_in = p.shape[0] if name.endswith(".W") else p[0].numel()  # NIN.W is (in, out)
                p.copy_(torch.randn(p.shape, generator=gen) / fan_in ** 0.5)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ref", type=Path, required=True, help="a copy of score_sde_pytorch (models/, op/, sde_lib.py)")
    ap.add_argument("--out", type=Path, default=HERE)
    args = ap.parse_args(argv)
    install_op_shim(args.ref)
    sys.path.insert(0, str(args.ref))
    import sde_lib
    from models import ema as ema_lib
    from models import ncsnpp, utils as mutils

    torch.manual_seed(0)  # the reference initialises with the global RNG
    gen = torch.Generator().manual_seed(1)
    config = tiny_config()
    model = torch.nn.DataParallel(ncsnpp.NCSNpp(config))
    randomise(model, gen)
    sigmas = model.module.sigmas
    model = model.half()
    model.module.sigmas = sigmas  # score_sde's buffer is float64 (torch.tensor of a numpy float64 array)
    ema = ema_lib.ExponentialMovingAverage(model.parameters(), decay=config.model.ema_rate)
    trainable = [p for p in model.parameters() if p.requires_grad]
    with torch.no_grad():  # EMA = raw weights moved a little in the 1-D tensors and the last conv, so D differs
        for i, (s, p) in enumerate(zip(ema.shadow_params, trainable)):
            if p.ndim > 1 and i != len(trainable) - 2:
                ema.shadow_params[i] = p.data  # shares the raw tensor's storage: saved once
            else:
                s.add_((0.05 * s.float().abs().mean() * torch.randn(s.shape, generator=gen)).half())
    ema.num_updates = 1
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4)
    state = {"optimizer": optimizer.state_dict(), "model": model.state_dict(), "ema": ema.state_dict(), "step": 1}
    args.out.mkdir(parents=True, exist_ok=True)
    torch.save(state, args.out / "checkpoint_1.pth")

    sde = sde_lib.VESDE(sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX, N=NUM_SCALES)
    b = len(TIMES)
    x = torch.rand(b, 3, 16, 16, generator=gen, dtype=torch.float64) * 2 - 1
    t = torch.tensor(TIMES, dtype=torch.float64)
    sigma_u = sde.marginal_prob(torch.zeros_like(x), t)[1]
    x = x + 2 * sigma_u.view(-1, 1, 1, 1) * torch.randn(x.shape, generator=gen, dtype=torch.float64)
    u = (x + 1) / 2
    out = {"x": x, "t": t, "sigma": 2 * sigma_u}
    model = model.double()
    for name in ("model", "ema"):
        if name == "ema":
            ema.copy_to(model.parameters())  # float16 values into float64 parameters: exact
        score_fn = mutils.get_score_fn(sde, model, train=False, continuous=True)
        with torch.no_grad():
            d_u = u + sigma_u.view(-1, 1, 1, 1) ** 2 * score_fn(u, t)
        out[f"D_{name}"] = 2 * d_u - 1
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in out.items()}, str(args.out / "reference.safetensors"),
              metadata={"made_by": "make_fixture.py", "reference": "yang-song/score_sde_pytorch"})
    for f in ("checkpoint_1.pth", "reference.safetensors"):
        print(f, (args.out / f).stat().st_size, "bytes")


if __name__ == "__main__":
    main()
