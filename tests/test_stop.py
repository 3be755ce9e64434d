"""Long loops stop within one step of their stop signal (the app's Cancel button)."""

import threading

import pytest
import torch

from refinestyle import Cancelled, RefineStyleModel, StyleGAN2Generator
from refinestyle.clip import CLIPGuide


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    G = StyleGAN2Generator(z_dim=8, w_dim=16, resolution=16, channels=[16, 16, 8], mapping_layers=2, num_tokens=4)
    return RefineStyleModel(generator=G, clip=CLIPGuide.create_synthfaces(vocabulary="a photo sketch of face".split()))


def _stopper(at: int):
    stop, seen = threading.Event(), []

    def callback(step, total, state):
        seen.append(step)
        if step == at:
            stop.set()

    return stop, seen, callback


@pytest.mark.parametrize("warmup_steps", [0, 4])
def test_adaptation_stops_before_the_next_step(model, warmup_steps):
    stop, seen, callback = _stopper(3)
    with pytest.raises(Cancelled, match="adaptation cancelled after 3 of 20 steps"):
        model.adapt("a photo of a face", "a sketch of a face", steps=20, batch=2, warmup_steps=warmup_steps,
                    callback=callback, stop=stop)
    assert seen == [1, 2, 3]


def test_inversion_stops_before_the_next_step(model):
    stop, seen, callback = _stopper(5)
    with pytest.raises(Cancelled, match="inversion cancelled after 5 of 30 steps"):
        model.invert(torch.zeros(1, 3, 16, 16), method="optimize", steps=30, callback=callback, stop=stop)
    assert seen == [1, 2, 3, 4, 5]


def test_an_unset_signal_changes_nothing(model):
    ref = model.adapt("a photo of a face", "a sketch of a face", steps=4, batch=2, warmup_steps=0, suggest_strength=False)
    run = model.adapt("a photo of a face", "a sketch of a face", steps=4, batch=2, warmup_steps=0, suggest_strength=False,
                      stop=threading.Event())
    assert all(torch.equal(ref.state_dict()[k], v) for k, v in run.state_dict().items())
