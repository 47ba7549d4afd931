"""Every bad input gets a one-line answer: one table per entry point (CLI, solve, operators.make, priors,
checkpoints, metrics). Each row is (id, what the user does, a call, the expected exception / exit code /
warning, a regex its one-line message must match). docs/bad_inputs.md lists every id (checked below)."""
import json
import re
from fractions import Fraction
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import torch
from PIL import Image

import operators
from invscore import checkpoint as ckpt
from invscore import metrics
from invscore.cli import main
from invscore.conditional import ClassifierGuidance, solve
from invscore.nets import build
from invscore.priors import CallablePrior, DiagonalGaussian, Gaussian, GaussianMixture, StationaryGaussian

DOC = Path(__file__).resolve().parents[1] / "docs" / "bad_inputs.md"
RUN = ["--steps", "2", "--n", "1", "--threads", "1", "--quiet"]


class Case(NamedTuple):
    id: str
    what: str                  # the input, as docs/bad_inputs.md shows it
    call: Any                  # CLI: a function of the fixture dict returning argv; else a function of it
    expect: Any                # an exception class, a Warning class, or a CLI exit code
    message: str               # regex the one-line message must match


# --- fixtures: tiny checkpoints and broken files ---------------------------------------------------------
def _unet(ch: int) -> dict:
    return {"name": "unet", "kwargs": {"in_channels": ch, "channels": [8, 8], "num_res_blocks": 1}}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("bad")
    torch.manual_seed(0)
    f = {"dir": d}
    for name, ch, size, data in (("gray", 1, 32, "fashion_mnist"), ("rgb", 3, 32, "emoji"), ("rgb64", 3, 64, "emoji")):
        card = {"arch": _unet(ch), "kind": "denoiser", "image_size": size, "channels": ch, "name": name,
                "data": {"name": data}}  # its shipped test images are the default input
        f[name] = str(ckpt.save_model(build(_unet(ch)), d / name, card))
    arch = {"name": "classifier", "kwargs": {"in_channels": 1, "num_classes": 10, "channels": [8, 8]}}
    f["clf"] = str(ckpt.save_model(build(arch), d / "clf", {"arch": arch, "kind": "classifier", "image_size": 32,
                                                            "channels": 1}))
    good = json.loads(ckpt.card_path(f["gray"]).read_text())
    for name, text in (("nojson", "{bad"), ("noarch", json.dumps({k: v for k, v in good.items() if k != "arch"})),
                       ("bigsize", json.dumps({**good, "image_size": "big"}))):
        (d / f"{name}.safetensors").write_bytes(Path(f["gray"]).read_bytes())
        (d / f"{name}.json").write_text(text)
        f[name] = str(d / f"{name}.safetensors")
    (d / "notimage.png").write_text("hello")
    (d / "afile").write_text("x")
    Image.new("L", (32, 32), 128).save(d / "gray.png")
    for run, state in (("unsafe", {"args": {}, "model": Fraction(1, 2)}),):
        (d / run).mkdir()
        torch.save(state, d / run / "state.pt")
    (d / "junk.pt").write_text("junk")
    return f


def _g(f, prior="gray"):
    return ["--prior", f[prior], *RUN]


