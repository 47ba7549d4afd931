"""The ``diffusers`` prior format: a tiny random UNet2DModel folder read through ``load_prior('diffusers:DIR')``
gives the scheduler's own x0 prediction at trained timesteps (epsilon, v_prediction, sample, learned variance),
on the scheduler's own alphas_cumprod table; and its errors name what is missing. CPU, no download."""
import copy
import json
import sys

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from invscore.priors import fmt_diffusers_unet as fmt  # noqa: E402
from invscore.priors.formats import FormatError, available_formats, load_prior  # noqa: E402
from invscore.sde import DiscreteVPSDE  # noqa: E402

STEPS = (3, 400, 850)


def _unet(out_channels=3, attention=False):
    torch.manual_seed(0)
    down = ("DownBlock2D", "AttnDownBlock2D" if attention else "DownBlock2D")
    up = ("AttnUpBlock2D" if attention else "UpBlock2D", "UpBlock2D")
    return diffusers.UNet2DModel(sample_size=16, in_channels=3, out_channels=out_channels, block_out_channels=(32, 64),
                                 layers_per_block=1, down_block_types=down, up_block_types=up, norm_num_groups=8).eval()


def _folder(root, unet, layout="scheduler", **sched):
    """Save ``unet`` (safetensors) and a DDPMScheduler config under ``root`` (layout: 'scheduler' → scheduler/,
    'beside' → scheduler_config.json next to config.json, None → no scheduler config)."""
    root.mkdir(parents=True, exist_ok=True)
    unet.save_pretrained(str(root), safe_serialization=True)
    scheduler = diffusers.DDPMScheduler(clip_sample=False, **sched)
    if layout == "scheduler":
        scheduler.save_pretrained(str(root / "scheduler"))
    elif layout == "beside":
        scheduler.save_pretrained(str(root))
    return root


@pytest.fixture(scope="module")
def unets():
    return {"plain": _unet(), "attn": _unet(attention=True), "learned": _unet(out_channels=6)}


CASES = {  # name: (unet, scheduler kwargs, layout)
    "epsilon": ("plain", {"prediction_type": "epsilon"}, "scheduler"),
    "v_prediction": ("attn", {"prediction_type": "v_prediction", "beta_schedule": "squaredcos_cap_v2"}, "beside"),
    "sample": ("plain", {"prediction_type": "sample", "beta_schedule": "scaled_linear", "beta_start": 0.00085,
                         "beta_end": 0.012}, "scheduler"),
    "learned_range": ("learned", {"prediction_type": "epsilon", "variance_type": "learned_range"}, "scheduler"),
}


def _reference(unet, scheduler, xt, step):
    """The scheduler's own x0 prediction at trained step ``step`` (clip_sample=False)."""
    with torch.no_grad():
        out = unet(xt, torch.full((xt.shape[0],), step)).sample
    return scheduler.step(out, step, xt, generator=torch.Generator().manual_seed(0)).pred_original_sample


@pytest.mark.parametrize("case", list(CASES))
def test_denoiser_is_the_schedulers_x0_prediction(case, unets, tmp_path):
    """D(x, σ_i) at a trained step's σ_i is scheduler.step(...).pred_original_sample at that step: to 1e-5 in
    float64 (both sides; the residual, <= 4e-6, is the scheduler's float32 1 − ᾱ), and in float32 to 1e-5 of the
    output's scale (an eps model's x0 at step 850 is ~1/sqrt(ᾱ) ≈ 50 times its input, so float32 rounding of
    the input, amplified, is ~6e-5 there; 'step' also sees t·N − 1 rounded, ~5e-7 of a step)."""
    which, sched, layout = CASES[case]
    folder = _folder(tmp_path / "model", unets[which], layout, **sched)
    prior, card = load_prior(f"diffusers:{folder}")
    scheduler = diffusers.DDPMScheduler.from_pretrained(str(folder), subfolder="scheduler" if layout == "scheduler"
                                                        else None)
    assert card["channels"] == 3 and card["image_size"] == 16 and card["data_range"] == [-1, 1]
    assert card["prediction_type"] == sched["prediction_type"] and card["learned_variance"] == (which == "learned")
    assert card["schedule"]["num_train_timesteps"] == 1000 and card["source"].startswith("diffusers:")
    assert prior.parametrization == fmt.PREDICTION[sched["prediction_type"]] and prior.time_input == "step"
    # the schedule is the scheduler's table, equal by construction
    assert isinstance(prior.sde, DiscreteVPSDE)
    assert torch.equal(prior.sde.alphas_cumprod, scheduler.alphas_cumprod.double())
    priors = [prior, fmt.diffusers_prior(folder, time_input="step_nearest")]
    g = torch.Generator().manual_seed(1)
    for dtype in (torch.float64, torch.float32):
        unet = copy.deepcopy(unets[which]).to(dtype)
        for step in STEPS:
            ac = scheduler.alphas_cumprod[step].double()
            xt = torch.randn(2, 3, 16, 16, generator=g, dtype=dtype)
            ref = _reference(unet, scheduler, xt, step)
            x = (xt.double() / ac.sqrt()).to(dtype)
            sigma = torch.full((2,), float(((1 - ac) / ac).sqrt()), dtype=dtype)
            tol = 1e-5 if dtype == torch.float64 else 1e-5 * max(1.0, float(ref.abs().max()))
            for p in priors:
                with torch.no_grad():
                    d = p.to(dtype)(x, sigma)
                assert d.dtype == dtype
                torch.testing.assert_close(d, ref, rtol=1e-5, atol=tol, msg=f"{case} {dtype} {p.time_input} {step}")


