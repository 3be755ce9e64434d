"""The shipped default model, hub/refinestyle-synthfaces, against the renderer and its own model card."""

import json
import statistics

import pytest
import torch

from refinestyle import RefineStyleModel
from refinestyle.cards import domain_metrics
from refinestyle.data.synthfaces import STYLES, render, sample_params, style_prompt, z_to_params
from refinestyle.evaluation import psnr

from .conftest import REPO

HUB = REPO / "hub" / "refinestyle-synthfaces"
# Shipped styles whose domain does not move the images toward the renderer's pixels (issue 5, README).
KNOWN_MISSES = {"pixelart"}
pytestmark = pytest.mark.skipif(not (HUB / "model_index.json").exists(), reason="the default model is not built yet")


@pytest.fixture(scope="module")
def model():
    return RefineStyleModel.from_pretrained(HUB)


@pytest.fixture(scope="module")
def card():
    return json.loads((HUB / "metrics.json").read_text())


def test_generator_matches_the_renderer_on_new_seeds(model, card):
    z = torch.randn(128, model.generator.config.z_dim, generator=torch.Generator().manual_seed(2024))
    with torch.no_grad():
        fake = model.generate(z=z)
    truth = render(z_to_params(z), style="photo", resolution=model.generator.config.resolution)
    measured = psnr(fake, truth).mean().item()
    assert measured > card["generator"]["psnr"] - 1.0, (measured, card["generator"]["psnr"])
    # And far better than a generator that ignores z (the mean face).
    assert measured > psnr(truth.mean(0, keepdim=True).expand_as(truth), truth).mean().item() + 5


def test_clip_zero_shot_style(model, card):
    params = sample_params(20, seed=99)
    texts = model.clip.encode_text([style_prompt(s) for s in STYLES])
    correct = 0
    for idx, style in enumerate(STYLES):
        emb = model.clip.encode_image(render(params, style=style, resolution=64))
        correct += int(((emb @ texts.t()).argmax(1) == idx).sum())
    assert correct / (20 * len(STYLES)) >= min(0.9, card["clip"]["style"] - 0.05)


def test_clip_zero_shot_glasses_and_smile(model, card):
    """Yes/no prompts per style on faces the card's evaluation never saw (issue target: at least 90%)."""
    from refinestyle.data.synthfaces import attribute_labels
    from refinestyle.train.clip import zero_shot_prompts

    params = sample_params(30, seed=4711)
    labels = attribute_labels(params)
    correct = {"glasses": 0, "smile": 0}
    for style in STYLES:
        emb = model.clip.encode_image(render(params, style=style, resolution=64))
        with_glasses, without_glasses, smiling, neutral = model.clip.encode_text(zero_shot_prompts(style))
        correct["glasses"] += int((((emb @ with_glasses) > (emb @ without_glasses)) == labels["glasses"].bool()).sum())
        correct["smile"] += int((((emb @ smiling) > (emb @ neutral)) == labels["smile"].bool()).sum())
    for name, count in correct.items():
        accuracy = count / (30 * len(STYLES))
        assert accuracy >= min(0.9, card["clip"][name] - 0.05), (name, accuracy, card["clip"][name])


@pytest.mark.slow
def test_shipped_classifier_reads_renders_and_gives_the_cards_numbers(model, card):
    """The benchmarks' attribute classifier (bench/assets, fp16) reads fresh renders' labels, and gives the card's
    classifier numbers exactly: agreement on the 1,000 held-out z, each style domain's style accuracy and content."""
    from refinestyle.data.synthfaces import attribute_labels
    from refinestyle.evaluation import attribute_classifier_path, domain_quality, evaluate_generator, load_attribute_classifier

    classifier = load_attribute_classifier(attribute_classifier_path(REPO / "bench" / "assets", steps=600, seed=0))
    params = sample_params(50, seed=8080)
    labels = attribute_labels(params)
    pred = classifier.predict(render(params, style="photo", resolution=64))
    for head in ("glasses", "smile", "eye_color"):
        assert (pred[head] == labels[head].long()).float().mean() >= 0.9, head
    for idx, style in enumerate(STYLES):
        assert (classifier.predict(render(params, style=style, resolution=64))["style"] == idx).float().mean() >= 0.9, style
    with torch.no_grad():
        gen = evaluate_generator(model.generator, classifier, n=card["generator"]["n"])
    for key in ("agree_glasses", "agree_smile", "agree_eye_color", "classifier_on_renders"):
        assert getattr(gen, key) == pytest.approx(card["generator"][key], abs=1e-6), key
    assert gen.eye_color_confusion == card["generator"]["eye_color_confusion"]
    G = model.generator
    for name, recorded in card["domains"].items():
        with torch.no_grad():
            got = domain_quality(lambda ws, d=name: model.generate(ws=ws, domain=d), G, classifier, name)
        for key in ("style_acc", "content"):
            assert got[key] == pytest.approx(recorded["adapted"][key], abs=1e-6), (name, key)


def test_domains_reproduce_their_cards(model):
    assert len(model.domains) >= 4
    for name, dom in model.domains.items():
        recorded = json.loads((HUB / "domains" / name / "metrics.json").read_text())
        again = domain_metrics(model, dom, target=recorded["target"])
        assert abs(again["clip_target_similarity_after"] - recorded["clip_target_similarity_after"]) < 1e-4, name
        assert again["clip_target_similarity_after"] > again["clip_target_similarity_before"], name