# --- the CLI: exit code 2, exactly one line on stderr, no traceback ---------------------------------------
CLI = [
    Case("cli-steps-abc", "`inpaint steps=abc`", lambda f: ["inpaint", *_g(f), "steps=abc"], 2,
         r"steps must be an integer >= 1, got 'abc'"),
    Case("cli-mask-not-image", "`inpaint --mask notes.png` (not an image)",
         lambda f: ["inpaint", *_g(f), "--mask", f["dir"] / "notimage.png"], 2, r"cannot read mask file .* as an image"),
    Case("cli-out-unwritable", "`--out` where no folder can be made (under a file)",
         lambda f: ["inpaint", *_g(f), "--out", f["dir"] / "afile" / "run"], 2,
         r"cannot create the run directory .*; pass --out a folder you can write to"),
    # /sys refuses new folders even to root, so this is a read-only place wherever the tests run as root
    Case("cli-out-readonly", "`--out` on a read-only place (`/sys/invscore-run`)",
         lambda f: ["inpaint", *_g(f), "--out", "/sys/invscore-run"], 2,
         r"cannot create the run directory .*; pass --out a folder you can write to"),
    Case("cli-generate-n0", "`generate --n 0`", lambda f: ["generate", *_g(f), "--n", "0"], 2,
         r"data.n must be an integer >= 1, got 0; set it as --n N"),
    Case("cli-gamma-nan", "`generate --class 3 --gamma nan`",
         lambda f: ["generate", *_g(f), "--class", "3", "--gamma", "nan", "--classifier", f["clf"]], 2,
         r"--gamma \(guidance.gamma\): the guidance scale gamma must be a finite number >= 0 \(0 is unguided\), got nan"),
    Case("cli-seed-abc", "`inpaint seed=abc`", lambda f: ["inpaint", *_g(f), "seed=abc"], 2,
         r"seed must be an integer, got 'abc'"),
    Case("cli-card-invalid-json", "`--prior m.safetensors` whose card m.json is not JSON",
         lambda f: ["inpaint", *_g(f, "nojson")], 2, r"model card .*nojson.json is not valid JSON"),
    Case("cli-card-no-arch", "a model card without `arch`", lambda f: ["inpaint", *_g(f, "noarch")], 2,
         r"model card .* lacks 'arch'; a card needs arch, kind, image_size, channels"),
    Case("cli-card-size-str", 'a model card with `"image_size": "big"`', lambda f: ["inpaint", *_g(f, "bigsize")], 2,
         r"'image_size' must be a positive integer, got 'big'"),
    Case("cli-resume-unsafe", "`train --resume` with a state.pt holding pickled objects",
         lambda f: ["train", "--out", f["dir"] / "unsafe", "--resume"], 2, r"refused for safety"),
]
#: legal but worth a word: exit 0, the warning on stderr (these run: 2 steps, 1 image)
CLI_OK = [
    Case("cli-seed-65-bits", "`generate --seed 2**70` (inpaint takes it too; torch keeps 64 bits)",
         lambda f: ["generate", *_g(f), "--seed", str(2**70)], 0, r"generate: 1 image"),
    Case("cli-gamma-huge", "`generate --class 3 --gamma 1e12`",
         lambda f: ["generate", *_g(f), "--class", "3", "--gamma", "1e12", "--classifier", f["clf"]], 0,
         r"invscore: warning: gamma 1e\+12 is far above .* overwhelms the prior"),
    Case("cli-colorize-gray", "`colorize --image gray.png --resize`",
         lambda f: ["colorize", *_g(f, "rgb"), "--image", f["dir"] / "gray.png", "--resize"], 0,
         r"invscore: warning: .* is gray, .*metrics need a colour reference"),
]


