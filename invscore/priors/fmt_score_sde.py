"""Prior format ``score_sde``: score_sde_pytorch NCSN++ checkpoints (Song et al. 2021; ``checkpoint_N.pth``) run
by deepinv's :class:`deepinv.models.NCSNpp` (EDM's port of the same network; Karras et al. 2022, Table 1, "VE").

``load_prior("score_sde:PATH")`` executes no code from the file: ``torch.load(weights_only=True)`` of
``{'optimizer', 'model', 'ema', 'step'}`` (plain containers; or a bare model state dict, also as safetensors).
It takes the EMA weights (what score_sde samples with) unless ``ema=False``: ``ema.shadow_params``
is a list aligned with the parameters that require grad in ``model.parameters()`` order (``models/ema.py``) —
the module-registration order, which is the state-dict order less its one buffer ``sigmas``; the Fourier ``W``
(``requires_grad=False``) is not in it and comes from ``model``. Keys map as (:func:`key_map`): ``0.W`` →
``map_noise.freqs``; ``1``/``2`` → ``map_layer0/1``; the first conv → ``enc.RxR_conv``; ResnetBlockBigGANpp
``GroupNorm_0/1, Conv_0/1, Dense_0, Conv_2`` → UNetBlock ``norm0/1, conv0/1, affine, skip`` (``_block{j}``,
``_down``, ``_in0/1``, ``_up``); AttnBlockpp → the preceding block's ``norm2``, ``qkv`` (channel ``3c + j`` from
``NIN_j.W[:, c]``), ``proj`` (``NIN_3.Wᵀ``); pyramid ``Conv2d_0`` → ``enc.rxr_aux_residual``; the last norm, conv
→ ``dec.RxR_aux_norm``, ``_aux_conv``. Shapes are checked, then NCSNpp loads strictly.

Denoiser: the model takes ``u`` in [0, 1] (``centered=False``: it computes ``2u − 1`` itself) and score_sde's
``σ_u``, and returns the score ``h/σ_u`` (``scale_by_sigma``). With ``x = 2u − 1``, ``σ = 2σ_u``, Tweedie's
``D_u = u + σ_u² s_u`` is ``D(x, σ) = x + σ F(x, log(σ/2))``, ``F = h``: NCSNpp's ``forward_unet`` under its
``'ve-baseline'`` preconditioning, evaluated in the input's dtype (NCSNpp.forward casts to float32).

Supported (equal to the reference to float64 rounding): ``configs/ve/cifar10_ncsnpp_continuous.py`` and
``cifar10_ncsnpp_deep_continuous.py``, i.e. the options :data:`ASSUMED`, with any ``nf``, ``ch_mult``,
``num_res_blocks``, attention levels and channels (read from the shapes; widths multiples of 32; score_sde's
GroupNorm groups ``min(C/4, 32)`` are set on NCSNpp's norms, its own 32 for C ≥ 128). A FormatError names any
other option: ``progressive='output_skip'``/``'residual'``, ``progressive_input='input_skip'``/``'none'`` (every
256² and 1024² VE config), ``embedding_type='positional'`` (SMLD ``cifar10_ncsnpp``, ``celeba_ncsnpp``, all
VP/sub-VP NCSN++), ``resblock_type='ddpm'``, ``fir=False``, or a card's value for an option the weights hide.

Not in the weights: σ_min, σ_max come from the ``sigmas`` buffer (``get_sigmas``: σ_max … σ_min), the image size
from the attention level (``16·2^level``: every score_sde NCSN++ config has ``attn_resolutions=(16,)``). A JSON
card beside the checkpoint (``checkpoint_N.json``, flat or score_sde's ``{"model": …, "data": …}``) or ``config``
overrides them (``image_size``, ``sigma_min``/``sigma_max`` in score_sde's units); the card says which was used.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ..checkpoint import describe_mismatch, state_dict_mismatch
from ..sde import VESDE
from .base import Prior, freeze
from .fmt_adm import _first_line, read_object
from .formats import FormatError, register_format

__all__ = ["score_sde_prior", "ScoreSdePrior", "read_checkpoint", "infer_config", "key_map", "ASSUMED"]

#: options the weights cannot show, and the values implemented (those of the VE NCSN++ configs supported)
ASSUMED = {"nonlinearity": "swish", "scale_by_sigma": True, "centered": False, "fir": True,
           "fir_kernel": [1, 3, 3, 1], "skip_rescale": True, "continuous": True, "resblock_type": "biggan",
           "progressive": "none", "progressive_input": "residual", "embedding_type": "fourier",
           "conditional": True}
_SUPPORTED = ("NCSN++ with the options of configs/ve/cifar10_ncsnpp_continuous.py (resblock_type='biggan', "
              "progressive='none', progressive_input='residual', embedding_type='fourier', fir=True)")
_CARD_KEYS = {"image_size", "sigma_min", "sigma_max", *ASSUMED}


def read_checkpoint(path):
    """A ``checkpoint_N.pth``'s object (``{'model', 'ema', 'step', 'optimizer'}``, or a plain state dict), read
    without executing code by :func:`~invscore.priors.fmt_adm.read_object`."""
    return read_object(path, "score_sde checkpoint")


def _split(obj, path) -> tuple[dict, object, dict]:
    """(model state dict without DataParallel's ``module.``, EMA shadow list (None: no EMA), step and decay)."""
    ema, meta = None, {}
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        e = obj.get("ema")
        ema = (e.get("shadow_params") if isinstance(e, dict) else e) if "ema" in obj else None
        meta = {"step": obj.get("step"), "ema_decay": e.get("decay") if isinstance(e, dict) else None}
        obj = obj["model"]
    if not (isinstance(obj, dict) and obj and all(isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items())):
        what = f"dict with keys {list(obj)[:5]}" if isinstance(obj, dict) else type(obj).__name__
        raise FormatError(f"{str(path)!r} holds a {what}, not a score_sde checkpoint ({{'model', 'ema', 'step', "
                          "'optimizer'}} as run_lib.py saves it) nor a model state dict")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in obj.items()}, ema, meta


