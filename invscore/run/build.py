"""Building a run from its config: threads, the prior, the input images, the operator, classifier guidance.

Every input is checked here, before a run directory exists; mistakes a user can fix raise
:class:`UserError` with a one-line message.
"""
from __future__ import annotations

import math
import os
import warnings

import torch

from .. import io
from ..distributed import local_world_size
from ..priors.latent import LatentPrior

#: classifier-free guidance weight w of x̂0_u + w (x̂0_c − x̂0_u) when ``--cfg-weight`` is not given: in
#: experiments/results/guidance_cfg.md (shipped fashion_mnist_cond, DDIM 50) w = 2 put 96.9 % of samples on-class with
#: the lowest FD of w ∈ {1, 2, 4} (22.4; 57.0 at w = 4)
CFG_WEIGHT = 2.0

__all__ = ["UserError", "positive_int", "check_settings", "configure_threads", "load_prior", "load_inputs", "build_operator", "load_guidance"]


class UserError(ValueError):
    """A mistake in the command or its inputs; the CLI prints the message alone and exits with code 2."""


def configure_threads(threads) -> int:
    """Set torch's CPU threads: an int, or 'auto' = the cores left idle by other processes (at least 1),
    shared among the processes torchrun started on this machine.

    OpenMP threads that outnumber free cores spin against each other: on a 2-core machine busy with
    training, 2 threads made one UNet forward pass ~50× slower than 1 thread.
    """
    if threads in (None, "auto"):
        n = os.cpu_count() or 1
        busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        threads = max(1, min(n, int(round(n - busy))) // local_world_size())
    try:
        threads = int(threads)
    except (TypeError, ValueError):
        raise UserError(f"threads must be 'auto' or a positive integer, got {threads!r}") from None
    if threads < 1:
        raise UserError(f"threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    return threads


def positive_int(value, key: str, flag: str | None = None) -> int:
    """``value`` as an integer >= 1, else a :class:`UserError` naming the setting ``key`` (and its ``flag``)."""
    try:
        n = int(value) if not isinstance(value, bool) and float(value) == int(float(value)) else None
    except (TypeError, ValueError, OverflowError):
        n = None
    if n is None or n < 1:
        raise UserError(f"{key} must be an integer >= 1, got {value!r}; set it as "
                        + (f"--{flag} N or " if flag else "") + f"{key}=N")
    return n


def check_settings(cfg) -> None:
    """Check the run's counts (steps, batch, samples, grid_rows, data.n) and its seed before anything is
    built, so ``steps=abc`` is one line, not a traceback mid-run."""
    for key, flag in (("steps", "steps"), ("batch", "batch"), ("samples", "samples"), ("grid_rows", None)):
        positive_int(cfg[key], key, flag)
    if cfg.data.get("n") is not None:
        positive_int(cfg.data.n, "data.n", "n")
    if isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int):
        raise UserError(f"seed must be an integer, got {cfg.seed!r}; set it as --seed N or seed=N")


def _shipped_summary() -> str:
    from ..checkpoint import read_card, shipped
    names = []
    for name in shipped():
        try:
            card = read_card(name)
            names.append(f"{name} ({card.get('kind')}, {card.get('channels')}×{card.get('image_size')}²)")
        except (OSError, ValueError):
            names.append(name)
    return ", ".join(names) if names else "none yet"


def _load_format(spec: str, device):
    """A checkpoint of the field, ``FORMAT:PATH`` (:mod:`invscore.priors.formats`), as ``(prior, card)``."""
    from ..priors.formats import load_prior as load_format
    try:
        prior, card = load_format(spec, device)
    except (FileNotFoundError, ValueError, ImportError) as exc:
        raise UserError(f"cannot load prior {spec!r}: {exc}") from None
    card = {**card, "kind": card.get("kind", "denoiser")}
    return prior.to(device), card


def load_prior(checkpoint: str, device, task: str | None = None):
    """Load a frozen denoiser from a shipped name, a ``.safetensors`` path or ``FORMAT:PATH`` (a checkpoint
    of the field: :func:`invscore.priors.formats.available_formats`); returns ``(prior, card)`` where the
    prior knows its data shape ``(C, S, S)``."""
    from ..checkpoint import load_denoiser, shipped
    from ..priors import CallablePrior
    from ..priors.formats import split_spec
    checkpoint = str(checkpoint)
    if split_spec(checkpoint)[0] is not None:
        prior, card = _load_format(checkpoint, device)
        return _check_prior(prior, card, checkpoint, device, task)
    looks_like_path = os.sep in checkpoint or checkpoint.endswith(".safetensors")
    if not looks_like_path and checkpoint not in shipped():
        need = "an RGB prior" if task == "colorize" else "a prior"
        raise UserError(f"{task or 'this task'} needs {need}, but no prior named {checkpoint!r} is shipped "
                        f"(shipped: {_shipped_summary()}); pass --prior PATH to a .safetensors checkpoint "
                        "or train and ship one (python -m invscore.training, then invscore.training.ship)")
    try:
        net = load_denoiser(checkpoint, device=device)
    except FileNotFoundError as exc:
        raise UserError(str(exc)) from None
    except ValueError as exc:
        raise UserError(f"cannot load prior {checkpoint!r}: {exc}") from None
    card = net.card
    shape = (int(card["channels"]), int(card["image_size"]), int(card["image_size"]))
    trained = (card["sigma_min"], card["sigma_max"]) if "sigma_min" in card and "sigma_max" in card else None
    if card.get("family") == "latent":
        from ..priors.latent import load_latent_prior
        try:
            prior = load_latent_prior(net, card, device, where=net.source)
        except (FileNotFoundError, ValueError) as exc:
            raise UserError(f"cannot load the autoencoder of latent prior {checkpoint!r}: {exc}") from None
        prior.sigma_range = trained
        return _check_prior(prior, card, checkpoint, device, task)
    return _check_prior(CallablePrior(net, data_shape=shape, sigma_range=trained), card, checkpoint, device, task)


def _check_prior(prior, card, checkpoint: str, device, task):
    shape = (int(card["channels"]), int(card["image_size"]), int(card["image_size"]))
    try:  # one cheap forward pass: a card that does not match its weights fails here, not mid-sampling
        with torch.no_grad():
            prior(torch.zeros(1, *shape, device=device), torch.ones(1, device=device))
    except RuntimeError as exc:
        raise UserError(f"prior {checkpoint!r} does not run on {shape[0]}×{shape[1]}×{shape[2]} inputs, the size "
                        f"its card declares ({str(exc).splitlines()[0]}); the card does not match the weights") from None
    shape = tuple(getattr(prior, "pixel_shape", shape))  # a latent prior is checked on the image it decodes to
    if task == "colorize" and shape[0] != 3:
        raise UserError(f"colorize needs an RGB (3-channel) prior; {checkpoint!r} has {shape[0]} channel(s). "
                        f"Shipped priors: {_shipped_summary()}; pass --prior NAME|PATH of an RGB checkpoint")
    return prior, card


def _fit(x: torch.Tensor, what: str, shape, resize: bool, prior_name: str) -> torch.Tensor:
    c, h, w = shape
    if tuple(x.shape[-3:]) == tuple(shape):
        return x
    if not resize:
        raise UserError(f"{what} is {x.shape[-3]}×{x.shape[-2]}×{x.shape[-1]} (channels×height×width) but prior "
                        f"{prior_name!r} expects {c}×{h}×{w}; pass --resize to resize it and convert its "
                        "channels, or use a prior trained for this size")
    if x.shape[-3] == 1 and c == 3:  # colorize's ground truth would be the gray input itself
        warnings.warn(f"{what} is gray, so its RGB copy is the ground truth and the metrics compare against a gray "
                      "picture; metrics need a colour reference: pass colour images (colorize grays them itself)",
                      stacklevel=3)
    return io.fit_images(x, c, (h, w))


def load_inputs(data, prior_cfg, card, shape) -> tuple[torch.Tensor, list[str]]:
    """Ground-truth images ``(N, C, H, W)`` in [0, 1] fitted to the prior, and their names: from
    ``data.image`` (file or folder), ``data.dataset``, or else (``data.default``) the prior's shipped
    held-out test images (``shipped``) or split ``data.split`` of the dataset it was trained on (``split``)."""
    from ..data import load as load_dataset
    from ..data.assets import shipped_test_sets, test_images
    n = positive_int(data.n, "data.n", "n") if data.n is not None else None
    prior_name = str(card.get("name", prior_cfg.checkpoint))
    if data.image is not None and data.dataset is not None:
        raise UserError("pass either --image or --dataset, not both")
    if data.image is not None:
        try:
            ims, names = io.load_images(data.image, n)
        except io.ImageError as exc:
            raise UserError(str(exc)) from None
        ims = [_fit(t[None], f"image {nm!r}", shape, bool(data.resize), prior_name) for t, nm in zip(ims, names)]
        return torch.cat(ims), names
    dataset = data.dataset
    if dataset is None and data.image is None and data.get("default", "shipped") == "split":
        dataset = (card.get("data") or {}).get("name")
        if dataset is None:
            raise UserError(f"prior {prior_name!r} does not name its training dataset in its card; "
                            "pass --dataset NAME or --image FOLDER")
    if dataset is not None:
        try:
            x, _ = load_dataset(str(dataset), split=str(data.split), n=n)
        except (ValueError, ImportError, FileNotFoundError) as exc:
            raise UserError(f"cannot load dataset {dataset!r}: {exc}") from None
        x = _fit(x, f"dataset {dataset!r}", shape, bool(data.resize), prior_name)
        width = max(3, len(str(x.shape[0] - 1)))
        return x, [f"{dataset}_{i:0{width}d}" for i in range(x.shape[0])]
    sets = shipped_test_sets()
    candidates = [prior_cfg.get("test_images"), (card.get("data") or {}).get("name"), card.get("name")]
    name = next((s for s in candidates if s in sets), None)
    if name is None:
        raise UserError(f"prior {prior_name!r} has no shipped test images (shipped sets: {sets}); "
                        "pass --image PATH or --dataset NAME")
    x = test_images(name, n)
    return _fit(x, f"shipped test set {name!r}", shape, bool(data.resize), prior_name), \
        [f"{name}_{i:02d}" for i in range(x.shape[0])]


def build_operator(op_cfg, shape, sigma_y: float, device):
    """``operators.make`` from an operator config node (``name`` + parameters) for images of ``shape``, with
    Gaussian measurement noise ``sigma_y`` (its one home: the operator's noise model). The operator checks
    its own parameters (box ratio, mask file, kernel size); its error becomes a one-line :class:`UserError`."""
    import operators
    spec = {k: v for k, v in dict(op_cfg).items() if v is not None}
    name = spec.pop("name", None)
    if name is None:
        return None
    try:
        op = operators.make(name, img_size=tuple(shape), noise=float(sigma_y), **spec)
    except (ValueError, TypeError) as exc:
        raise UserError(f"cannot build operator {name!r} for {shape[0]}×{shape[1]}×{shape[2]} images: {exc}") from None
    return op.to(device)


def _load_classifier(name: str, device, load_shipped):
    """A shipped name or .safetensors path (invscore's own classifiers), or ``adm:PATH``: guided-diffusion's
    noisy classifier (:func:`invscore.priors.fmt_adm_classifier.adm_classifier`, no code executed)."""
    if name.startswith("adm:"):
        from ..priors.fmt_adm_classifier import adm_classifier
        path = name[len("adm:"):]
        if not os.path.exists(path):
            raise FileNotFoundError(f"classifier file {path!r} (adm format) does not exist")
        return adm_classifier(path, device=device)
    return load_shipped(name, device=device)


def _free_guidance(net, g, classes: int, prior_name: str):
    """Classifier-free guidance (Ho & Salimans 2022) of a class-conditional prior, checked at the boundary."""
    from ..conditional import ClassifierFreeGuidance
    k = int(g.label)
    if not 0 <= k < classes:
        raise UserError(f"--class must be in 0..{classes - 1} for the class-conditional prior {prior_name!r}, got {k}")
    w = float(g.get("weight") if g.get("weight") is not None else CFG_WEIGHT)
    if not (math.isfinite(w) and w >= 0):
        raise UserError(f"--cfg-weight must be a finite number >= 0 (1 = the conditional model), got {w}")
    return ClassifierFreeGuidance(net.denoise_given, k, w)


#: the largest classifier-guidance scale measured to help (experiments/results/prior_report.md went up to 32);
def _guidance_scale(gamma) -> float:
    """``--gamma``, checked (and warned about) once, by :func:`invscore.conditional.guided.guidance_scale`."""
    from ..conditional.guided import guidance_scale
    try:
        return guidance_scale(gamma)
    except ValueError as exc:
        raise UserError(f"--gamma (guidance.gamma): {exc}; the default 16 put 98 % of samples on-class") from None


def load_guidance(g, prior, prior_name: str, card, device) -> list:
    """Guidance terms for ``guidance.label`` (empty when it is null): classifier-free guidance with weight
    ``guidance.weight`` when the prior is class-conditional and no classifier is named, else classifier
    guidance with scale ``guidance.gamma``."""
    if g.label is None:
        return []
    if isinstance(prior, LatentPrior):
        raise UserError(f"--class guides pixel priors; {prior_name!r} is a latent prior (its classifier would "
                        "have to read latents): drop --class or use a pixel prior")
    net = getattr(prior, "fn", prior)
    classes = int(getattr(net, "num_classes", 0) or 0)
    if classes and g.classifier is None:
        return [_free_guidance(net, g, classes, prior_name)]
    gamma = _guidance_scale(g.gamma)
    from ..checkpoint import load_classifier, read_card, shipped
    from ..conditional import ClassifierGuidance
    name = g.classifier
    if name is None:
        fits = [k for k in shipped() if read_card(k).get("kind") == "classifier"
                and read_card(k).get("image_size") == card["image_size"]
                and read_card(k).get("channels") == card["channels"]]
        preferred = f"{prior_name}_classifier"
        name = preferred if preferred in fits else (fits[0] if fits else None)
        if name is None:
            raise UserError(f"--class needs a noise-conditional classifier for {card['channels']}×{card['image_size']}² "
                            f"images; none is shipped (shipped: {_shipped_summary()}). Pass --classifier PATH or "
                            "train one: python -m invscore.training --task classifier --data fashion_mnist")
    try:
        clf = _load_classifier(str(name), device, load_classifier)
    except (FileNotFoundError, ValueError) as exc:
        raise UserError(f"cannot load classifier {name!r}: {exc}") from None
    k = int(g.label)
    classes = int(clf.card.get("classes") or clf.card.get("arch", {}).get("kwargs", {}).get("num_classes", 10))
    if not 0 <= k < classes:
        raise UserError(f"--class must be in 0..{classes - 1} for classifier {name!r}, got {k}")
    return [ClassifierGuidance(clf, k, gamma)]


