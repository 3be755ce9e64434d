"""Training scripts: a run interrupted and resumed equals an uninterrupted one (same seed), on tiny settings."""

import json

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


def _loss_on_first_batch(G) -> float:
    """A generator's own training loss on step 0's batch (seed 0, batch 2, 16 px): a fine-tune's first loss."""
    z = gen_train.batch_z(0, batch=2, seed=0, z_dim=G.config.z_dim)
    real, weight = gen_train.targets(z, resolution=16)
    with torch.no_grad():
        return gen_train.weighted_loss(G.synthesis(G.mapping(z)), real, weight).item()


def test_generator_training_resumes_exactly(tmp_path):
    kwargs = dict(steps=5, minutes=10, batch=2, resolution=16, progress=False, checkpoint_every=1)
    straight = gen_train.train(out=tmp_path / "a", **kwargs)
    with pytest.raises(Interrupt):
        gen_train.train(out=tmp_path / "b", callback=_stop_at(3), **kwargs)
    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["step"] == 2
    resumed = gen_train.train(out=tmp_path / "b", resume=True, **kwargs)
    a, b = straight.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    records = [json.loads(line) for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert any("loss" in r for r in records), "the log records losses"
    assert records[-1]["event"] == "stop" and records[-1]["step"] == 5  # the exact last step, not every 10th
    # Truncation needs the true mean w of the trained mapping, not the zeros it starts with.
    from refinestyle.convert import estimate_w_avg

    w_avg = straight.mapping.w_avg
    assert w_avg.abs().sum() > 0 and torch.allclose(w_avg, estimate_w_avg(straight))


def test_generator_prefetch_and_fine_tuning(tmp_path):
    # The GPU path renders the next batch in a thread: same batches, so the same weights as without it.
    kwargs = dict(steps=4, minutes=10, batch=2, resolution=16, progress=False, channels=(16, 16, 8))
    plain = gen_train.train(out=tmp_path / "a", prefetch=False, **kwargs).state_dict()
    threaded = gen_train.train(out=tmp_path / "b", prefetch=True, **kwargs).state_dict()
    assert all(torch.equal(plain[k], threaded[k]) for k in plain)
    # --init-from starts from a saved generator's weights: the first step's loss is that generator's own
    # loss on the first batch. A generator of another width is refused.
    # The saved generator has no z-bin inputs (an older config); the new run adds them at zero, a no-op.
    saved = gen_train.train(out=tmp_path / "a", z_bins=False, **kwargs)
    assert saved.config.z_bins is None
    saved.save_pretrained(tmp_path / "saved")
    expected = _loss_on_first_batch(saved)
    first = []
    binned = gen_train.train(out=tmp_path / "c", init_from=tmp_path / "saved",
                             callback=lambda step, total, state: first.append(state.loss), **{**kwargs, "steps": 1})
    assert first[0] == pytest.approx(expected, rel=1e-5)
    binned.save_pretrained(tmp_path / "binned")
    with pytest.raises(ValueError, match="has z_bins inputs; drop --no-z-bins"):
        gen_train.train(out=tmp_path / "f", init_from=tmp_path / "binned", z_bins=False, **kwargs)
    with pytest.raises(ValueError, match="pass matching --channels"):
        gen_train.train(out=tmp_path / "e", init_from=tmp_path / "saved", **{**kwargs, "channels": (32, 16, 8)})
    # --train mapping leaves the synthesis bit for bit (encoders and domains made on it keep their images).
    mapped = gen_train.train(out=tmp_path / "g", init_from=tmp_path / "saved", train_parts="mapping", **kwargs)
    before, after = saved.state_dict(), mapped.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before if k.startswith("synthesis."))
    assert not torch.equal(after["mapping.fc0.weight"], before["mapping.fc0.weight"])
    assert mapped.mapping.fc0_bins.abs().sum() > 0
    with pytest.raises(ValueError, match="trained --train mapping; resume it with that"):
        gen_train.train(out=tmp_path / "g", init_from=tmp_path / "saved", resume=True, **{**kwargs, "steps": 8})
    # --train mapping+b16: the mapping and the top block train, the blocks below stay bit for bit.
    top = gen_train.train(out=tmp_path / "t", init_from=tmp_path / "saved", train_parts="mapping+b16", **kwargs).state_dict()
    changed = {k.split(".")[1] for k in before if k.startswith("synthesis.") and not torch.equal(top[k], before[k])}
    assert changed == {"b16"} and not torch.equal(top["mapping.fc0.weight"], before["mapping.fc0.weight"])
    with pytest.raises(ValueError, match=r"--train 'mapping\+b64'.*blocks from b4, b8, b16 \(e.g. mapping\+b16\)"):
        gen_train.train(out=tmp_path / "u", init_from=tmp_path / "saved", train_parts="mapping+b64", **kwargs)


