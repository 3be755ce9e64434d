"""Domain adaptation and optimisation inversion on tiny models; image input handling."""

import copy
import io
import math
import warnings

import pytest
import torch
from PIL import Image

from refinestyle import RefineStyleModel, StyleGAN2Generator
from refinestyle import adaptation
from refinestyle.adaptation import AdaptConfig, clip_losses
from refinestyle.clip import CLIPGuide
from refinestyle.images import ImageError, images_to_tensor
from refinestyle.inversion import invert_optimize, reconstruction_loss

from .conftest import load_bench_script


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    G = StyleGAN2Generator(z_dim=8, w_dim=16, resolution=16, channels=[16, 16, 8], mapping_layers=2, num_tokens=4)
    with torch.no_grad():  # a w_avg that is the real mean of mapping outputs
        G.mapping.w_avg.copy_(G.mapping.w(torch.randn(2000, 8)).mean(0))
    clip = CLIPGuide.create_synthfaces(vocabulary="a photo sketch of face red blue".split())
    return RefineStyleModel(generator=G, clip=clip)


def test_adaptation_moves_along_the_text_direction(tiny_model):
    seen = []
    dom = tiny_model.adapt("a photo of a face", "a sketch of a face", steps=40, batch=4, lr=0.05, seed=1,
                           callback=lambda step, total, state: seen.append((step, total)), preview_every=20)
    states = dom.history.states
    assert seen[-1] == (40, 40) and len(states) == 40
    first = sum(s["direction_loss"] for s in states[:5]) / 5
    last = sum(s["direction_loss"] for s in states[-5:]) / 5
    assert last < first, (first, last)
    # On held-out faces (fixed latents, no batch noise) the images moved along the text direction: the mean
    # cos(E(G_domain) - E(G), direction) is well above what a random residual of the same size gives (0.12-0.16
    # over seeds 1-3, both schedules and thread counts here, against 0.001 for this draw and 0.05 for another).
    def along_text(domain):
        return adaptation.suggest_strength(tiny_model.generator, tiny_model.clips, domain, source="a photo of a face",
                                           target="a sketch of a face", step=1.0, max_strength=1.0).directional[0]

    random_residual = copy.deepcopy(dom)
    with torch.no_grad():
        for p in random_residual.parameters():
            p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * p.abs().mean())
    assert along_text(dom) > max(0.08, 2 * along_text(random_residual)), (along_text(dom), along_text(random_residual))
    # The domain is a small file-able set of tokens that changes the images; strength 0 is a no-op.
    tiny_model.add_domain(dom, name="sketch")
    z = torch.randn(3, 8, generator=torch.Generator().manual_seed(5))
    plain = tiny_model.generate(z=z)
    assert (tiny_model.generate(z=z, domain="sketch") - plain).abs().max() > 1e-3
    assert torch.equal(tiny_model.generate(z=z, domain="sketch", strength=0.0), plain)
    # layers="all": convolutions and toRGB; the default K: 1 per convolution, 3 per toRGB layer (after the warm-up)
    shapes = tiny_model.generator.refinable_layers(include_torgb=True)
    assert dom.num_parameters() == sum((3 if name.endswith(".torgb") else 1) * (o + i * k * k) + 1
                                       for name, (o, i, k) in shapes.items())
    # Deterministic given the seed.
    again = tiny_model.adapt("a photo of a face", "a sketch of a face", steps=5, batch=4, lr=0.05, seed=1)
    first5 = tiny_model.adapt("a photo of a face", "a sketch of a face", steps=5, batch=4, lr=0.05, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(again.parameters(), first5.parameters()))


