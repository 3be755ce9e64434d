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


def test_clip_batches_pair_faces_with_flipped_twins():
    from refinestyle.data.synthfaces import ATTRIBUTES, attribute_labels, sample_params

    params = sample_params(64, seed=3)
    twins = clip_train.flipped_twins(params)
    a, b = attribute_labels(params), attribute_labels(twins)
    even = torch.arange(64) % 2 == 0
    assert torch.all(a["smile"][even] != b["smile"][even]) and torch.equal(a["glasses"][even], b["glasses"][even])
    assert torch.all(a["glasses"][~even] != b["glasses"][~even]) and torch.equal(a["smile"][~even], b["smile"][~even])
    others = [i for i, name in enumerate(ATTRIBUTES) if name not in ("smile", "glasses")]
    assert torch.equal(params.u[:, others], twins.u[:, others])
    # In a batch, row i and row i + batch/2 are twins in the same style; attribute captions name the flip.
    _, texts, labels = clip_train.make_batch(5, batch=16, seed=0, resolution=32)
    assert torch.equal(labels["styles"][:8], labels["styles"][8:])
    for i in range(8):
        flipped = "smile" if i % 2 == 0 else "glasses"
        assert labels[flipped][i] != labels[flipped][i + 8]
        if texts[i].endswith(("glasses", "expression", "person")) and texts[i + 8].endswith(("glasses", "expression", "person")):
            assert texts[i] != texts[i + 8]