@pytest.mark.parametrize("case", CLI, ids=[c.id for c in CLI])
def test_cli_refuses_in_one_line(case, files, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = main([str(a) for a in case.call(files)])
    err = capsys.readouterr().err
    assert code == case.expect, err
    assert err.startswith("invscore: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and "weights_only=False" not in err
    assert re.search(case.message, err), err
    assert not list(tmp_path.glob("outputs/*/*"))  # refused before a run directory exists


@pytest.mark.parametrize("case", CLI_OK, ids=[c.id for c in CLI_OK])
def test_cli_accepts_or_warns(case, files, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = main([str(a) for a in case.call(files)])
    out, err = capsys.readouterr()
    assert code == case.expect, err
    assert "Traceback" not in err and "invscore: error" not in err
    assert re.search(case.message, out + err), out + err


# --- the library ------------------------------------------------------------------------------------------
def _problem(dtype=torch.float32):
    prior = StationaryGaussian.radial((1, 8, 8), corner=0.3, dtype=dtype)
    op = operators.make("inpaint_center", img_size=(1, 8, 8), noise=0.05, dtype=dtype)
    return prior, op, op.measure(prior.sample(2, generator=torch.Generator().manual_seed(0)),
                                 torch.Generator().manual_seed(1))


def _solve(prior=None, y=None, **kw):
    p, op, y0 = _problem()
    return solve(prior or p, op, y0 if y is None else y(y0), generator=torch.Generator().manual_seed(0),
                 **{"steps": 2, **kw})


_NET = CallablePrior(torch.nn.Conv2d(1, 1, 3, padding=1), data_shape=(1, 8, 8))  # float32 weights

SOLVE = [
    Case("solve-y-nan", "y with a NaN pixel", lambda f: _solve(y=lambda y: y.index_put_((torch.tensor([0]),) * 4,
                                                                                     torch.tensor(float("nan")))),
         ValueError, r"y has 1 NaN or inf entries of 128; a measurement must be finite"),
    Case("solve-y-inf", "y with inf", lambda f: _solve(y=lambda y: y + float("inf")), ValueError, r"NaN or inf entries"),
    Case("solve-steps-abc", 'solve(..., steps="abc")', lambda f: _solve(steps="abc"), TypeError,
         r"steps must be a whole number of sampling steps .*got 'abc'"),
    Case("solve-steps-float", "solve(..., steps=2.5)", lambda f: _solve(steps=2.5), TypeError, r"whole number"),
    Case("solve-batch-0", "y of batch size 0", lambda f: _solve(y=lambda y: y[:0]), ValueError, r"empty batch"),
    Case("solve-prior-none", "a prior returning None",
         lambda f: _solve(prior=CallablePrior(lambda x, s: None, data_shape=(1, 8, 8))), TypeError,
         r"prior CallablePrior\(.*\) returned NoneType"),
    Case("solve-prior-shape", "a prior returning the wrong shape",
         lambda f: _solve(prior=CallablePrior(lambda x, s: x[..., :4], data_shape=(1, 8, 8))), TypeError,
         r"prior CallablePrior\(.*\) returned shape \(2, 1, 8, 4\)"),
    Case("solve-y-float64", "float64 y with a float32 network prior", lambda f: _solve(prior=_NET, y=lambda y: y.double()),
         TypeError, r"y is float64 but the prior's weights are float32; convert y"),
    Case("solve-y-float16", "float16 y with a float32 network prior", lambda f: _solve(prior=_NET, y=lambda y: y.half()),
         TypeError, r"y is float16 but the prior's weights are float32"),
    Case("solve-sigma-y-nan", "solve(..., sigma_y=nan)", lambda f: _solve(sigma_y=float("nan")), ValueError,
         r"sigma_y must be >= 0 and finite"),
    Case("solve-gamma-nan", "ClassifierGuidance(clf, 3, gamma=nan)",
         lambda f: _solve(guidance=[ClassifierGuidance(lambda x, s: x.flatten(1)[:, :4], 3, float("nan"))]),
         ValueError, r"guidance scale gamma must be a finite number >= 0 \(0 is unguided\), got nan"),
]

def _randn(*shape):
    return torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


_BLUR16 = dict(img_size=(1, 16, 16), size=7, dtype=torch.float64)


def _cg_blur_pinv():
    """A⁺y of a 7×7 Gaussian spatial blur wrapped as a plain LinearFunctionOperator: the default CG pseudo-inverse
    (Blur itself factorises its A⁺, see Blur._A_pinv)."""
    blur = operators.make("blur_gaussian", **_BLUR16)
    op = operators.LinearFunctionOperator(blur.A, (1, 16, 16), (1, 16, 16), adjoint=blur.A_T)
    return op.A_pinv(_randn(1, 1, 16, 16))


OPERATORS = [
    Case("op-noise-negative", 'make("inpaint_center", noise=-0.1)',
         lambda f: operators.make("inpaint_center", noise=-0.1), ValueError, r"sigma_y must be a finite number >= 0"),
    Case("op-noise-nan", 'make("inpaint_center", noise=nan)',
         lambda f: operators.make("inpaint_center", noise=float("nan")), ValueError, r"finite number >= 0, got nan"),
    Case("op-blur-sigma-negative", 'make("blur_gaussian", sigma=-1)',
         lambda f: operators.make("blur_gaussian", sigma=-1.0), ValueError, r"blur sigma must be a finite number > 0"),
    Case("op-blur-fft-sigma-negative", 'make("blur_gaussian_fft", sigma=-1)',
         lambda f: operators.make("blur_gaussian_fft", sigma=-1.0), ValueError, r"blur sigma must be a finite number > 0"),
    Case("op-mask-not-image", 'make("inpaint_file", path="notes.png")',
         lambda f: operators.make("inpaint_file", path=f["dir"] / "notimage.png"), ValueError,
         r"cannot read mask file .* as an image"),
    Case("op-pinv-unconverged",
         "A⁺y of a 7×7 Gaussian blur on 16×16 as a LinearFunctionOperator, float64 (CG cap reached)",
         lambda f: _cg_blur_pinv(), UserWarning,
         r"LinearFunctionOperator.A_pinv: conjugate gradients did not converge in 200 iterations: relative residual"),
]

PRIORS = [
    Case("prior-gaussian-not-psd", "Gaussian(mean, [[1, 2], [2, 1]])",
         lambda f: Gaussian(torch.zeros(2), torch.tensor([[1.0, 2.0], [2.0, 1.0]])), ValueError,
         r"covariance is not positive semi-definite \(smallest eigenvalue -1"),
    Case("prior-gaussian-asymmetric", "Gaussian(mean, [[1, .5], [0, 1]])",
         lambda f: Gaussian(torch.zeros(2), torch.tensor([[1.0, 0.5], [0.0, 1.0]])), ValueError,
         r"covariance is not symmetric"),
    Case("prior-mixture-negative-variance", "GaussianMixture(w, means, [1, -1])",
         lambda f: GaussianMixture(torch.tensor([0.5, 0.5]), torch.zeros(2, 2), torch.tensor([1.0, -1.0])), ValueError,
         r"mixture variances must be >= 0"),
    Case("prior-mixture-nan-covariance", "GaussianMixture(w, means, [1, nan])",
         lambda f: GaussianMixture(torch.tensor([0.5, 0.5]), torch.zeros(2, 2), torch.tensor([1.0, float("nan")])),
         ValueError, r"covs has NaN or inf"),
    Case("prior-diagonal-negative-variance", "DiagonalGaussian(mean, -1)",
         lambda f: DiagonalGaussian(torch.zeros(4), -1.0), ValueError, r"strictly positive variances"),
]


def _wrapped_on(f, name, shape):
    op = operators.make("inpaint_center", img_size=shape, noise=0.05)
    return solve(CallablePrior(ckpt.load_denoiser(f[name])), op, op.measure(torch.zeros(1, *shape)), steps=1)


CHECKPOINTS = [
    Case("ckpt-card-invalid-json", "load_denoiser(m) whose m.json is not JSON",
         lambda f: ckpt.load_denoiser(f["nojson"]), ValueError, r"is not valid JSON"),
    Case("ckpt-card-no-arch", "a card without `arch`", lambda f: ckpt.load_denoiser(f["noarch"]), ValueError,
         r"lacks 'arch'"),
    Case("ckpt-card-size-str", 'a card with `"image_size": "big"`', lambda f: ckpt.load_denoiser(f["bigsize"]),
         ValueError, r"'image_size' must be a positive integer"),
    Case("ckpt-size-hand-wrapped", "CallablePrior(load_denoiser(32-px)) on 16×16 images",
         lambda f: _wrapped_on(f, "gray", (1, 16, 16)), ValueError,
         r"input shape does not fit the prior: expected \(B, 1, 32, 32\), got \(1, 1, 16, 16\)"),
    Case("ckpt-rgb64-on-gray32", "a 64-px RGB checkpoint on gray 32×32 images",
         lambda f: _wrapped_on(f, "rgb64", (1, 32, 32)), ValueError, r"expected \(B, 3, 64, 64\), got \(1, 1, 32, 32\)"),
    Case("ckpt-state-unsafe", "load_state(a state.pt holding pickled objects)",
         lambda f: ckpt.load_state(f["dir"] / "unsafe" / "state.pt"), ValueError,
         r"holds a pickled fractions.Fraction: refused for safety"),
    Case("ckpt-state-not-torch", "load_state(a file that is not a torch.save archive)",
         lambda f: ckpt.load_state(f["dir"] / "junk.pt"), ValueError, r"cannot read resume state"),
]

_A = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
_RANGE = r"metrics take \[0, 1\] images .*invscore.io.from_data"
METRICS = [
    Case("metrics-psnr-data-space", "psnr on [-1, 1] data (what solve returns)",
         lambda f: metrics.psnr(_A * 2 - 1, _A * 2 - 1), ValueError, _RANGE),
    Case("metrics-ssim-data-space", "ssim on [-1, 1] data", lambda f: metrics.ssim(_A * 2 - 1, _A), ValueError, _RANGE),
    Case("metrics-lpips-data-space", "lpips on [-1, 1] data", lambda f: metrics.lpips(_A, _A * 2 - 1), ValueError,
         _RANGE),
    Case("metrics-255", "psnr on 0..255 images", lambda f: metrics.psnr(_A * 255, _A * 255), ValueError, r"x / 255"),
    Case("metrics-lpips-small", "lpips on 16×16 images", lambda f: metrics.lpips(_A[..., :16, :16], _A[..., :16, :16]),
         ValueError, r"LPIPS needs images of at least 32×32"),
    Case("metrics-compute-all-small", 'compute_all(..., on_missing="warn") on 16×16 images',
         lambda f: metrics.compute_all(_A[..., :16, :16], _A[..., :16, :16], lpips_nets=("alex",), on_missing="warn"),
         UserWarning, r"lpips_alex is not defined for images this small"),
]

LIBRARY = {"solve": SOLVE, "operators": OPERATORS, "priors": PRIORS, "checkpoints": CHECKPOINTS, "metrics": METRICS}
TABLE = {"cli": CLI + CLI_OK, **LIBRARY}


def _check(case: Case, files) -> None:
    if issubclass(case.expect, Warning):
        with pytest.warns(case.expect, match=case.message):
            case.call(files)
        return
    with pytest.raises(case.expect) as info:
        case.call(files)
    msg = str(info.value)
    assert "\n" not in msg and re.search(case.message, msg), msg


@pytest.mark.parametrize("case", SOLVE, ids=[c.id for c in SOLVE])
def test_solve(case, files):
    _check(case, files)


@pytest.mark.parametrize("case", OPERATORS, ids=[c.id for c in OPERATORS])
def test_operators_make(case, files):
    _check(case, files)


@pytest.mark.parametrize("case", PRIORS, ids=[c.id for c in PRIORS])
def test_priors(case, files):
    _check(case, files)


@pytest.mark.parametrize("case", CHECKPOINTS, ids=[c.id for c in CHECKPOINTS])
def test_checkpoints(case, files):
    _check(case, files)


@pytest.mark.parametrize("case", METRICS, ids=[c.id for c in METRICS])
def test_metrics(case, files):
    _check(case, files)


def test_docs_list_every_case():
    """docs/bad_inputs.md has one row per table entry (by id), so the page and the tests cannot drift."""
    listed = re.findall(r"^\| `([a-z0-9-]+)` \|", DOC.read_text(), flags=re.M)
    ids = [c.id for cases in TABLE.values() for c in cases]
    assert len(ids) == len(set(ids))
    assert sorted(listed) == sorted(ids), set(listed) ^ set(ids)


# --- numerical honesty of the iterative pseudo-inverse ------------------------------------------------------
def _default_instance(name: str, files) -> operators.Operator:
    from operators.kernels import gaussian_kernel
    need = {"blur_kernel": {"kernel": gaussian_kernel(1.0, 7)}, "blur_kernel_fft": {"kernel": gaussian_kernel(1.0, 7)},
            "inpaint_file": {"path": files["dir"] / "gray.png"}}
    return operators.make(name, dtype=torch.float64, **need.get(name, {}))


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # 200 CG steps on 3×64×64 take ~1 s on one free core, far more when threads fight
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("name", operators.available())
def test_pinv_meets_its_tolerance_or_says_so(name, files, one_thread):
    """At every registry operator's default size, in float64: an iterative A⁺ either meets its documented
    tolerance (‖Aᵀ(A x⁺ − y)‖ ≤ pinv_tol ‖Aᵀy‖, and then ‖A A⁺ A x − A x‖ ≤ pinv_tol ‖A x‖ too) or warns with
    the residual it reached; closed-form pseudo-inverses (SVD forms) are checked in tests/test_operators.py."""
    import warnings
    from operators.svd import SVDOperator
    op = _default_instance(name, files)
    if isinstance(op, SVDOperator) or not isinstance(op, operators.LinearOperator):
        pytest.skip("closed-form pseudo-inverse")
    ax = op.A(_randn(1, *op.input_shape))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        xp = op.A_pinv(ax)
    normal = float((op.AtA(xp) - op.A_T(ax)).norm() / op.A_T(ax).norm())
    said = [str(w.message) for w in caught if "did not converge" in str(w.message)]
    if said:
        reached = float(re.search(r"relative residual ([0-9.e+-]+)", said[0]).group(1))
        assert reached > op.pinv_tol and normal > op.pinv_tol and abs(reached - normal) <= 0.5 * normal, said[0]
    else:
        assert normal <= 2 * op.pinv_tol
        assert float((op.A(xp) - ax).norm() / ax.norm()) <= op.pinv_tol