def _kind(m: dict) -> str:
    keys = set(m)
    if keys == {"W"} or "NIN_3.W" in keys:
        return "fourier" if keys == {"W"} else "attn"
    if "Conv_0.weight" in keys and "GroupNorm_0.weight" in keys:  # DDPM blocks: NIN_0 or 3x3 Conv_2 shortcut
        ddpm = "NIN_0.W" in keys or "Conv_2.weight" in keys and m["Conv_2.weight"].shape[-1] == 3
        return "res_ddpm" if ddpm else "res"
    if keys in ({"Conv2d_0.weight", "Conv2d_0.bias"}, {"Conv_0.weight", "Conv_0.bias"}):
        return "pyramid" if "Conv2d_0.weight" in keys else "combine" if m["Conv_0.weight"].shape[-1] == 1 \
            else "conv_resample"
    return {1: "norm", 2: "dense", 4: "conv"}.get(m["weight"].ndim, "?") if keys == {"weight", "bias"} else "?"


def _unsupported(mods: dict, kinds: list, cin: int) -> list[str]:
    """The score_sde options the module sequence shows that NCSNpp(model_type='ncsn') does not implement."""
    if kinds and kinds[0] != "fourier":  # the other checks assume the Fourier layer at index 0
        return ["embedding_type='positional' (SMLD cifar10_ncsnpp/celeba_ncsnpp, VP and sub-VP NCSN++)"]
    found = [opt for kind, opt in (("res_ddpm", "resblock_type='ddpm'"), ("combine", "progressive_input='input_skip'"),
                                   ("conv_resample", "fir=False")) if kind in kinds]
    convs = [i for i, k in zip(mods, kinds) if k == "conv"]
    if sum(int(mods[i]["weight"].shape[0]) == cin for i in convs) > 1:
        found.append("progressive='output_skip'")
    if any(int(mods[i]["weight"].shape[0]) != cin for i in convs[1:]):
        found.append("progressive='residual'")
    square = [m["Conv_2.weight"].shape[:2] for k, m in zip(kinds, mods.values()) if k == "res" and "Conv_2.weight" in m]
    if any(a == b for a, b in square) and not {"pyramid", "combine", "conv_resample"} & set(kinds):  # down/up blocks
        found.append("progressive_input='none'")
    return found