def test_schedules_are_cross_checked_against_the_config():
    for kw in ({}, {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012},
               {"beta_schedule": "squaredcos_cap_v2"}, {"trained_betas": torch.linspace(1e-3, 0.05, 50).tolist()},
               {"num_train_timesteps": 100, "beta_end": 0.2}):
        s = diffusers.DDPMScheduler(**kw)
        sde = fmt.schedule_from_scheduler(s)
        assert torch.equal(sde.alphas_cumprod, s.alphas_cumprod.double())
        assert sde.num_steps == len(s.alphas_cumprod)
    bad = diffusers.DDPMScheduler()
    bad.alphas_cumprod = bad.alphas_cumprod ** 1.01  # a table the config does not declare
    with pytest.raises(FormatError, match="differs from the schedule its config declares"):
        fmt.schedule_from_scheduler(bad)
    with pytest.raises(FormatError, match="not a VP table.*rescale_betas_zero_snr"):
        fmt.schedule_from_scheduler(diffusers.DDPMScheduler(rescale_betas_zero_snr=True))


def test_api_and_registration(unets, tmp_path):
    assert "diffusers" in available_formats()
    folder = _folder(tmp_path / "m", unets["plain"], prediction_type="v_prediction")
    prior = fmt.diffusers_prior(folder)
    assert prior.parametrization == "v" and prior.data_shape == (3, 16, 16) and prior.card["name"] == "m"
    with pytest.raises(ValueError, match="needs its scheduler"):
        fmt.diffusers_prior(unets["plain"])
    # a pipeline folder: unet/ and scheduler/ side by side
    pipe = tmp_path / "pipe"
    unets["plain"].save_pretrained(str(pipe / "unet"), safe_serialization=True)
    diffusers.DDIMScheduler(prediction_type="sample").save_pretrained(str(pipe / "scheduler"))
    (pipe / "model_index.json").write_text("{}")
    prior, card = load_prior(f"diffusers:{pipe}")
    assert prior.parametrization == "x0" and card["schedule"]["class"] == "DDIMScheduler"
    prior, _ = load_prior(f"diffusers:{pipe / 'unet'}")  # the unet/ folder alone finds ../scheduler
    assert prior.parametrization == "x0"


def _one_line(exc):
    msg = str(exc.value)
    assert "\n" not in msg, msg
    return msg


def test_errors_name_what_is_missing(unets, tmp_path):
    folder = _folder(tmp_path / "nosched", unets["plain"], layout=None)
    with pytest.raises(FormatError) as e:
        load_prior(f"diffusers:{folder}")
    assert "no scheduler config" in _one_line(e) and "scheduler/scheduler_config.json" in str(e.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FormatError) as e:
        load_prior(f"diffusers:{empty}")
    assert "not a diffusers UNet folder: no config.json" in _one_line(e)
    (tmp_path / "file.safetensors").write_bytes(b"")
    with pytest.raises(FormatError, match="is not a folder"):
        load_prior(f"diffusers:{tmp_path / 'file.safetensors'}")
    with pytest.raises(FileNotFoundError):
        load_prior(f"diffusers:{tmp_path / 'absent'}")
    # config.json without weights; a .bin pickle that weights_only refuses; a latent / conditional UNet
    nowt = _folder(tmp_path / "nowt", unets["plain"])
    (nowt / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(FormatError) as e:
        load_prior(f"diffusers:{nowt}")
    assert "no weights" in _one_line(e)
    torch.save({"w": torch.nn.Identity()}, nowt / "diffusion_pytorch_model.bin")  # an nn.Module: needs unpickling
    with pytest.raises(FormatError) as e:
        load_prior(f"diffusers:{nowt}")
    assert "torch.load(weights_only=True) refuses" in _one_line(e)
    torch.save(unets["plain"].state_dict(), nowt / "diffusion_pytorch_model.bin")  # plain tensors: read
    prior, card = load_prior(f"diffusers:{nowt}")
    assert card["source"].endswith(".bin")
    cfg = json.loads((nowt / "config.json").read_text())
    (nowt / "config.json").write_text(json.dumps({**cfg, "_class_name": "UNet2DConditionModel"}))
    with pytest.raises(FormatError, match="UNet2DModel"):
        load_prior(f"diffusers:{nowt}")


def test_missing_diffusers_gives_the_install_hint(unets, tmp_path, monkeypatch):
    folder = _folder(tmp_path / "m", unets["plain"])
    assert not hasattr(fmt, "diffusers")  # the module imports without diffusers: only the loader needs it
    monkeypatch.setitem(sys.modules, "diffusers", None)  # `import diffusers` now raises ImportError
    with pytest.raises(ImportError) as e:
        load_prior(f"diffusers:{folder}")
    assert str(e.value) == fmt.INSTALL_HINT and 'pip install -e ".[diffusers]"' in str(e.value)