@pytest.mark.parametrize("option, resume_error, reverse_error", [
    ({"mapping_width": 160}, "resume it with --mapping-width 160", "its mapping is 160 wide; pass --mapping-width 160 or more"),
    ({"mapping_per_layer": True}, "resume it with --mapping-per-layer", "per-layer mapping outputs; pass --mapping-per-layer"),
], ids=["wider", "per-layer"])
def test_generator_fine_tuning_grows_the_mapping(tmp_path, option, resume_error, reverse_error):
    """--mapping-width / --mapping-per-layer with --init-from a generator without them: the run starts from the saved
    generator's exact images (the first loss is its loss), trains only the mapping (synthesis bit for bit), saves
    the grown config; resuming the run without the option, or a plain run from the grown generator, is refused by
    name."""
    kwargs = dict(steps=2, minutes=10, batch=2, resolution=16, progress=False, channels=(16, 16, 8))
    saved = gen_train.train(out=tmp_path / "a", **kwargs)
    saved.save_pretrained(tmp_path / "saved")
    expected = _loss_on_first_batch(saved)
    first = []
    grown = gen_train.train(out=tmp_path / "g", init_from=tmp_path / "saved", train_parts="mapping",
                            callback=lambda step, total, state: first.append(state.loss), **option, **kwargs)
    assert first[0] == pytest.approx(expected, rel=1e-5)
    if "mapping_width" in option:
        assert grown.config.mapping_hidden_dim == 160 and grown.mapping.fc1.weight.shape == (160, 160)
    else:  # the maps start at zero and train
        assert grown.config.mapping_per_layer and grown.mapping.layer_maps.abs().max() > 0
    before, after = saved.state_dict(), grown.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before if k.startswith("synthesis."))
    with pytest.raises(ValueError, match=resume_error):
        gen_train.train(out=tmp_path / "g", init_from=tmp_path / "saved", train_parts="mapping", resume=True,
                        **{**kwargs, "steps": 4})
    grown.save_pretrained(tmp_path / "grown")
    with pytest.raises(ValueError, match=reverse_error):
        gen_train.train(out=tmp_path / "n", init_from=tmp_path / "grown", **kwargs)


def test_generator_part_weights(capsys):
    z = gen_train.batch_z(0, batch=4, seed=0, z_dim=len(gen_train.ATTRIBUTES))
    _, masks = gen_train.render(gen_train.z_to_params(z), style="photo", resolution=32, return_masks=True)
    _, default = gen_train.targets(z, resolution=32)
    _, eyes = gen_train.targets(z, resolution=32, part_weights=gen_train.parse_part_weights("eyes=16"))
    small = torch.stack([masks[m] for m in gen_train.SMALL_PARTS]).sum(0)
    assert torch.equal(default[small == 0], torch.ones_like(default[small == 0]))  # weight 1 off the parts
    assert default.max() == 5.0 and eyes.max() == 17.0  # 1 + 4, and 1 + 16 in the eyes' cores
    assert torch.equal(eyes[masks["eyes"] == 0], default[masks["eyes"] == 0])  # only the eyes changed
    with pytest.raises(SystemExit):
        gen_train.main(["--part-weights", "nose=3"])
    assert "unknown part 'nose'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        gen_train.main(["--train", "mapping+decoder"])
    assert "give all, mapping, or mapping+<synthesis blocks>, e.g. mapping+b32+b64" in capsys.readouterr().err