def test_rank_warm_up_then_truncation(tiny_model):
    """Warm-up with 4 tokens everywhere, then K = 1 (toRGB 3): one run to the callback, small at the end."""
    G = tiny_model.generator
    ws = G.mapping(torch.randn(3, 8, generator=torch.Generator().manual_seed(4)))
    seen, at_truncation = [], {}

    def callback(step, total, state):
        seen.append((step, total))
        if step == 6:  # the last warm-up step: the 4-token domain
            at_truncation["images"] = state.synthesize(ws).detach()

    dom = tiny_model.adapt("a photo of a face", "a sketch of a face", steps=10, batch=2, seed=3, num_tokens=1,
                           torgb_tokens=3, warmup_tokens=4, warmup_steps=6, callback=callback)
    assert seen == [(s, 10) for s in range(1, 11)] and len(dom.history.states) == 10
    seconds = [s["seconds"] for s in dom.history.states]
    assert seconds == sorted(seconds)  # one clock over both phases
    assert set(dom.tokens_per_layer().items()) == {(n, 3 if n.endswith(".torgb") else 1) for n in dom.tokens_per_layer()}
    # One cosine decay over the whole run: the steps after the truncation continue it (0.01 · (1 + cos(π t / 10)) / 2).
    cosine = [0.01 * 0.5 * (1 + math.cos(math.pi * t / 10)) for t in range(10)]
    assert [s["lr"] for s in dom.history.states] == pytest.approx(cosine, rel=1e-12, abs=1e-15)
    # "cosine-restart" (the earlier recipe) starts a fresh decay after the truncation, and its warm-up is exactly
    # a plain 6-step run with 4 tokens (same seed, batches and schedule).
    seen.clear()
    restart = tiny_model.adapt("a photo of a face", "a sketch of a face", steps=10, batch=2, seed=3, num_tokens=1,
                               torgb_tokens=3, warmup_tokens=4, warmup_steps=6, lr_schedule="cosine-restart",
                               callback=callback)
    lrs = [s["lr"] for s in restart.history.states]
    assert lrs[5] == pytest.approx(0.01 * 0.5 * (1 + math.cos(math.pi * 5 / 6))) and lrs[6] == pytest.approx(0.01)
    plain = tiny_model.adapt("a photo of a face", "a sketch of a face", steps=6, batch=2, seed=3, num_tokens=4, warmup_steps=0)
    with torch.no_grad():
        assert torch.equal(at_truncation["images"], G.synthesis(ws, tokens=plain.token_set()))
        # ...and the steps after it moved the truncated tokens on.
        start = plain.truncated(1, torgb_rank=3)
        assert not all(torch.equal(a, b) for a, b in zip(start.parameters(), restart.parameters()))
    with pytest.raises(ValueError, match="warmup_tokens .2. must be at least num_tokens"):
        tiny_model.adapt("a photo of a face", "a sketch of a face", steps=4, num_tokens=1, torgb_tokens=3,
                         warmup_tokens=2, warmup_steps=2)


def test_default_token_plan_is_the_shipped_recipe():
    """K = 1, toRGB 3, a warm-up with 8 tokens for 40% of the steps; none where no layer would be truncated."""
    import inspect

    from refinestyle.pipeline import RefineStyleModel as Model

    assert AdaptConfig().token_plan(8) == (1, 3, 8, 120)
    assert AdaptConfig(steps=150).token_plan(8) == (1, 3, 8, 60)
    assert AdaptConfig(steps=2).token_plan(8) == (1, 3, None, 0)  # 40% of 2 steps rounds to none
    assert AdaptConfig(num_tokens=None).token_plan(8) == (8, 8, None, 0)  # the generator's K: nothing to truncate
    assert AdaptConfig(num_tokens=2).token_plan(8) == (2, 3, 8, 120)
    assert AdaptConfig(num_tokens=16).token_plan(8) == (16, 16, None, 0)
    assert AdaptConfig(num_tokens=1, torgb_tokens=1).token_plan(8) == (1, 1, 8, 120)
    assert AdaptConfig(warmup_steps=0).token_plan(8) == (1, 3, None, 0)
    assert AdaptConfig(warmup_tokens=4, warmup_steps=10).token_plan(8) == (1, 3, 4, 10)
    # model.adapt's defaults are AdaptConfig's (one recipe, not two).
    params = inspect.signature(Model.adapt).parameters
    for name in ("steps", "lr", "lr_schedule", "batch", "seed", "num_tokens", "torgb_tokens", "warmup_tokens",
                 "warmup_steps", "layers", "content_weight", "global_weight", "augment_views", "suggest_strength"):
        assert params[name].default == getattr(AdaptConfig(), name), name


