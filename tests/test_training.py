"""Training scripts: a run interrupted and resumed equals an uninterrupted one (same seed), on tiny settings."""

import pytest
import torch

from refinestyle.train import clip as clip_train
from refinestyle.train import generator as gen_train


class Interrupt(Exception):
    pass


def _stop_at(n):
    def callback(step, total, state):
        if step == n:
            raise Interrupt  # as if the session ended here: the last checkpoint is from an earlier step

    return callback


def test_generator_training_resumes_exactly(tmp_path):
    kwargs = dict(steps=5, minutes=10, batch=2, resolution=16, progress=False, checkpoint_every=1)
    straight = gen_train.train(out=tmp_path / "a", **kwargs)
    with pytest.raises(Interrupt):
        gen_train.train(out=tmp_path / "b", callback=_stop_at(3), **kwargs)
    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["step"] == 2
    resumed = gen_train.train(out=tmp_path / "b", resume=True, **kwargs)
    a, b = straight.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "b" / "log.jsonl").read_text().strip(), "the log records losses"
    # Truncation needs the true mean w of the trained mapping, not the zeros it starts with.
    from refinestyle.convert import estimate_w_avg

    w_avg = straight.mapping_module.w_avg
    assert w_avg.abs().sum() > 0 and torch.allclose(w_avg, estimate_w_avg(straight))


def test_generator_training_reduces_the_loss(tmp_path):
    seen = []
    gen_train.train(out=tmp_path / "g", steps=30, minutes=10, batch=4, resolution=16, progress=False, eval_every=1000,
                    callback=lambda step, total, state: seen.append(state.loss))
    assert sum(seen[-5:]) / 5 < 0.8 * sum(seen[:5]) / 5


def test_clip_training_resumes_exactly(tmp_path):
    kwargs = dict(steps=3, minutes=10, batch=6, progress=False, eval_every=1000, checkpoint_every=1)
    a = clip_train.train(out=tmp_path / "a", **kwargs)
    with pytest.raises(Interrupt):
        clip_train.train(out=tmp_path / "b", callback=_stop_at(2), **kwargs)
    b = clip_train.train(out=tmp_path / "b", resume=True, **kwargs)
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