def test_generator_ssim_term_closed_form(tmp_path, capsys):
    """--ssim-weight adds w·(1 - SSIM). Two flat images of values a and b (in [0, 1]) have no variance, so SSIM is
    its luminance term alone: (2ab + C1) / (a² + b² + C1), C1 = 0.01²; equal images add nothing."""
    real = torch.full((2, 3, 16, 16), -0.2)  # a = 0.4
    fake = torch.full((2, 3, 16, 16), 0.6)  # b = 0.8
    weight = torch.ones(2, 1, 16, 16)
    pixel = gen_train.weighted_loss(fake, real, weight).item()
    assert pixel == pytest.approx(0.8 + 0.64)  # L1 + L2 of a 0.8 difference
    a, b, c1 = 0.4, 0.8, 0.01**2
    ssim_flat = (2 * a * b + c1) / (a * a + b * b + c1)
    assert gen_train.weighted_loss(fake, real, weight, ssim_weight=3.0).item() == pytest.approx(pixel + 3 * (1 - ssim_flat), abs=3e-4)
    # (abs 3e-4 of a 0.6 term: pytorch_msssim builds its Gaussian window in float32, so a flat image keeps a
    # variance of ~1e-8 against C2 = 9e-4)
    assert gen_train.weighted_loss(real, real, weight, ssim_weight=3.0).item() == pytest.approx(0.0, abs=1e-6)
    # The term trains: a run with it moves the weights differently from one without (same seed).
    kwargs = dict(steps=2, minutes=10, batch=2, resolution=16, progress=False, channels=(16, 16, 8))
    plain = gen_train.train(out=tmp_path / "a", **kwargs).state_dict()
    with_ssim = gen_train.train(out=tmp_path / "b", ssim_weight=2.0, **kwargs).state_dict()
    assert not torch.equal(plain["mapping.fc0.weight"], with_ssim["mapping.fc0.weight"])
    with pytest.raises(ValueError, match="--ssim-weight -1.0: must be 0"):
        gen_train.train(out=tmp_path / "c", ssim_weight=-1.0, **kwargs)
    with pytest.raises(SystemExit):
        gen_train.main(["--ssim-weight", "nan"])
    assert "--ssim-weight nan: give 0 (off) or a positive weight" in capsys.readouterr().err


def test_generator_training_reduces_the_loss(tmp_path):
    seen = []
    gen_train.train(out=tmp_path / "g", steps=30, minutes=10, batch=4, resolution=16, progress=False, eval_every=1000,
                    callback=lambda step, total, state: seen.append(state.loss))
    assert sum(seen[-5:]) / 5 < 0.8 * sum(seen[:5]) / 5


@pytest.mark.parametrize("attribute_weight", [0.0, 1.0])
def test_clip_training_resumes_exactly(tmp_path, attribute_weight):
    kwargs = dict(steps=3, minutes=10, batch=6, progress=False, eval_every=1000, checkpoint_every=1,
                  attribute_weight=attribute_weight)
    a = clip_train.train(out=tmp_path / "a", **kwargs)
    with pytest.raises(Interrupt):
        clip_train.train(out=tmp_path / "b", callback=_stop_at(2), **kwargs)
    b = clip_train.train(out=tmp_path / "b", resume=True, **kwargs)
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    # The attribute probe's weights travel in the checkpoint (else the resumed run would differ above).
    assert ("probe" in torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)) == (attribute_weight > 0)


def test_clip_attribute_probe_changes_training_and_needs_its_checkpoint(tmp_path):
    kwargs = dict(steps=2, minutes=10, batch=6, progress=False, eval_every=1000)
    plain = clip_train.train(out=tmp_path / "plain", **kwargs)
    probed = clip_train.train(out=tmp_path / "probed", attribute_weight=1.0, **kwargs)
    # The probe's loss reaches the image tower, not the text tower (it reads only the image embedding).
    sp, sq = plain.model.state_dict(), probed.model.state_dict()
    assert any(not torch.equal(sp[k], sq[k]) for k in sp if k.startswith("visual."))
    text_keys = [k for k in sp if k.startswith(("token_embedding", "transformer.", "ln_final", "text_projection"))]
    # The text tower gets no gradient from the probe: after one step (same start, same batch) it is identical.
    first_plain = clip_train.train(out=tmp_path / "p1", **{**kwargs, "steps": 1}).model.state_dict()
    first_probed = clip_train.train(out=tmp_path / "q1", attribute_weight=1.0, **{**kwargs, "steps": 1}).model.state_dict()
    assert text_keys and all(torch.equal(first_plain[k], first_probed[k]) for k in text_keys)
    with pytest.raises(ValueError, match="must be 0 .off. or positive"):
        clip_train.train(out=tmp_path / "neg", attribute_weight=-1.0, **kwargs)
    with pytest.raises(ValueError, match="without --attribute-weight"):
        clip_train.train(out=tmp_path / "plain", resume=True, attribute_weight=1.0, **{**kwargs, "steps": 3})


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