def test_automatic_learning_rate_follows_the_steps(tiny_model):
    """lr=None: 0.75 / steps within [0.005, 0.01] (closed form); a given lr wins; the run starts at it."""
    for steps in (1, 10, 60, 75, 90, 100, 120, 150, 200, 300, 5000):
        assert AdaptConfig(steps=steps).learning_rate() == pytest.approx(min(0.01, max(0.005, 0.75 / steps)), rel=1e-12)
    assert AdaptConfig(steps=100).learning_rate() == pytest.approx(0.0075)
    assert AdaptConfig(steps=300, lr=0.02).learning_rate() == 0.02
    dom = tiny_model.adapt("a photo of a face", "a sketch of a face", steps=100, batch=1, seed=0, warmup_steps=0,
                           augment_views=0, suggest_strength=False, callback=lambda step, total, state: None)
    assert dom.history.states[0]["lr"] == pytest.approx(0.0075, rel=1e-12)


def test_gradient_is_normalised_so_the_zero_start_does_not_freeze_adam(tiny_model):
    """At the zero-residual start the directional loss gradient is ~1/|Δ| = huge; unnormalised, Adam's memory of it
    would freeze every later step and move each token entry by the same amount (the sign of step 1)."""
    from refinestyle.adaptation import normalise_gradient

    a, b = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2))
    a.grad, b.grad = torch.tensor([3.0, 0.0, 0.0]), torch.tensor([0.0, 4.0])
    assert normalise_gradient([a, b]) == pytest.approx(5.0)
    assert torch.allclose(torch.cat([a.grad, b.grad]), torch.tensor([0.6, 0, 0, 0, 0.8]))
    dom = tiny_model.adapt("a photo of a face", "a sketch of a face", steps=30, batch=4, lr=0.05, seed=2, augment_views=0)
    moved = torch.cat([p.abs().flatten() for p in dom.p.values()])  # P started at exactly zero
    assert moved.max() > 0.1 and moved.std() / moved.mean() > 0.2, (moved.mean(), moved.std())


def test_image_guided_and_adaptive_layers(tiny_model):
    refs = torch.rand(2, 3, 16, 16) * 2 - 1
    dom = tiny_model.adapt("a photo of a face", target_images=refs, steps=3, batch=2, layers="adaptive")
    assert dom.config.target == "<reference images>"
    assert 0 < len(dom.config.layers) <= len(tiny_model.generator.refinable_layers(include_torgb=True))


def test_nan_stops_and_keeps_last_good_tokens(tiny_model, monkeypatch):
    clip = tiny_model.clip
    calls = {"n": 0}
    original = CLIPGuide.encode_image

    def flaky(self, images):
        calls["n"] += 1
        out = original(self, images)
        return out * float("nan") if calls["n"] > 12 else out

    monkeypatch.setattr(CLIPGuide, "encode_image", flaky)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dom = tiny_model.adapt("a photo of a face", "a sketch of a face", steps=20, batch=2)
    assert dom.history.stopped_early is not None and "kept the tokens" in dom.history.stopped_early
    assert any("adaptation stopped" in str(w.message) for w in caught)
    assert all(torch.isfinite(p).all() for p in dom.parameters())
    assert len(dom.history.states) < 20
    del clip


@pytest.mark.parametrize("nan_after_calls,states", [(12, 6), (30, 15)])  # 2 CLIP calls a step: warm-up / after it
def test_nan_during_a_rank_warm_up_keeps_a_small_finite_domain(tiny_model, monkeypatch, nan_after_calls, states):
    calls = {"n": 0}
    original = CLIPGuide.encode_image

    def flaky(self, images):
        calls["n"] += 1
        out = original(self, images)
        return out * float("nan") if calls["n"] > nan_after_calls else out

    monkeypatch.setattr(CLIPGuide, "encode_image", flaky)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dom = tiny_model.adapt("a photo of a face", "a sketch of a face", steps=20, batch=2, num_tokens=1,
                               torgb_tokens=3, warmup_tokens=4, warmup_steps=10)
    assert dom.history.stopped_early is not None and len(dom.history.states) == states
    # Either way the result is the stored size (the warm-up's last good tokens truncated, or the later ones).
    assert set(dom.tokens_per_layer().values()) == {1, 3}
    assert all(torch.isfinite(p).all() for p in dom.parameters())


