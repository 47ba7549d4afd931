"""Shared fixtures: closed-form mixtures whose exact samples and exact scores make samplers testable."""
import pytest
import torch


def mixture_2d():
    """Three well-separated isotropic components in 2-D with unequal weights."""
    from invscore.priors import GaussianMixture
    means = torch.tensor([[-3.0, 0.0], [3.0, 0.0], [0.0, 3.0]], dtype=torch.float64)
    return GaussianMixture(torch.tensor([0.5, 0.3, 0.2]), means, torch.tensor([0.6, 0.3, 0.4]))


def mixture_20d():
    """Four components in 20-D with random full covariances (exercises the rotated path)."""
    from invscore.priors import GaussianMixture
    g = torch.Generator().manual_seed(7)
    d, K = 20, 4
    means = 2.0 * torch.randn(K, d, generator=g, dtype=torch.float64)
    L = 0.3 * torch.randn(K, d, d, generator=g, dtype=torch.float64)
    covs = L @ L.transpose(1, 2) / d + 0.2 * torch.eye(d, dtype=torch.float64)
    return GaussianMixture(torch.tensor([0.4, 0.3, 0.2, 0.1]), means, covs)


@pytest.fixture(params=["2d", "20d"])
def mixture(request):
    return mixture_2d() if request.param == "2d" else mixture_20d()


@pytest.fixture(scope="module")
def one_thread():
    """Small tensors and a small UNet: extra intra-op threads only contend on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_matrix(seed: int, d: int, d_y: int = 3):
    """A random float64 d_y × d matrix U diag(s) V[:, :d_y]ᵀ (Haar U, V) with singular values s evenly in
    [0.5, 1.4] and, for d > d_y, a null space; returns it and the generator that drew it."""
    g = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(d_y, d_y, generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    return U @ torch.diag(torch.linspace(0.5, 1.4, d_y, dtype=torch.float64)) @ V[:, :d_y].T, g


class IdentityAutoencoder(torch.nn.Module):
    """𝒟 = E = identity: a latent prior over it is its pixel prior (for checks of the latent path)."""

    in_channels, factor = 1, 1

    def encode(self, x):
        return x * 1.0, torch.zeros_like(x)

    def decode(self, z):
        return z * 1.0


def identity_latent(prior):
    """``prior`` as a :class:`LatentPrior` over the identity autoencoder."""
    from invscore.priors.latent import LatentPrior
    return LatentPrior(prior, IdentityAutoencoder(), latent_shape=prior.data_shape, pixel_shape=prior.data_shape)


def inpainting_problem():
    """A stationary Gaussian prior on 1×8×8 images, a centre-box mask with σ_y = 0.05, and two measurements."""
    import operators
    from invscore.priors import StationaryGaussian
    prior = StationaryGaussian.radial((1, 8, 8), corner=0.3, dtype=torch.float32)
    op = operators.make("inpaint_center", img_size=(1, 8, 8), noise=0.05)
    y = op.measure(prior.sample(2, generator=torch.Generator().manual_seed(0)), torch.Generator().manual_seed(1))
    return prior, op, y


@pytest.fixture(scope="module")
def prior(tmp_path_factory):
    """A tiny untrained 1×32×32 UNet saved as a checkpoint with its card (Fashion-MNIST's shape): for runs
    whose mechanics, not quality, are under test."""
    from invscore.checkpoint import save_model
    from invscore.nets import build
    d = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    arch = {"name": "unet", "kwargs": {"in_channels": 1, "channels": [8, 8], "num_res_blocks": 1}}
    return str(save_model(build(arch), d / "gray", {"arch": arch, "kind": "denoiser", "image_size": 32,
                                                    "channels": 1, "name": "gray", "data": {"name": "fashion_mnist"}}))