def infer_config(sd: dict, source: str = "state dict") -> dict:
    """``channels, nf, ch_mult, num_res_blocks, attn_levels`` of a score_sde NCSN++ state dict (keys without
    ``module.``), read from its shapes; FormatError naming an unsupported option or what is not NCSN++."""
    mods: dict[int, dict] = {}
    for k, v in sd.items():  # all_modules.<i>.<rest>: score_sde's flat ModuleList
        head, _, rest = k.partition(".")
        idx, _, rest = rest.partition(".")
        if head == "all_modules" and idx.isdigit():
            mods.setdefault(int(idx), {})[rest] = v
    mods = dict(sorted(mods.items()))
    if not mods or list(mods) != list(range(len(mods))) or len(mods) < 6:
        raise FormatError(f"{source} is not a score_sde NCSN++ state dict: expected keys 'all_modules.<i>.*' "
                          f"(models/ncsnpp.py), got {list(sd)[:4]}")
    kinds = [_kind(m) for m in mods.values()]
    cin = int(mods[3]["weight"].shape[1]) if kinds[3:4] == ["conv"] else 0
    bad = _unsupported(mods, kinds, cin)
    if bad or kinds[:4] != ["fourier", "dense", "dense", "conv"]:
        raise FormatError(f"{source}: score_sde NCSN++ option(s) not supported: {', '.join(bad) or 'unknown layout'}"
                          f" (module kinds {kinds[:8]}…). Supported: {_SUPPORTED}")
    nf, levels = int(mods[3]["weight"].shape[0]), kinds.count("pyramid") + 1
    nrb, rem = divmod(kinds.count("res") - 3 * levels, 2 * levels)  # res blocks = 2 L nrb + 3 L (see _layout)
    ch_mult, attn, i = [], set(), 4
    for level in range(levels):
        for _ in range(max(nrb, 0)):
            if kinds[i:i + 1] == ["res"] and not ch_mult[level:]:
                ch_mult.append(int(mods[i]["Conv_0.weight"].shape[0]) // nf)
            i += 1
            if kinds[i:i + 1] == ["attn"]:
                attn.add(level)
                i += 1
        i += 2 if level < levels - 1 else 0  # the down block and the pyramid downsample
    if rem or nrb < 1 or len(ch_mult) != levels:
        raise FormatError(f"{source}: cannot read an NCSN++ layout from {kinds.count('res')} res blocks and "
                          f"{levels} levels; supported: {_SUPPORTED}")
    return {"channels": cin, "nf": nf, "ch_mult": tuple(ch_mult), "num_res_blocks": nrb,
            "attn_levels": tuple(sorted(attn))}


def _layout(cfg: dict, size: int) -> list[tuple]:
    """score_sde's module sequence (models/ncsnpp.py, in registration order) as ``(kind, in, out, prefix)``,
    each with the name of the deepinv NCSNpp module it becomes."""
    nf, mult, nrb, attn, cin = cfg["nf"], cfg["ch_mult"], cfg["num_res_blocks"], cfg["attn_levels"], cfg["channels"]
    levels, name = len(mult), (lambda lvl, what: f"{size >> lvl}x{size >> lvl}_{what}")
    seq = [("fourier", nf, nf, "map_noise"), ("dense", 2 * nf, 4 * nf, "map_layer0"),
           ("dense", 4 * nf, 4 * nf, "map_layer1"), ("conv", cin, nf, "enc." + name(0, "conv"))]
    ch, skips, pyramid = nf, [nf], cin
    for lvl in range(levels):
        for b in range(nrb):
            seq.append(("res", ch, nf * mult[lvl], "enc." + name(lvl, f"block{b}")))
            ch = nf * mult[lvl]
            if lvl in attn:
                seq.append(("attn", ch, ch, "enc." + name(lvl, f"block{b}")))
            skips.append(ch)
        if lvl < levels - 1:
            seq += [("updown", ch, ch, "enc." + name(lvl + 1, "down")),
                    ("pyramid", pyramid, ch, "enc." + name(lvl + 1, "aux_residual"))]
            pyramid = ch
            skips.append(ch)
    top = levels - 1
    seq += [("res", ch, ch, "dec." + name(top, "in0")), ("attn", ch, ch, "dec." + name(top, "in0")),
            ("res", ch, ch, "dec." + name(top, "in1"))]
    for lvl in reversed(range(levels)):
        for b in range(nrb + 1):
            seq.append(("res", ch + skips.pop(), nf * mult[lvl], "dec." + name(lvl, f"block{b}")))
            ch = nf * mult[lvl]
        if lvl in attn:
            seq.append(("attn", ch, ch, "dec." + name(lvl, f"block{nrb}")))
        if lvl:
            seq.append(("updown", ch, ch, "dec." + name(lvl - 1, "up")))
    return seq + [("norm", ch, ch, "dec." + name(0, "aux_norm")), ("conv", ch, cin, "dec." + name(0, "aux_conv"))]


def key_map(cfg: dict, size: int) -> dict[str, tuple]:
    """score_sde key -> ``(shape, deepinv key, how)`` in the reference's parameter order; ``how`` is ``'copy'``,
    ``'nin'`` (NIN ``W`` (in, out) → 1×1 conv weight), ``'nin_b'`` or ``('qkv', j, w|b)`` (into channels 3c + j)."""
    out, emb = {}, 4 * cfg["nf"]
    for i, (kind, cin, cout, pre) in enumerate(_layout(cfg, size)):
        p = f"all_modules.{i}."
        if kind == "fourier":
            out[p + "W"] = ((cout,), f"{pre}.freqs", "copy")
        elif kind in ("dense", "conv", "norm", "pyramid"):
            src = p + ("Conv2d_0." if kind == "pyramid" else "")
            w = {"dense": (cout, cin), "norm": (cout,)}.get(kind, (cout, cin, 3, 3))
            out[src + "weight"], out[src + "bias"] = (w, f"{pre}.weight", "copy"), ((cout,), f"{pre}.bias", "copy")
        elif kind in ("res", "updown"):
            parts = [("GroupNorm_0", (cin,), "norm0"), ("Conv_0", (cout, cin, 3, 3), "conv0"),
                     ("Dense_0", (cout, emb), "affine"), ("GroupNorm_1", (cout,), "norm1"),
                     ("Conv_1", (cout, cout, 3, 3), "conv1")]
            if cin != cout or kind == "updown":
                parts.append(("Conv_2", (cout, cin, 1, 1), "skip"))
            for src, shape, dst in parts:
                out[f"{p}{src}.weight"] = (shape, f"{pre}.{dst}.weight", "copy")
                out[f"{p}{src}.bias"] = ((shape[0],), f"{pre}.{dst}.bias", "copy")
        else:  # attn: NIN_0..2 (q, k, v) into one qkv conv, NIN_3 into proj
            out.update({p + "GroupNorm_0.weight": ((cin,), f"{pre}.norm2.weight", "copy"),
                        p + "GroupNorm_0.bias": ((cin,), f"{pre}.norm2.bias", "copy")})
            for j in range(4):
                dst = f"{pre}.{'proj' if j == 3 else 'qkv'}"
                out[f"{p}NIN_{j}.W"] = ((cin, cin), dst + ".weight", "nin" if j == 3 else ("qkv", j, "w"))
                out[f"{p}NIN_{j}.b"] = ((cin,), dst + ".bias", "copy" if j == 3 else ("qkv", j, "b"))
    return out


def _to_deepinv(sd: dict, kmap: dict) -> dict[str, torch.Tensor]:
    dst: dict[str, torch.Tensor] = {}
    for key, (_, dkey, how) in kmap.items():
        v = sd[key].float()
        if how == "nin" or isinstance(how, tuple) and how[2] == "w":  # NIN W is (in, out): a 1x1 conv's transpose
            v = v.t()[:, :, None, None].contiguous()
        if isinstance(how, tuple):  # deepinv's qkv reshape (C, 3) takes q, k, v from channels 3c, 3c+1, 3c+2
            dst.setdefault(dkey, torch.empty((3 * v.shape[0], *v.shape[1:])))[how[1]::3] = v
        else:
            dst[dkey] = v
    return dst


def _build(cfg: dict, size: int, device="meta") -> nn.Module:
    """deepinv NCSNpp for ``cfg`` (on ``meta``: shapes only, no init, no global RNG) with score_sde's GroupNorm
    group counts ``min(C/4, 32)`` (``layerspp``); its resampling filters set to ``[1, 3, 3, 1]``."""
    from deepinv.models import NCSNpp
    with torch.device(device):
        net = NCSNpp(model_type="ncsn", precondition_type="ve-baseline", img_resolution=size,
                     in_channels=cfg["channels"], out_channels=cfg["channels"], label_dim=0, augment_dim=0,
                     model_channels=cfg["nf"], channel_mult=list(cfg["ch_mult"]), channel_mult_emb=4,
                     num_blocks=cfg["num_res_blocks"], attn_resolutions=[size >> lvl for lvl in cfg["attn_levels"]],
                     dropout=0.0, pretrained=None)
    for m in net.modules():
        if isinstance(m, nn.GroupNorm):
            m.num_groups = min(m.num_channels // 4, 32)
    return net


class ScoreSdePrior(Prior):
    """An NCSN++ VE score model as ``D(x, σ) = x + σ F(x, log(σ/2))`` on [-1, 1] data: Tweedie's formula
    ``E[x0 | x] = x + σ² ∇log p_σ(x)`` (Efron 2011; Song et al. 2021, eq. 30's VE SDE) with the network's score
    ``F/σ`` in these units (see the module docstring). σ is used as given (no clamping to ``sigma_range``)."""

    def __init__(self, net: nn.Module, sigma_range, data_shape, card: dict):
        super().__init__()
        self.net, self.sigma_range = freeze(net), tuple(float(s) for s in sigma_range)
        self.sde, self.data_shape, self.card = VESDE(*self.sigma_range), tuple(data_shape), card
        self.eval()

    def denoise(self, x, sigma):
        s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1)
        s = s.expand(x.shape[0]) if s.numel() == 1 else s
        f = self.net.forward_unet(x, torch.log(s / 2))
        return x + s.view(-1, *([1] * (x.ndim - 1))) * f


#: score_sde config entries that change nothing at inference, and those the shapes show (checked against them)
_IGNORED = {"name", "dataset", "num_scales", "dropout", "init_scale", "fourier_scale", "ema_rate", "normalization",
            "attention_type", "progressive_combine", "resamp_with_conv", "conv_size", "beta_min", "beta_max",
            "random_flip", "uniform_dequantization", "tfrecords_path"}
_ARCH = {"nf": "nf", "ch_mult": "ch_mult", "num_res_blocks": "num_res_blocks", "num_channels": "channels"}


def _options(path: Path, config: dict | None) -> tuple[dict, str]:
    """The card's options (``config``, else ``PATH.json``; score_sde's ``{"model", "data", "training"}`` sections
    flattened); FormatError for an unknown key or a value other than the supported one."""
    card, where = path.with_suffix(".json"), "config argument" if config is not None else "defaults"
    if config is None and card.is_file():
        try:
            config, where = json.loads(card.read_text()), str(card)
        except json.JSONDecodeError as exc:
            raise FormatError(f"model card {str(card)!r} is not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(config or {}, dict):
        raise FormatError(f"{where}: expected a JSON object of score_sde options, got {type(config).__name__}")
    flat = {k: v for k, v in (config or {}).items() if k not in ("model", "data", "training")}
    for section in ("model", "data", "training"):  # training: only what says what the model is
        part = (config or {}).get(section) or {}
        flat.update({k: v for k, v in part.items() if section != "training" or k in ("continuous", "sde")})
    unknown = sorted(set(flat) - _CARD_KEYS - _IGNORED - set(_ARCH) - {"attn_resolutions", "sde"})
    if unknown:
        raise FormatError(f"{where}: unknown score_sde option(s) {unknown}; known: {sorted(_CARD_KEYS)}")
    for k, want in {**ASSUMED, "sde": "vesde"}.items():
        if k in flat and (list(flat[k]) if k == "fir_kernel" else flat[k]) != want:
            raise FormatError(f"{where}: score_sde option {k}={flat[k]!r} is not supported (only {want!r}); "
                              f"supported: {_SUPPORTED}")
    return flat, where


def _size_and_sigmas(cfg, sd, opts, where, source) -> tuple[int, str, float, float, str]:
    """Image size (card, else ``16·2^level`` of the one attention level) and score_sde's σ_min, σ_max (the
    ``sigmas`` buffer; a card must agree with it), each with where it came from; a card's architecture is
    checked against the shapes."""
    if "image_size" not in opts and len(cfg["attn_levels"]) != 1:
        raise FormatError(f"{source}: cannot tell the image size (attention at levels {list(cfg['attn_levels'])}, "
                          "not one); put {\"image_size\": N} in a JSON card beside the checkpoint")
    size = int(opts.get("image_size", 16 << cfg["attn_levels"][0]))
    seen = {**{k: cfg[v] for k, v in _ARCH.items()}, "attn_resolutions": [size >> lvl for lvl in cfg["attn_levels"]]}
    for k, v in opts.items():
        if k in seen and (list(v) if isinstance(v, (list, tuple)) else v) != (
                list(seen[k]) if isinstance(seen[k], (list, tuple)) else seen[k]):
            raise FormatError(f"{where} says {k}={v!r} but the weights in {source} have {k}={seen[k]!r}; fix the card")
    buf = sd.get("sigmas")
    has = buf is not None and buf.ndim == 1 and buf.numel() >= 2
    lo, hi = (float(buf[-1]), float(buf[0])) if has else (0.01, 50.0)  # get_sigmas runs σ_max … σ_min
    c_lo, c_hi = float(opts.get("sigma_min", lo)), float(opts.get("sigma_max", hi))
    if has and (abs(c_lo - lo) > 1e-6 * lo or abs(c_hi - hi) > 1e-6 * hi):
        raise FormatError(f"{where} says sigma range [{c_lo}, {c_hi}] but {source}'s 'sigmas' buffer runs "
                          f"[{lo:.6g}, {hi:.6g}]; fix or drop sigma_min/sigma_max in the card")
    sig_src = "the checkpoint's 'sigmas' buffer" if has else (
        where if {"sigma_min", "sigma_max"} & set(opts) else "default (configs/default_cifar10_configs.py)")
    size_src = where if "image_size" in opts else "attention level (score_sde's attn_resolutions=(16,))"
    return size, size_src, float(f"{c_lo:.12g}"), float(f"{c_hi:.12g}"), sig_src


def _weights(sd: dict, shadow, ema: bool, kmap: dict, source: str) -> tuple[dict, str]:
    """The model's weights, or its EMA: ``shadow_params`` in the order of the parameters that require grad."""
    if not ema or shadow is None:
        return sd, "model" if not ema else "state dict as saved (the file has no 'ema' entry)"
    names = [k for k in kmap if k != "all_modules.0.W"]  # all but the Fourier W (requires_grad=False)
    n = len(shadow) if isinstance(shadow, (list, tuple)) else type(shadow).__name__
    bad = [f"has {n} entries, expected {len(names)} (the parameters that require grad)"] if n != len(names) else [
        f"entry for {k} has shape {tuple(getattr(v, 'shape', ()))}, expected {kmap[k][0]}"
        for k, v in zip(names, shadow) if not torch.is_tensor(v) or tuple(v.shape) != kmap[k][0]]
    if bad:
        raise FormatError(f"{source}: ema.shadow_params {bad[0]}; load with ema=False to use the raw model weights")
    return {**sd, **dict(zip(names, shadow))}, "ema"


def score_sde_prior(path, device=None, ema: bool = True, config: dict | None = None) -> ScoreSdePrior:
    """The prior of a score_sde NCSN++ VE checkpoint (see the module docstring); its card is ``prior.card``.

    ``ema`` takes ``ema.shadow_params`` (score_sde samples with them) or, if False, ``model``; ``config`` (or
    a JSON card beside the file) gives ``image_size``, ``sigma_min``/``sigma_max`` ([0, 1] units) and states
    options the weights cannot show."""
    path, source = Path(path), repr(str(path))
    sd, shadow, meta = _split(read_checkpoint(path), path)
    opts, where = _options(path, config)
    cfg = infer_config(sd, source)
    size, size_src, lo, hi, sig_src = _size_and_sigmas(cfg, sd, opts, where, source)
    kmap = key_map(cfg, size)
    problems = state_dict_mismatch({k: v for k, v in sd.items() if k != "sigmas"}, {k: v[0] for k, v in kmap.items()})
    if any(problems):
        raise FormatError(f"{source} does not match score_sde NCSN++ (nf={cfg['nf']}, ch_mult={cfg['ch_mult']}, "
                          f"num_res_blocks={cfg['num_res_blocks']}): {describe_mismatch(*problems)}. "
                          f"Supported: {_SUPPORTED}")
    weights, chosen = _weights(sd, shadow, ema, kmap, source)
    try:
        net = _build(cfg, size)
    except ValueError as exc:  # GroupNorm(32 groups) of a width that is not a multiple of 32
        raise FormatError(f"{source}: deepinv's NCSNpp cannot build nf={cfg['nf']}, ch_mult={cfg['ch_mult']} "
                          f"({_first_line(exc)}); channel widths must be multiples of 32") from None
    f = torch.tensor([1.0, 3.0, 3.0, 1.0])  # resampling filters as deepinv's UpDownConv2d makes them (meta: unset)
    mapped = {**_to_deepinv(weights, kmap), **{k: (f.outer(f) / f.sum() ** 2)[None, None] for k in net.state_dict()
                                               if k.endswith("resample_filter")}}
    net = net.to_empty(device="cpu")
    net.load_state_dict(mapped, strict=True)
    net = net.to(device) if device is not None else net
    c = cfg["channels"]
    card = {"name": path.stem, "format": "score_sde", "source": str(path), "sde": "ve",
            "architecture": f"deepinv.models.NCSNpp(model_type='ncsn', precondition_type='ve-baseline', "
                            f"model_channels={cfg['nf']}, channel_mult={list(cfg['ch_mult'])}, "
                            f"num_blocks={cfg['num_res_blocks']}, "
                            f"attn_resolutions={[size >> x for x in cfg['attn_levels']]})",
            "parameters": sum(p.numel() for p in net.parameters()), "channels": c, "image_size": size,
            "data_range": [-1, 1], "sigma_min": 2 * lo, "sigma_max": 2 * hi, "sigma_range_score_sde": [lo, hi],
            "weights": chosen, "step": meta.get("step"), "ema_decay": meta.get("ema_decay"),
            "image_size_from": size_src, "sigma_from": sig_src, "options_from": where, "assumed": dict(ASSUMED),
            "notes": "D(x, σ) = x + σ·F(x, log(σ/2)) on [-1, 1]; σ is twice score_sde's (data in [0, 1])"}
    return ScoreSdePrior(net, (2 * lo, 2 * hi), (c, size, size), card)


@register_format("score_sde", "score_sde_pytorch NCSN++ VE checkpoint (checkpoint_N.pth: model/ema/step; EMA "
                              "weights) via deepinv's NCSNpp; VE SDE, sigma range from the checkpoint")
def _loader(path: str, device):
    prior = score_sde_prior(path, device)
    return prior, prior.card