def test_partial_style_negatives_sit_between_photo_and_style():
    from refinestyle.data.synthfaces import STYLES, render, sample_params

    params = sample_params(4, seed=2)
    photo = render(params, style="photo", resolution=32)
    sketch = render(params, style="sketch", resolution=32)
    partial = clip_train.partial_styles(sketch, photo, torch.Generator().manual_seed(0))
    # Even rows: a blend photo + a (sketch - photo) with one a in [0.3, 0.7] per image (least squares recovers it).
    for i in (0, 2):
        d = (sketch[i] - photo[i]).flatten()
        a = float(((partial[i] - photo[i]).flatten() @ d) / (d @ d))
        assert 0.3 <= a <= 0.7
        assert torch.allclose(partial[i], (photo[i] + a * (sketch[i] - photo[i])).clamp(-1, 1), atol=1e-5)
    # Odd rows: the sketch's luminance with the photo's colour (chroma) where nothing clips.
    from refinestyle.images import luminance as lum

    for i in (1, 3):
        inside = (partial[i].abs() < 0.999).all(0)
        assert torch.allclose(lum(partial[i : i + 1])[0, 0][inside], lum(sketch[i : i + 1])[0, 0][inside], atol=1e-5)
        chroma = partial[i] - lum(partial[i : i + 1])[0]
        assert torch.allclose(chroma[:, inside], (photo[i] - lum(photo[i : i + 1])[0])[:, inside], atol=1e-5)
    # A batch with negatives names, for each out-of-domain face of its first half, its partial-style image.
    _, _, labels = clip_train.make_batch(1, batch=16, seed=0, resolution=32, style_negatives=True)
    rows = labels["negative_rows"]
    assert labels["negatives"].shape == (rows.numel(), 3, 32, 32)
    assert torch.all(rows < 8) and torch.all(labels["styles"][rows] != STYLES.index("photo"))
    # The negatives add images only: the faces, styles and captions of the batch stay those of the plain recipe.
    _, plain_texts, plain_labels = clip_train.make_batch(1, batch=16, seed=0, resolution=32)
    _, texts, _ = clip_train.make_batch(1, batch=16, seed=0, resolution=32, style_negatives=True)
    assert texts == plain_texts and torch.equal(plain_labels["styles"], labels["styles"])
    assert "negatives" not in plain_labels


def test_clip_fine_tuning_starts_from_the_exported_weights(tmp_path):
    base = clip_train.train(out=tmp_path / "base", steps=1, minutes=10, batch=6, progress=False, eval_every=1000)
    base.save_pretrained(tmp_path / "export")
    # Zero steps: the fine-tuning run returns exactly what it started from.
    same = clip_train.train(out=tmp_path / "ft0", steps=0, minutes=10, batch=6, progress=False,
                            init_from=tmp_path / "export", style_negatives=True)
    sa, sb = base.model.state_dict(), same.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    # Training with the hard negatives moves the weights and keeps the vocabulary.
    tuned = clip_train.train(out=tmp_path / "ft", steps=2, minutes=10, batch=6, progress=False, eval_every=1000,
                             init_from=tmp_path / "export", style_negatives=True)
    assert tuned.tokenizer.words == base.tokenizer.words
    assert any(not torch.equal(sa[k], v) for k, v in tuned.model.state_dict().items())


