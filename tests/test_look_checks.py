"""The look checks (refinestyle.look_checks) recognise each renderer style on held-out faces and nothing else."""

import pytest
import torch

from refinestyle.data.synthfaces import STYLES, render, sample_params
from refinestyle.look_checks import CHECKS, LOOKS, TRAIN_SEEDS, check, check_all, features

HELD_OUT_SEED = 2026
assert HELD_OUT_SEED not in TRAIN_SEEDS


@pytest.fixture(scope="module")
def renders():
    params = sample_params(100, seed=HELD_OUT_SEED)
    return {style: render(params, style=style, resolution=64) for style in STYLES}


@pytest.fixture(scope="module")
def results(renders):
    return {style: check_all(images) for style, images in renders.items()}


def test_every_out_of_domain_style_has_a_check_and_a_look():
    assert set(CHECKS) == set(LOOKS) == set(STYLES) - {"photo"}


@pytest.mark.parametrize("style", sorted(CHECKS))
def test_check_separates_its_style_from_photos_and_every_other_style(results, style):
    for rendered in STYLES:
        rate = results[rendered][style][0].double().mean().item()
        if rendered == style:
            assert rate >= 0.98, f"{style} check passes only {rate:.2%} of renderer {style} images"
        else:
            assert rate <= 0.02, f"{style} check passes {rate:.2%} of renderer {rendered} images"


def test_scores_and_pass_agree_and_are_deterministic(renders):
    images = renders["zombie"][:8]
    passed, score = check("zombie", images)
    assert passed.dtype == torch.bool and passed.shape == (8,) and score.shape == (8,)
    assert torch.equal(passed, score >= 1.0)
    assert torch.equal(check("zombie", images.clone())[1], score)
    assert torch.equal(check("zombie", images[:3])[1], score[:3])  # per image, whatever the batch
    feats = features(images)
    assert all(v.shape == (8,) for v in feats.values())


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="no look check"):
        check("photo", torch.zeros(1, 3, 64, 64))
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        check("sketch", torch.zeros(3, 64, 64))