@pytest.mark.parametrize("kwargs,message", [
    (dict(target=""), "prompt is empty"),
    (dict(target="x" * 1000), "keep prompts under"),
    (dict(target="a sketch", steps=0), "steps must be an integer from 1"),
    (dict(target="a sketch", steps=10**6), "steps must be an integer from 1"),
    (dict(target="a sketch", lr=float("nan")), "lr must be None .automatic, by the number of steps. or a number in"),
    (dict(target="a sketch", lr=0), "lr must be None .automatic"),
    (dict(target="a sketch", layers="some"), "layers must be one of"),
    (dict(target="a sketch", torgb_tokens=0), "torgb_tokens must be an integer from 1 to 256"),
    (dict(target="a sketch", num_tokens=2.5), "num_tokens must be an integer from 1 to 256"),
    (dict(target="a sketch", steps=5, warmup_tokens=8, warmup_steps=5), "warmup_steps must be None .automatic. or an integer"),
    (dict(target="a sketch", warmup_tokens=8, warmup_steps=0), "warmup_tokens=8 with warmup_steps=0"),
    (dict(target="a sketch", num_tokens=8, warmup_steps=3), "warmup_steps=3 needs warmup_tokens"),
    (dict(target="a sketch", num_tokens=4, torgb_tokens=4, warmup_tokens=2), "warmup_tokens .2. must be at least"),
    (dict(target="a photo of a face"), "same CLIP embedding"),
    (dict(target=None), "give a target prompt or target_images"),
])
def test_adapt_bad_inputs(tiny_model, kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        tiny_model.adapt("a photo of a face", **kwargs)


def test_adapt_without_clip_is_explained(tiny_model):
    bare = RefineStyleModel(generator=tiny_model.generator)
    with pytest.raises(ValueError, match="no CLIP"):
        bare.adapt("a photo", "a sketch")


def test_baselines_train_the_same_losses(tiny_model):
    bench = load_bench_script("adaptation")  # the baselines live with the benchmark that compares them
    adapt_finetune, adapt_channel_scale = bench.adapt_finetune, bench.adapt_channel_scale
    cfg = AdaptConfig(steps=4, batch=2, lr=0.01)
    G_ft, hist_ft = adapt_finetune(tiny_model.generator, [tiny_model.clip], source="a photo of a face", target="a sketch of a face", config=cfg)
    G_cs, hist_cs = adapt_channel_scale(tiny_model.generator, [tiny_model.clip], source="a photo of a face", target="a sketch of a face", config=cfg)
    ws = tiny_model.generator.mapping(torch.randn(2, 8))
    with torch.no_grad():
        base = tiny_model.generator.synthesis(ws)
        assert (G_ft.synthesis(ws) - base).abs().max() > 0
        assert (G_cs.synthesis(ws) - base).abs().max() > 0
    assert len(hist_ft.states) == len(hist_cs.states) == 4
    # The frozen generator is untouched.
    with torch.no_grad():
        assert torch.equal(tiny_model.generator.synthesis(ws), base)


def test_optimisation_inversion_recovers_a_generated_image(tiny_model):
    G = tiny_model.generator
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        target = G.synthesis(G.mapping(torch.randn(2, 8, generator=g)))
    start = reconstruction_loss(G.synthesis(G.mapping.w_avg[None, None].expand(2, G.num_ws, -1)), target).item()
    ws, tokens = invert_optimize(G, target, w_steps=150, token_steps=0)
    w_loss = reconstruction_loss(G.synthesis(ws), target).item()
    assert w_loss < 0.5 * start
    ws2, tokens2 = invert_optimize(G, target, w_steps=0, token_steps=80, init_ws=ws)
    with torch.no_grad():
        refined = reconstruction_loss(G.synthesis(ws2, tokens=tokens2), target).item()
    assert refined < w_loss


def test_invert_api_accepts_pil_and_reports(tiny_model):
    img = Image.new("RGB", (40, 30), (200, 30, 30))
    out = tiny_model.invert([img, img.convert("L")], steps=6)
    assert out.images.shape == (2, 3, 16, 16) and out.w_images.shape == (2, 3, 16, 16)
    assert out.ws.shape == (2, tiny_model.generator.num_ws, 16) and out.tokens.batch_size == 2
    assert out.method == "optimize" and out.seconds > 0
    assert torch.allclose(tiny_model.generate(ws=out.ws), out.w_images)
    assert torch.allclose(tiny_model.generate(ws=out.ws, tokens=out.tokens), out.images)
    with pytest.raises(ValueError, match="has no encoder"):
        tiny_model.invert([img], method="encoder")


def _png_bytes(img, **save):
    buf = io.BytesIO()
    img.save(buf, format=save.pop("format", "PNG"), **save)
    return buf.getvalue()


def test_image_modes_and_orientation():
    red = Image.new("RGB", (64, 32), (255, 0, 0))
    t = images_to_tensor([red], 16)[0]
    assert torch.allclose(t[:, 8, 8], torch.tensor([1.0, -1.0, -1.0]), atol=1e-2)
    modes = {
        "L": Image.new("L", (20, 20), 128),
        "LA": Image.new("LA", (20, 20), (0, 0)),  # fully transparent → white
        "RGBA": Image.new("RGBA", (20, 20), (0, 0, 255, 255)),
        "P": red.convert("P"),
        "CMYK": Image.new("CMYK", (20, 20), (0, 255, 255, 0)),
        "I;16": Image.new("I;16", (20, 20), 65535),
    }
    out = images_to_tensor(list(modes.values()), 16)
    assert out.shape == (6, 3, 16, 16) and out.min() >= -1 and out.max() <= 1
    assert torch.allclose(out[1], torch.ones(3, 16, 16), atol=1e-2)  # transparent on white
    assert torch.allclose(out[5], torch.ones(3, 16, 16), atol=1e-2)  # 16-bit white stays white
    assert out[2, 2].mean() > 0.9 and out[2, 0].mean() < -0.9  # RGBA blue
    # EXIF orientation 6 (rotate 90° clockwise to display): a left-red/right-blue image becomes top/bottom.
    img = Image.new("RGB", (40, 20), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated = images_to_tensor([_png_bytes(img, format="JPEG", exif=exif.tobytes(), quality=95)], 16)[0]
    assert rotated[0, 2, 8] > 0.5 and rotated[2, 13, 8] > 0.5  # red on top, blue below after EXIF transpose


def test_bad_images_are_explained(tmp_path):
    with pytest.raises(ImageError, match="not an image"):
        images_to_tensor([b"this is text"], 16)
    good = _png_bytes(Image.new("RGB", (64, 64), (10, 20, 30)))
    with pytest.raises(ImageError, match="corrupt or truncated"):
        images_to_tensor([good[: len(good) // 2]], 16)
    with pytest.raises(ImageError, match="only 8x8 px"):
        images_to_tensor([Image.new("RGB", (8, 8))], 16)
    with pytest.raises(ImageError, match="megapixels"):
        images_to_tensor([Image.new("L", (8000, 6000))], 16)
    with pytest.raises(ImageError, match="no such image file"):
        images_to_tensor([str(tmp_path / "missing.png")], 16)
    with pytest.raises(ImageError, match=r"must be in \[-1, 1\]"):
        images_to_tensor(torch.rand(1, 3, 16, 16) * 255, 16)
    with pytest.raises(ImageError, match="NaN"):
        images_to_tensor(torch.full((1, 3, 16, 16), math.nan), 16)
    with pytest.raises(ImageError, match="no images"):
        images_to_tensor([], 16)


def test_random_affine_identity_flip_and_pairing():
    from refinestyle.adaptation import paired_views
    from refinestyle.images import random_affine

    x = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    same = random_affine(x, generator=torch.Generator().manual_seed(1), scale=(1.0, 1.0), shift=0.0, flip=False)
    assert torch.allclose(same, x, atol=1e-5)
    mirrored = random_affine(x, generator=torch.Generator().manual_seed(1), scale=(1.0, 1.0), shift=0.0, flip=True)
    for a, b in zip(mirrored, x):  # each image is itself or its mirror image
        assert torch.allclose(a, b, atol=1e-5) or torch.allclose(a, b.flip(-1), atol=1e-5)
    assert not torch.allclose(mirrored, x, atol=1e-5)
    # paired views: originals first, then the same view of both batches
    y = x * 0.5
    xv, yv = paired_views(x, y, 3, seed=4)
    assert xv.shape == (24, 3, 16, 16) and torch.equal(xv[:6], x)
    assert torch.allclose(yv, xv * 0.5, atol=1e-6)  # warping is linear: same view ⇔ same scaling
    xs, ys = paired_views(x, y, 0, seed=4)
    assert xs is x and ys is y
    with pytest.raises(ValueError, match="augment_views"):
        AdaptConfig(augment_views=40).validate()


@pytest.fixture(scope="module")
def sketch_domain(tiny_model):
    return tiny_model.adapt("a photo of a face", "a sketch of a face", steps=20, batch=4, lr=0.05, seed=3)


def test_adapt_records_the_suggested_strength_read_off_the_clip_curve(tiny_model, sketch_domain, tmp_path):
    """The suggestion is the smallest grid strength within 1% of the best directional similarity, and the curve
    is the one a second computation through ``model.generate(strength=s)`` gives."""
    from refinestyle.adaptation import SUGGEST_FACES, SUGGEST_SEED
    from refinestyle.models.domain import DomainTokens

    found = sketch_domain.strength_suggestion
    assert found is not None and found.strength == sketch_domain.config.suggested_strength
    assert found.strengths[:3] == [0.05, 0.1, 0.15]
    best = max(found.directional)
    assert best > 0
    assert found.strength == min(s for s, v in zip(found.strengths, found.directional) if v >= 0.99 * best)
    clip = tiny_model.clip
    z = torch.randn(SUGGEST_FACES, 8, generator=torch.Generator().manual_seed(SUGGEST_SEED))
    direction = torch.nn.functional.normalize(clip.encode_text(["a sketch of a face"])[0] - clip.encode_text(["a photo of a face"])[0], dim=0)
    base = clip.encode_image(tiny_model.generate(z=z))
    for i in (0, len(found.strengths) // 2, len(found.strengths) - 1):
        moved = clip.encode_image(tiny_model.generate(z=z, domain=sketch_domain, strength=found.strengths[i]))
        cos = torch.nn.functional.cosine_similarity(moved - base, direction[None], dim=-1).mean().item()
        assert cos == pytest.approx(found.directional[i], abs=1e-5)
    # Stored with the domain; strength="suggested" is the domain at that strength, also inside a mix.
    sketch_domain.save_pretrained(tmp_path / "d")
    loaded = DomainTokens.from_pretrained(tmp_path / "d")
    assert loaded.config.suggested_strength == found.strength
    tiny_model.add_domain(loaded, name="suggested-sketch")
    assert torch.equal(tiny_model.generate(z=z[:2], domain="suggested-sketch", strength="suggested"),
                       tiny_model.generate(z=z[:2], domain="suggested-sketch", strength=found.strength))
    assert torch.equal(tiny_model.generate(z=z[:2], domain={"suggested-sketch": 0.5}, strength="suggested"),
                       tiny_model.generate(z=z[:2], domain={"suggested-sketch": 0.5 * found.strength}))
    # The model-level call reads the prompts the domain records and gives the same answer.
    assert tiny_model.suggest_strength(loaded).strengths == found.strengths


def test_suggested_strength_halves_when_the_residual_doubles(tiny_model, sketch_domain):
    """ΔW is linear in P, so doubling P doubles the residual: the curve of the doubled domain at s is the curve
    of the original at 2s, and so is the suggestion (measured on matching grids)."""
    from refinestyle.adaptation import suggest_strength

    G, clips = tiny_model.generator, tiny_model.clips
    doubled = copy.deepcopy(sketch_domain)
    with torch.no_grad():
        for p in doubled.p.values():
            p.mul_(2)
    prompts = dict(source="a photo of a face", target="a sketch of a face")
    original = suggest_strength(G, clips, sketch_domain, step=0.1, max_strength=2.0, **prompts)
    twice = suggest_strength(G, clips, doubled, step=0.05, max_strength=1.0, **prompts)
    n = min(len(original.directional), len(twice.directional))
    assert twice.directional[:n] == pytest.approx(original.directional[:n], abs=1e-5)
    if len(original.directional) == len(twice.directional):  # neither curve was cut short by the grid's end
        assert twice.strength == pytest.approx(original.strength / 2)
    # Any edit with a strength: the same doubling as a synthesize(ws, s) callable gives the same curve.
    tokens = sketch_domain.token_set()
    as_callable = suggest_strength(G, clips, lambda ws, s: G.synthesis(ws, tokens=[(tokens, 2 * s)]), step=0.05,
                                   max_strength=1.0, **prompts)
    assert as_callable.directional == pytest.approx(twice.directional, abs=1e-5)
    with pytest.raises(TypeError, match="edit must be a DomainTokens or a synthesize"):
        suggest_strength(G, clips, 3, **prompts)


def test_suggested_strength_none_and_bad_inputs(tiny_model, sketch_domain):
    from refinestyle.adaptation import suggest_strength
    from refinestyle.models.domain import DomainTokens

    G, clips = tiny_model.generator, tiny_model.clips
    zero = DomainTokens.from_generator(G, num_tokens=1, seed=0)  # P = 0: the images never move
    prompts = dict(source="a photo of a face", target="a sketch of a face")
    assert suggest_strength(G, clips, zero, **prompts).strength is None
    with pytest.raises(ValueError, match="no suggested strength"):
        tiny_model.generate(seeds=[0], domain=zero, strength="suggested")
    with pytest.raises(ValueError, match="finite number or 'suggested'"):
        tiny_model.generate(seeds=[0], domain=sketch_domain, strength="strong")
    with pytest.raises(ValueError, match="faces must be"):
        suggest_strength(G, clips, sketch_domain, faces=0, **prompts)
    with pytest.raises(ValueError, match="step <= max_strength"):
        suggest_strength(G, clips, sketch_domain, step=0.5, max_strength=0.1, **prompts)
    with pytest.raises(ValueError, match="suggested_strength must be"):
        DomainTokens(generator_signature=G.signature(), layers=["b4.conv1"], suggested_strength=float("nan"))
    image_guided = DomainTokens.from_generator(G, num_tokens=1, seed=0, target="<reference images>", source="a photo")
    with pytest.raises(ValueError, match="pass them again as target_images"):
        tiny_model.suggest_strength(image_guided)
    off = tiny_model.adapt("a photo of a face", "a sketch of a face", steps=2, batch=2, suggest_strength=False)
    assert off.config.suggested_strength is None and off.strength_suggestion is None


def test_directional_loss_counts_rounding_at_the_start_as_no_change(monkeypatch):
    # At the zero-residual start the CPU gives an embedding change of exactly 0; a device whose two passes differ by
    # rounding (CUDA) must get the same loss and the same first gradient, not a step along the rounding noise.
    projection = torch.randn(3 * 8 * 8, 16, generator=torch.Generator().manual_seed(0))

    class LinearCLIP:  # clip_losses needs only L2-normalised image embeddings
        def encode_image(self, images):
            return torch.nn.functional.normalize(images.flatten(1) @ projection, dim=-1)

    clip = LinearCLIP()
    images = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    direction, target = torch.nn.functional.normalize(torch.randn(2, 16, generator=torch.Generator().manual_seed(2)), dim=-1)
    exact = clip.encode_image(images)
    rounded = exact + 1e-7 * torch.randn(exact.shape, generator=torch.Generator().manual_seed(3))

    def loss_and_gradient(base):
        x = images.clone().requires_grad_(True)
        d_loss, g_loss = clip_losses([clip], [(direction, target)], x, [base])
        (d_loss + g_loss).backward()
        return d_loss.item(), x.grad

    (d_exact, grad_exact), (d_rounded, grad_rounded) = loss_and_gradient(exact), loss_and_gradient(rounded)
    assert d_exact == d_rounded == 1.0  # 1 - cos with a zero change
    assert torch.equal(grad_exact, grad_rounded)
    # Without the tolerance the rounding enters the loss and turns the gradient (the part along the noise drops
    # out), so Adam's first step, which moves every entry by the learning rate along its sign, differs too.
    monkeypatch.setattr(adaptation, "ZERO_DELTA", 0.0)
    d_noise, grad_noise = loss_and_gradient(rounded)
    assert abs(d_noise - 1.0) > 0.01
    assert torch.nn.functional.cosine_similarity(grad_noise.flatten(), grad_exact.flatten(), dim=0) < 0.99
    assert (grad_noise.sign() != grad_exact.sign()).any()
    # A real edit is measured as before: 1 - cos(change, direction).
    moved = exact + 1e-2 * direction
    d_moved, _ = loss_and_gradient(moved)
    expected = (1 - torch.nn.functional.normalize(exact - moved, dim=-1) @ direction).mean().item()
    assert math.isclose(d_moved, expected, rel_tol=1e-6)
