"""The image benchmarks' deepinv side (experiments/inverse_common.py, tasks_table.py): every tuned deepinv
configuration runs on the shipped prior and calls the denoiser exactly the NFE it is charged with."""
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _load(name):
    sys.path.insert(0, str(ROOT / "experiments"))  # the scripts import each other by module name
    try:
        spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(ROOT / "experiments"))


@pytest.fixture(scope="module")
def problem():
    pytest.importorskip("deepinv")
    import operators
    from invscore.checkpoint import load_denoiser
    from invscore.priors import CallablePrior
    ic, tt = _load("inverse_common"), _load("tasks_table")
    prior = CallablePrior(load_denoiser("fashion_mnist"), data_shape=(1, 32, 32))
    x = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    op = operators.make("inpaint_center", img_size=(1, 32, 32), noise=0.05)
    y = op.measure(x, generator=torch.Generator().manual_seed(1))
    return ic, tt, ic.deepinv_problem(prior, op, y)


def test_every_deepinv_config_is_charged_its_denoiser_calls(problem):
    ic, tt, (den, phys, y_u) = problem
    assert set(tt.DEEPINV) == {"dinv_dps", "dinv_ddrm", "dinv_diffpir", "dinv_pd"}
    for method, cfgs in tt.DEEPINV.items():
        for cfg in cfgs if method == "dinv_pd" else cfgs[:1]:
            x, calls, _ = ic.run_deepinv(method, cfg, 4, den, phys, y_u)
            assert calls == 4, (method, cfg, calls)
            assert x.shape == (1, 1, 32, 32) and torch.isfinite(x).all(), (method, cfg)


def test_unknown_fidelity_is_refused(problem):
    ic, _, (den, phys, y_u) = problem
    with pytest.raises(KeyError):
        ic.run_deepinv("dinv_pd", dict(fidelity="nope", solver="ddim", weight=1.0), 2, den, phys, y_u)


def test_posterior_mean_rows_average_k_independent_samples_at_k_times_the_nfe():
    """run_invscore(k=3) = the mean of the 3 samples solve draws for y repeated 3 times, charged 3 × the NFE."""
    pytest.importorskip("deepinv")
    import operators
    from invscore.checkpoint import load_denoiser
    from invscore.conditional import solve
    from invscore.priors import CallablePrior
    ic = _load("inverse_common")
    prior = CallablePrior(load_denoiser("fashion_mnist"), data_shape=(1, 32, 32))
    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    op = operators.make("inpaint_center", img_size=(1, 32, 32), noise=0.05)
    y = op.measure(x, generator=torch.Generator().manual_seed(1))
    mean, nfe, _ = ic.run_invscore(prior, op, y, "ddrm", 3, seed=5, k=3)
    ref = solve(prior, op, y.repeat_interleave(3, 0), method="ddrm", steps=3, generator=torch.Generator().manual_seed(5))
    assert nfe == 3 * ref.nfe and mean.shape == x.shape
    assert torch.allclose(mean, ref.x.reshape(2, 3, 1, 32, 32).mean(1))
    assert ref.x[0].sub(ref.x[1]).abs().max() > 1e-3  # the 3 draws of one y differ: the mean is not one sample


def test_held_out_runs_parse_as_written_and_on_the_shell():
    ho = _load("held_out")
    assert ho.parse_run("mmps:noise_scale=0.7071,grid='uniform'@10") == ("mmps", {"noise_scale": 0.7071,
                                                                                   "grid": "uniform"}, 10)
    assert ho.parse_run("mmps:grid=uniform@20") == ("mmps", {"grid": "uniform"}, 20)  # quotes a shell stripped
    assert ho.parse_run("dinv_ddrm@20") == ("dinv_ddrm", {}, 20)


def test_held_out_scores_a_run_against_deepinvs_ddrm(tmp_path, monkeypatch):
    pytest.importorskip("deepinv")
    ho = _load("held_out")
    monkeypatch.setattr(ho, "RESULTS", tmp_path)
    ho.main(["--n", "2", "--seeds", "1", "--threads", "1", "--tasks", "inpaint_center", "--runs",
             "mmps:grid=uniform@4", "dinv_ddrm:eta=1.0@20", "--out-prefix", "t"])
    text = (tmp_path / "t.md").read_text()
    assert "mmps:grid=uniform@4" in text and "+0.00 ± 0.00" in text  # the reference against itself
