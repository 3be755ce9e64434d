"""The in/out-of-domain check of inversions (``out.in_domain``): the check shipped with the default model, calibrated
by ``python hub/build_synthfaces.py calibrate``, holds on fresh renders and real photos; malformed entries are refused."""

import json
import math

import pytest
import torch

from refinestyle import HubError, RefineStyleModel, StyleGAN2Generator
from refinestyle.data.synthfaces import render, sample_params
from refinestyle.evaluation import calibrate_domain_check, domain_threshold
from refinestyle.inversion import DomainCheck

from .conftest import REPO, tiny_config

HUB = REPO / "hub" / "refinestyle-synthfaces"
# Fresh renders: seeds used neither by training, nor by the benchmarks, nor by the calibration (5_000_000_0xx).
SEED = 6_000_000_000


@pytest.fixture(scope="module")
def model():
    return RefineStyleModel.from_pretrained(HUB)


def test_shipped_model_declares_a_calibrated_check(model):
    check = model.domain_check
    assert check is not None and check.method == "encoder" and check.score in ("w_psnr", "refined_psnr")
    stored = json.loads((HUB / "metrics.json").read_text())["domain_check"]
    assert stored["check"] == check.to_dict()  # model_index.json holds what the calibration measured


def test_held_out_photo_renders_are_flagged_in(model):
    images = render(sample_params(96, seed=SEED), style="photo", resolution=model.generator.config.resolution)
    out = model.invert(images)  # the app's default: the encoder
    assert out.method == "encoder" and len(out.in_domain) == 96
    assert torch.equal(out.domain_score, out.scores[model.domain_check.score])
    share = sum(out.in_domain) / len(out.in_domain)
    assert share >= 0.9, f"only {share:.0%} of in-domain renders flagged in (target 95%, calibrated at the 5% quantile)"


@pytest.mark.parametrize("style", ["sketch", "pixelart"])
def test_other_styles_are_flagged_out(model, style):
    images = render(sample_params(32, seed=SEED + 1), style=style, resolution=model.generator.config.resolution)
    out = model.invert(images)
    assert not any(out.in_domain), f"{sum(out.in_domain)} of 32 {style} renders flagged in"


def test_a_real_photo_is_flagged_out(model):
    import skimage.data
    from PIL import Image

    out = model.invert([Image.fromarray(skimage.data.astronaut())])  # centre-cropped: this model declares no face alignment
    assert out.aligned is None and out.in_domain == [False]
    assert out.domain_score[0] < model.domain_check.threshold - 5  # far out, not a borderline call


@pytest.mark.parametrize("entry", [
    None, [], "refined_psnr",
    {"score": "refined_psnr", "threshold": 30.0},                                   # no method
    {"score": "lpips", "threshold": 30.0, "method": "encoder"},                     # unknown score
    {"score": "refined_psnr", "threshold": "30", "method": "encoder"},              # threshold not a number
    {"score": "refined_psnr", "threshold": True, "method": "encoder"},
    {"score": "refined_psnr", "threshold": math.nan, "method": "encoder"},
    {"score": "refined_psnr", "threshold": 30.0, "method": "auto"},                 # not a method that runs
    {"score": "refined_psnr", "threshold": 30.0, "method": "encoder", "treshold": 1},  # unknown key
])
def test_malformed_checks_are_refused(entry):
    with pytest.raises(ValueError, match="domain_check must be"):
        DomainCheck.from_dict(entry, source="model_index.json")


def test_check_round_trips_through_model_index_and_a_bad_one_is_a_hub_error(tmp_path):
    model = RefineStyleModel(generator=StyleGAN2Generator(**tiny_config(16)))
    model.domain_check = DomainCheck(score="w_psnr", threshold=21.5, method="optimize")
    model.save_pretrained(tmp_path)
    assert RefineStyleModel.from_pretrained(tmp_path).domain_check == model.domain_check
    index = json.loads((tmp_path / "model_index.json").read_text())
    index["domain_check"] = {"score": "w_psnr", "threshold": None, "method": "optimize"}
    (tmp_path / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(HubError, match="domain_check"):
        RefineStyleModel.from_pretrained(tmp_path)


def test_no_check_for_the_method_gives_no_verdict(model):
    images = render(sample_params(4, seed=SEED + 2), style="photo", resolution=model.generator.config.resolution)
    shipped = model.domain_check
    try:
        model.domain_check = None
        out = model.invert(images)
        assert out.in_domain is None and out.domain_score is None
        assert set(out.scores) == {"w_psnr", "refined_psnr"} and out.scores["refined_psnr"].shape == (4,)
        model.domain_check = DomainCheck(score=shipped.score, threshold=shipped.threshold, method="optimize")
        assert model.invert(images).in_domain is None  # calibrated for another method: no verdict
    finally:
        model.domain_check = shipped


def test_calibration_reads_the_quantile_conservatively(model):
    scores = torch.arange(1, 257, dtype=torch.float32)
    assert domain_threshold(scores, confidence=0.5) == 13.0  # about the plain 5% quantile of 256 values
    assert domain_threshold(scores) == 8.0                    # a lower bound on it at 90% confidence
    with pytest.raises(ValueError, match="too few"):
        domain_threshold(scores[:20])
    images = render(sample_params(64, seed=SEED + 3), style="photo", resolution=model.generator.config.resolution)
    check = calibrate_domain_check(model, images, score="w_psnr")
    assert check.method == "encoder" and check.score == "w_psnr"
    assert bool((model.invert(images).scores["w_psnr"] >= check.threshold).all())  # 64 images: the smallest score
