"""Are population SMC's K samples of one measurement independent? (issue 14; docs/benchmarks.md, "Population
SMC on images").

With ``population=True`` the K samples of one y are one resampled particle cloud. This script inpaints the
centre box of the first 8 held-out Fashion-MNIST test images (σ_y = 0.05, shipped prior, 50 steps, K = 4
samples per image) with population SMC and with independent per-image SMC, and prints, per image, the largest
deviation of any sample from the K samples' mean, in [0, 1] pixel units. Near 0 means the K samples are
copies of one image, so their mean and per-pixel std say nothing about the posterior.

Run: ``python experiments/population_smc_spread.py`` (about a minute on one CPU thread).
"""
from __future__ import annotations

import torch

import operators
from invscore.conditional import solve
from invscore.data.assets import test_images
from invscore.io import to_data
from invscore.run.build import load_prior

N_IMAGES, K, STEPS, SIGMA_Y = 8, 4, 50, 0.05


def spread(samples: torch.Tensor) -> list[float]:
    """max over pixels and samples of |sample − mean over the K samples|, per image, in [0, 1] units."""
    return [round(float(v) / 2, 4) for v in (samples - samples.mean(1, keepdim=True)).abs().amax(dim=(1, 2, 3, 4))]


def main() -> None:
    torch.set_num_threads(1)
    prior, _ = load_prior("fashion_mnist", "cpu")
    x = to_data(test_images("fashion_mnist", N_IMAGES))
    op = operators.make("inpaint_center", img_size=tuple(x.shape[1:]), noise=SIGMA_Y)
    y = op.measure(x, torch.Generator().manual_seed(0)).repeat_interleave(K, 0)
    for population in (True, False):
        res = solve(prior, op, y, method="smc", steps=STEPS, population=population,
                    generator=torch.Generator().manual_seed(1))
        name = "population (one cloud per y)" if population else "independent (16 particles per sample)"
        print(f"{name}: max |sample − mean of {K}| per image:", spread(res.x.reshape(N_IMAGES, K, *x.shape[1:])))


if __name__ == "__main__":
    main()
