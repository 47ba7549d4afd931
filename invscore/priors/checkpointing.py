"""Activation checkpointing for a frozen prior's network: less memory for gradient methods, more compute.

Gradient methods (DPS, ΠGDM, MMPS) backpropagate through the network, so a differentiable forward pass
normally keeps every intermediate activation until its backward pass. With checkpointing (Chen, Xu, Zhang
& Guestrin 2016, "Training deep nets with sublinear memory cost"; ``torch.utils.checkpoint`` in its
non-reentrant form) each *block* keeps only its inputs and recomputes its activations during the backward
pass: memory drops from every activation to the block boundaries plus one block's activations, at the
cost of one more forward pass of the network per backward pass. The arithmetic is the same, so samples
do not change (to float round-off); sampling without gradients (DDRM, projection, ODE samplers) is not
affected at all.

The non-reentrant form is used because it differentiates with respect to the inputs alone; the custom
checkpoint function of guided-diffusion asks autograd for the gradients of the parameters too, which
fails for a frozen prior whose parameters do not require gradients.
"""
from __future__ import annotations

import types
from typing import Iterable

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = ["activation_checkpointing", "find_blocks", "checkpointed_blocks"]

_MARK = "_invscore_checkpointed"


def find_blocks(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """The blocks of a UNet-like network: the children of each outermost ``nn.ModuleList``, as
    ``(name, block)`` pairs — ADM/DiffUNet's ``input_blocks`` and ``output_blocks``, invscore's UNet's
    ``down``, ``mid`` and ``up``, diffusers' ``down_blocks`` and ``up_blocks``."""
    found, inside = [], []
    for name, sub in module.named_modules():
        if any(name.startswith(prefix + ".") for prefix in inside):
            continue
        if isinstance(sub, nn.ModuleList):
            inside.append(name)
            found += [(f"{name}.{child}" if name else child, block) for child, block in sub.named_children()]
    return found


def checkpointed_blocks(module: nn.Module) -> list[str]:
    """Names of the submodules of ``module`` whose forward is checkpointed now."""
    return [name for name, sub in module.named_modules() if getattr(sub, _MARK, False)]


def activation_checkpointing(model: nn.Module, on: bool = True, blocks: Iterable[str] | None = None) -> nn.Module:
    """Turn activation checkpointing (Chen et al. 2016) on or off for ``model``'s blocks; returns ``model``.

    ``model`` is a prior (e.g. :func:`~invscore.priors.fmt_adm.adm_prior`, a ``NetworkPrior``, a
    ``CallablePrior`` of a network) or any ``nn.Module``. ``blocks`` names the submodules to checkpoint
    (names as in ``model.named_modules()``); the default is :func:`find_blocks`. State-dict keys do not
    change (each block's ``forward`` is replaced on the instance), and ``on=False`` restores every block.
    A block is checkpointed only when its forward is differentiated (autograd on and an input or a
    parameter requiring gradients); otherwise it runs as before, without overhead."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"activation_checkpointing takes a prior or an nn.Module, got {type(model).__name__}")
    if not on:
        for _, sub in model.named_modules():
            if getattr(sub, _MARK, False):
                del sub.forward
                delattr(sub, _MARK)
        return model
    chosen = find_blocks(model) if blocks is None else _named(model, blocks)
    if not chosen:
        raise ValueError(f"no blocks to checkpoint in {type(model).__name__}: it has no nn.ModuleList of blocks; "
                         "pass blocks=[names of submodules] (see model.named_modules())")
    for _, block in chosen:
        if not getattr(block, _MARK, False):
            # bound on the instance (types.MethodType), so copy.deepcopy rebinds it to the copy
            block.forward = types.MethodType(_checkpointed_forward, block)
            setattr(block, _MARK, True)
    return model


def _named(model: nn.Module, names: Iterable[str]) -> list[tuple[str, nn.Module]]:
    subs = dict(model.named_modules())
    names = [names] if isinstance(names, str) else list(names)
    missing = [n for n in names if n not in subs]
    if missing:
        raise ValueError(f"blocks {missing} are not submodules of {type(model).__name__}; "
                         f"expected names from model.named_modules(), e.g. {[n for n, _ in find_blocks(model)][:4]}")
    return [(n, subs[n]) for n in names]


def _needs_grad(block: nn.Module, args, kwargs) -> bool:
    if not torch.is_grad_enabled():
        return False
    values = list(args) + list(kwargs.values())
    values += [v for seq in values if isinstance(seq, (tuple, list)) for v in seq]
    if any(isinstance(v, torch.Tensor) and v.requires_grad for v in values):
        return True
    return any(p.requires_grad for p in block.parameters())


def _checkpointed_forward(self, *args, **kwargs):
    forward = types.MethodType(type(self).forward, self)
    if not _needs_grad(self, args, kwargs):
        return forward(*args, **kwargs)
    # the RNG state is kept (the default) so a block that draws noise recomputes the same draws
    return checkpoint(forward, *args, use_reentrant=False, **kwargs)
