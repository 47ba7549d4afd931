"""method='auto' (issue 14 §2): one default that picks, per operator kind and NFE budget, the method its
RULES name, stays within the budget, never picks a method the operator cannot take, and is the CLI's default."""
import pytest
import torch

import operators
from invscore.conditional import METHODS, solve
from invscore.conditional.auto import RULES, operator_kind
from invscore.priors import StationaryGaussian

PRIOR = StationaryGaussian.radial((1, 8, 8), corner=0.3, dtype=torch.float32)
KINDS = {"inpaint_center": "inpaint", "inpaint_random": "inpaint", "blur_gaussian_fft": "deblur",
         "blur_gaussian": "deblur", "sr_avgpool": "superres", "sr_bicubic": "superres"}


def _problem(name):
    op = operators.make(name, img_size=(1, 8, 8), noise=0.05)
    y = op.measure(PRIOR.sample(1, generator=torch.Generator().manual_seed(0)), torch.Generator().manual_seed(1))
    return op, y


@pytest.mark.parametrize("name", sorted(KINDS))
@pytest.mark.parametrize("budget", [5, 20, 100])
def test_auto_runs_the_rule_within_the_budget(name, budget):
    op, y = _problem(name)
    assert operator_kind(op) == KINDS[name]
    res = solve(PRIOR, op, y, steps=budget, generator=torch.Generator().manual_seed(2))  # auto is the default
    reached = [rule for rule in RULES[KINDS[name]] if rule[0] <= budget]
    assert res.method in METHODS and res.method != "auto" and res.nfe <= budget
    assert isinstance(op, getattr(operators, {"any": "Operator", "linear": "LinearOperator",
                                              "svd": "SVDOperator"}[METHODS[res.method].needs]))
    if isinstance(op, operators.SVDOperator):  # every rule fits an SVD operator: it is used as written
        per_step = METHODS[res.method]().cost().nfe
        assert res.method == reached[-1][1] and res.nfe == min(budget // per_step, reached[-1][2]) * per_step
        picked, _ = METHODS["auto"]().resolve(op, budget)
        options = dict(reached[-1][3])
        grid = options.pop("grid", METHODS[res.method].grid)
        assert picked.changed() == options and picked.grid == grid  # the rule's options, over the method's defaults


def test_a_rules_grid_is_the_grid_solve_runs_on():
    from invscore.samplers.common import time_grid
    from invscore.sde import make_sde
    op, y = _problem("sr_avgpool")
    rule = [r for r in RULES["superres"] if r[0] <= 10][-1]
    assert rule[3].get("grid") == "uniform" != METHODS[rule[1]].grid  # the case this checks
    seen = []
    solve(PRIOR, op, y, steps=10, generator=torch.Generator().manual_seed(2), callback=lambda d: seen.append(d["t"]))
    picked, steps = METHODS["auto"]().resolve(op, 10)
    assert picked.label() == "mmps(noise_scale=0.7071, grid='uniform')"
    ts = time_grid(make_sde("vp"), steps, "uniform", r_max=picked.start_ratio(PRIOR))
    torch.testing.assert_close(torch.stack([torch.as_tensor(t, dtype=torch.float64) for t in seen]), ts[1:])


def test_a_rule_naming_an_unknown_grid_is_refused():
    from invscore.conditional.auto import build
    with pytest.raises(ValueError, match="time grid 'cosine'"):
        build("mmps", {"grid": "cosine"})
    assert build("mmps", {"noise_scale": 0.5}).grid == METHODS["mmps"].grid


def test_a_rule_the_operator_cannot_take_falls_through():
    op, y = _problem("blur_gaussian")  # a spatial blur: no SVD, so DDRM (the deblur rule) is out
    assert solve(PRIOR, op, y, steps=20).method == RULES["linear"][-1][1]
    from operators.base import FunctionOperator
    nonlinear = FunctionOperator(torch.tanh, input_shape=(1, 8, 8), noise=0.05)
    y = nonlinear.measure(PRIOR.sample(1, generator=torch.Generator().manual_seed(0)), torch.Generator().manual_seed(1))
    assert operator_kind(nonlinear) == "nonlinear" and solve(PRIOR, nonlinear, y, steps=3).method == "dps"


def test_the_cli_default_is_auto_and_the_summary_names_the_method_that_ran(tmp_path, capsys):
    import json
    from invscore.cli import main
    assert main(["inpaint", "--n", "1", "--steps", "4", "--quiet", "--threads", "1", "--out", str(tmp_path / "r")]) == 0
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["method"] == "mmps" and summary["method_asked"] == "auto" and summary["nfe"] == 4
    assert summary["method_options"] == {"noise_scale": 0.7071}  # auto's choice states what it changed
    assert "mmps(noise_scale=0.7071) 4 steps" in capsys.readouterr().out