def test_encoder_refinement_beats_w_plus(model):
    if model.encoder is None:
        pytest.skip("no encoder shipped")
    images = render(sample_params(16, seed=555), style="sketch", resolution=64)
    out = model.invert(images, method="encoder")
    assert psnr(out.images, out.targets).mean() > psnr(out.w_images, out.targets).mean()


def test_encoder_reproduces_its_card_inversion_numbers(model, card):
    """The card's median PSNR of the default (two-stage) encoder, from ``bench/inversion.py`` (200 held-out renders,
    seed 31337), is what the shipped files give: refined, and W+ only (its frozen stage-one W+ encoder)."""
    if model.encoder is None or "inversion" not in card:
        pytest.skip("no encoder or no inversion bench in the card")
    params = sample_params(200, seed=31337)
    for style, name in (("photo", "photo (in domain)"), ("pixelart", "pixelart")):
        images = render(params, style=style, resolution=64)
        out = model.invert(images, method="encoder")
        refined = statistics.median(psnr(out.images, out.targets).tolist())  # the bench's median (mean of the middle two)
        w_only = statistics.median(psnr(out.w_images, out.targets).tolist())
        recorded = card["inversion"][name]
        assert abs(refined - recorded["RefineStyle two-stage"]["psnr"]) < 0.02, (name, refined)
        assert abs(w_only - recorded["W+ encoder (stage one)"]["psnr"]) < 0.02, (name, w_only)


def test_domains_reproduce_their_ground_truth_numbers(model, card):
    """The card's ground-truth PSNR of each shipped style domain (``bench/synthfaces.py``: 64 held-out z, seed
    4242, against ``render(z_to_params(z), style)``) is what the shipped files give, and the domains move the
    images toward the renderer's styles on average."""
    G = model.generator
    z = torch.randn(64, G.config.z_dim, generator=torch.Generator().manual_seed(4242))
    params = z_to_params(z)
    assert set(card["domains"]) == {name for name in model.domains if name in STYLES}
    gains = []
    for name, recorded in card["domains"].items():
        truth = render(params, style=name, resolution=G.config.resolution)
        with torch.no_grad():
            ws = G.mapping(z)
            before = psnr(G.synthesis(ws).clamp(-1, 1), truth).mean().item()
            after = psnr(model.generate(ws=ws, domain=name).clamp(-1, 1), truth).mean().item()
            at_suggested = psnr(model.generate(ws=ws, domain=name, strength="suggested").clamp(-1, 1), truth).mean().item()
        assert abs(before - recorded["unadapted"]["psnr"]) < 0.05, (name, before, recorded["unadapted"]["psnr"])
        assert abs(after - recorded["adapted"]["psnr"]) < 0.05, (name, after, recorded["adapted"]["psnr"])
        assert recorded["suggested"]["strength"] == model.domains[name].config.suggested_strength
        assert abs(at_suggested - recorded["suggested"]["psnr"]) < 0.05, (name, at_suggested, recorded["suggested"]["psnr"])
        # The suggestion is where the CLIPs say "enough": never more than 0.1 dB further from the ground truth than
        # strength 1 (nearer for every domain that overshoots; watercolor, remade at the automatic learning rate,
        # hardly overshoots: 0.04 dB below strength 1 at its suggestion for this seed-0 domain, +0.20 median over
        # seeds 0-2 in the bench), and nearer than no domain for all but pixel-art, the known miss (README, Domain adaptation: its domain
        # darkens the background the renderer keeps flat; remade at the automatic learning rate it is 0.31 dB above
        # no domain at its suggestion, but with 0.38 of the faces in the class there; 0.32 below at lr 0.01: this
        # bound only stops it from getting worse than that).
        assert at_suggested > after - 0.1, (name, after, at_suggested)
        if name in KNOWN_MISSES:
            assert at_suggested > before - 0.4, (name, before, at_suggested)
        else:
            assert at_suggested > before, (name, before, at_suggested)
        gains.append(after - before)
    assert sum(gains) / len(gains) > 1.0, gains


def test_shipped_suggested_strength_is_what_the_clips_give_for_the_shipped_file(model):
    """The recorded suggestion was measured on the tokens before fp16 storage; the file as shipped gives it again."""
    dom = model.domains["sketch"]
    found = model.suggest_strength(dom)
    assert found.strength == dom.config.suggested_strength
    assert max(found.directional) > 0.5  # the CLIPs see the sketch direction clearly


def test_to_moves_every_component():
    # A fresh load (the module fixture stays on the CPU); "meta" stands in for a GPU: no data, only placement.
    moved = RefineStyleModel.from_pretrained(REPO / "hub" / "refinestyle-synthfaces").to("meta")
    parts = {"generator": moved.generator, "encoder": moved.encoder, **{f"clip {c.name}": c.model for c in moved.clips},
             **{f"domain {n}": d for n, d in moved.domains.items()}}
    assert moved.encoder is not None and len(moved.clips) >= 2 and moved.domains
    stay = [name for name, module in parts.items() if any(t.device.type != "meta" for t in [*module.parameters(), *module.buffers()])]
    assert not stay, f"left behind: {stay}"
    assert moved.device.type == "meta"
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA device"):
            RefineStyleModel.from_pretrained(REPO / "hub" / "refinestyle-synthfaces").to("cuda")