def test_recoloured_backgrounds_keep_the_figure_and_the_texture():
    from refinestyle.data.synthfaces import STYLES, decode, render, sample_params
    from refinestyle.data.synthfaces._render import hsv_to_rgb

    params = sample_params(6, seed=4)
    styles = torch.tensor([STYLES.index(s) for s in ("sketch", "popart", "watercolor", "sketch", "zombie", "photo")])
    images = torch.cat([render(params[i : i + 1], style=STYLES[int(s)], resolution=32) for i, s in enumerate(styles)])
    _, masks = render(params, resolution=32, return_masks=True)
    background = masks["background"]
    out = clip_train.recolour_backgrounds(images, background, params, styles, torch.Generator().manual_seed(1), share=1.0)
    figure = background[:, 0] == 0
    assert torch.equal(out.permute(0, 2, 3, 1)[figure], images.permute(0, 2, 3, 1)[figure])  # the figure is untouched
    # Where nothing clips, the background moved by one colour per face: its texture (the deviation from the mean) stays.
    for i in range(6):
        inside = (background[i, 0] == 1) & (out[i].abs() < 0.999).all(0)
        shift = out[i][:, inside] - images[i][:, inside]  # [3, P]
        assert torch.allclose(shift, shift[:, :1].expand_as(shift), atol=1e-5)
    # A sketch stays grey (no colour at all); the others take the face's background hue.
    for i in (0, 3):
        assert torch.allclose(out[i, 0], out[i, 1], atol=1e-6) and torch.allclose(out[i, 1], out[i, 2], atol=1e-6)
    hue = hsv_to_rgb(decode(params)["background_hue"], 1.0, 1.0)  # [N, 3]
    for i in (1, 2, 4, 5):
        mean = (out[i] * background[i]).sum((1, 2)) / background[i].sum()  # [3]
        assert int(mean.argmax()) == int(hue[i].argmax())
    # share=0 leaves every image as drawn.
    same = clip_train.recolour_backgrounds(images, background, params, styles, torch.Generator().manual_seed(1), share=0.0)
    assert torch.equal(same, images)


def test_shortcut_images_carry_the_style_background_and_colours_but_not_its_look():
    from refinestyle.data.synthfaces import STYLES, render, sample_params

    params = sample_params(4, seed=6)
    photo, masks = render(params, style="photo", resolution=32, return_masks=True)
    background = masks["background"]
    # A photo dressed in its own shortcuts is itself.
    assert torch.allclose(clip_train.shortcut_images(photo, photo, background), photo, atol=1e-5)
    sketch = render(params, style="sketch", resolution=32)
    fake = clip_train.shortcut_images(sketch, photo, background)
    pure = background[:, 0] == 1
    assert torch.equal(fake.permute(0, 2, 3, 1)[pure], sketch.permute(0, 2, 3, 1)[pure])  # the sketch's paper
    inside = background[:, 0] == 0
    # Inside the figure each channel is the photo's, scaled and shifted (where nothing clips): the photo's drawing
    # and colours, at the sketch's levels.
    for i in range(4):
        keep = inside[i] & (fake[i].abs() < 0.999).all(0)
        for c in range(3):
            x, y = photo[i, c][keep], fake[i, c][keep]
            design = torch.stack([x, torch.ones_like(x)], 1)  # [P, 2]
            fit = torch.linalg.lstsq(design, y.unsqueeze(1)).solution  # [2, 1]
            assert float(fit[0]) > 0 and float((design @ fit).squeeze(1).sub(y).abs().max()) < 1e-4
    spread = lambda x: float((x.max(1).values - x.min(1).values)[inside].mean())  # noqa: E731
    assert spread(sketch) == 0.0 and spread(fake) > 0.05
    # In a batch, every face of the first half in a style colour does not define brings its shortcut image.
    _, texts, labels = clip_train.make_batch(2, batch=32, seed=0, resolution=32, decouple_backgrounds=True)
    styled = [r for r in range(16) if STYLES[int(labels["styles"][r])] not in clip_train.COLOUR_DEFINED_STYLES]
    assert labels["negative_rows"].tolist() == styled and labels["negatives"].shape == (len(styled), 3, 32, 32)
    _, plain_texts, plain_labels = clip_train.make_batch(2, batch=32, seed=0, resolution=32)
    assert texts == plain_texts and torch.equal(labels["styles"], plain_labels["styles"])


def test_texture_augmentation_can_be_left_out():
    flat = torch.full((4, 3, 32, 32), 0.25)
    # Zoom, shift and flip keep a flat image flat; the blur-and-noise part does not.
    plain = clip_train.augment(flat, torch.Generator().manual_seed(0), texture=False)
    assert torch.allclose(plain, flat, atol=1e-6)
    noisy = clip_train.augment(flat, torch.Generator().manual_seed(0))
    assert float((noisy - flat).abs().max()) > 0.01
    # Without texture augmentation a renderer sketch stays what it was drawn as: one grey channel copied to RGB.
    from refinestyle.data.synthfaces import render, sample_params

    sketch = render(sample_params(2, seed=1), style="sketch", resolution=32)
    kept = clip_train.augment(sketch, torch.Generator().manual_seed(3), texture=False)
    assert torch.equal(kept[:, 0], kept[:, 1]) and torch.equal(kept[:, 1], kept[:, 2])
