"""A complete repo from an official checkpoint: real CLIP guides named (not stored), loaded when first used, and the
adaptation loop run offline through a real open_clip architecture at random weights."""

import json
import time

import pytest
import torch
import torch.nn.functional as F

from refinestyle import RefineStyleModel
from refinestyle.cli import build_parser, main
from refinestyle.clip import CLIPGuide, cached_open_clip_weights
from refinestyle.hub import HubError

GUIDES = [["ViT-B-32", "openai"], ["ViT-B-16", "openai"]]
OPENAI_MEAN, OPENAI_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


@pytest.fixture
def converted(fixtures_dir, tmp_path):
    out = tmp_path / "ffhq-like"
    assert main(["convert", str(fixtures_dir / "rosinality-tiny-16.pt"), str(out), "--clip", "ViT-B-32:openai",
                 "--clip", "ViT-B-16:openai", "--face-alignment", "ffhq"]) == 0
    return out


def _no_open_clip(monkeypatch):
    """Fail the test if anything reaches open_clip's model factory (and through it, the network)."""
    import open_clip

    def refuse(*args, **kwargs):
        raise AssertionError(f"open_clip.create_model_and_transforms{args} was called")

    monkeypatch.setattr(open_clip, "create_model_and_transforms", refuse)


def test_convert_writes_a_complete_repo_that_loads_offline(converted, tmp_path, monkeypatch):
    index = json.loads((converted / "model_index.json").read_text())
    assert index["open_clip_guides"] == GUIDES and index["face_alignment"] == "ffhq"
    assert "clip" not in index and not (converted / "clip").exists()  # named, not copied
    card = (converted / "README.md").read_text()
    for words in ("`ViT-B-32` | `openai`", "`ViT-B-16` | `openai`", "named, not stored", "HF_HUB_OFFLINE",
                  "--clip ViT-B-32:openai --clip ViT-B-16:openai --face-alignment ffhq", "parity check", "## Usage",
                  "model.adapt(", "timm/vit_base_patch32_clip_224.openai"):
        assert words in card, words

    _no_open_clip(monkeypatch)  # loading, saving back and generating never touch the guides
    model = RefineStyleModel.from_pretrained(converted)
    assert model.open_clip_guides == [tuple(g) for g in GUIDES] and model.face_alignment == "ffhq"
    assert model.guide_names == ["ViT-B-32/openai", "ViT-B-16/openai"]
    assert model.generate(seeds=[0, 1]).shape == (2, 3, 16, 16)
    model.save_pretrained(tmp_path / "again")
    assert json.loads((tmp_path / "again" / "model_index.json").read_text()) == index


def test_a_named_guide_offline_and_not_cached_is_a_clear_error(converted, monkeypatch):
    import refinestyle.clip as clip_module

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(clip_module, "cached_open_clip_weights", lambda *a, **k: None)  # not in the cache
    _no_open_clip(monkeypatch)  # offline, nothing is attempted: no download that could hang
    model = RefineStyleModel.from_pretrained(converted)
    for use in (lambda: model.clips, lambda: model.clip,
                lambda: model.adapt(target="a pencil sketch of a face", steps=2, batch=2)):
        with pytest.raises(HubError) as err:
            use()
        message = str(err.value)
        for words in (str(converted), "'ViT-B-32'", "'openai'", "HF_HUB_OFFLINE=1", "Run once with a network",
                      "clip/ folder"):
            assert words in message, (words, message)
    with pytest.raises(HubError, match="'ViT-B-16' with pretrained weights 'openai'"):
        model.named_guide("ViT-B-16", "openai")


def test_cached_weights_are_read_from_the_file_offline(tmp_path, monkeypatch):
    """Where open_clip caches a tag's weights (the Hugging Face cache layout), found without the network; loading then
    hands open_clip the file (no download) with the tag's QuickGELU and preprocessing."""
    import open_clip

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--timm--vit_base_patch32_clip_224.openai"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    weights = repo / "snapshots" / commit / "open_clip_pytorch_model.bin"
    weights.write_bytes(b"stand-in")
    assert cached_open_clip_weights("ViT-B-32", "openai", cache_dir=str(tmp_path)) == str(weights)
    assert cached_open_clip_weights("ViT-B-16", "openai", cache_dir=str(tmp_path)) is None

    seen = {}

    def record(name, pretrained=None, **kwargs):
        seen.update(name=name, pretrained=pretrained, **kwargs)
        raise RuntimeError("stop here")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(open_clip, "create_model_and_transforms", record)
    with pytest.raises(HubError, match="stop here"):
        CLIPGuide.from_open_clip("ViT-B-32", "openai", cache_dir=str(tmp_path))
    assert seen["name"] == "ViT-B-32" and seen["pretrained"] == str(weights) and "cache_dir" not in seen
    assert seen["force_quick_gelu"] is True  # OpenAI's CLIPs use QuickGELU; open_clip would only warn
    assert tuple(seen["force_preprocess_cfg"]["mean"]) == OPENAI_MEAN


def test_convert_guide_arguments_are_checked_before_any_work(capsys):
    parser = build_parser()
    for value, message in (("ViT-B-32", "ARCHITECTURE:TAG"), ("ViT-B-32:opnai", "no pretrained weights 'opnai'"),
                           ("ViT-X-99:openai", "no architecture 'ViT-X-99'")):
        with pytest.raises(SystemExit):
            parser.parse_args(["convert", "a.pt", "out", "--clip", value])
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["convert", "a.pt", "out", "--face-alignment", "dlib"])
    with pytest.raises(ValueError, match="named twice"):
        RefineStyleModel(generator=_tiny_generator(), open_clip_guides=[GUIDES[0], GUIDES[0]])


def _tiny_generator():
    from refinestyle import StyleGAN2Generator

    from .conftest import tiny_config

    torch.manual_seed(0)
    return StyleGAN2Generator(**tiny_config(), num_tokens=2)


def test_a_real_architecture_at_random_weights_adapts_end_to_end(converted, monkeypatch):
    """ViT-B-32 at random weights (nothing downloaded) through the named-guide path: its BPE tokenizer, its 224 px
    preprocessing with CLIP's mean and std, and a few steps of `model.adapt` on a tiny generator."""
    t0 = time.perf_counter()
    guide = CLIPGuide.from_open_clip("ViT-B-32", None)
    assert guide.name == "ViT-B-32/random" and guide.image_size == 224
    assert torch.allclose(guide.mean.flatten(), torch.tensor(OPENAI_MEAN)) and torch.allclose(guide.std.flatten(), torch.tensor(OPENAI_STD))
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    x = guide.preprocess(images)
    expected = F.interpolate((images + 1) / 2, size=(224, 224), mode="bilinear", align_corners=False, antialias=True)
    assert x.shape == (2, 3, 224, 224)
    assert torch.allclose(x, (expected - torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1)) / torch.tensor(OPENAI_STD).view(1, 3, 1, 1))
    import open_clip

    assert guide.tokenizer(["a zxqvy sketch"]).shape == (1, 77)  # open_clip's BPE: any word, spelled out
    assert type(guide.tokenizer) is type(open_clip.get_tokenizer("ViT-B-32"))
    assert guide.unknown_words("a zxqvy pencil sketch of a face") == [] and guide.style_words() is None
    text = guide.encode_text(["a photo of a face", "a pencil sketch of a face"])
    assert text.shape == (2, 512) and torch.allclose(text.norm(dim=-1), torch.ones(2), atol=1e-5)

    calls = []

    def stand_in(arch, tag, **kwargs):  # the cached weights of ("ViT-B-32", "openai"), at random values
        calls.append((arch, tag))
        return guide

    monkeypatch.setattr(CLIPGuide, "from_open_clip", staticmethod(stand_in))
    model = RefineStyleModel.from_pretrained(converted)
    model.open_clip_guides = model.open_clip_guides[:1]  # one guide is enough to run the loop
    assert calls == []  # not loaded by from_pretrained
    steps = []
    t1 = time.perf_counter()
    dom = model.adapt("a photo of a face", "a pencil sketch of a face", steps=3, batch=2, augment_views=1,
                      suggest_strength=False, callback=lambda step, total, state: steps.append(step))
    seconds = time.perf_counter() - t1
    assert calls == [("ViT-B-32", "openai")] and model.clip is guide and model.clips == [guide]  # loaded once, kept
    assert len(steps) == 3 and len(dom.history.states) == 3
    assert all(torch.isfinite(torch.tensor(s["loss"])) for s in dom.history.states)
    with torch.no_grad():
        plain, styled = model.generate(seeds=[0, 1]), model.generate(seeds=[0, 1], domain=dom)
    assert (plain - styled).abs().max() > 0  # the tokens moved: gradients flowed through the real CLIP
    print(f"ViT-B-32 at random weights: built in {t1 - t0:.1f} s; 3 adaptation steps at batch 2 in {seconds:.1f} s")


def test_stored_and_named_guides_together(tmp_path, monkeypatch):
    """A repo's own clip/ folder stays `model.clip` (nothing loads); named guides follow it in `model.clips`; a
    malformed entry is an error naming model_index.json."""
    model = RefineStyleModel(generator=_tiny_generator(), clip=CLIPGuide.create_synthfaces(vocabulary="a photo sketch of face".split()),
                             open_clip_guides=[("ViT-B-32", "openai")])
    model.save_pretrained(tmp_path / "m")
    index = json.loads((tmp_path / "m" / "model_index.json").read_text())
    assert index["clip"] == ["refinestyle", "CLIPGuide"] and index["open_clip_guides"] == [["ViT-B-32", "openai"]]
    _no_open_clip(monkeypatch)
    loaded = RefineStyleModel.from_pretrained(tmp_path / "m")
    assert loaded.clip is not None and loaded.clip.name == "RefineStyle-SynthFaces-CLIP"
    assert loaded.guide_names == ["RefineStyle-SynthFaces-CLIP", "ViT-B-32/openai"]
    with pytest.raises(HubError, match="ViT-B-32"):  # the named one loads only with the others
        loaded.clips
    index["open_clip_guides"] = [["ViT-B-32"]]
    (tmp_path / "m" / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(HubError, match="model_index.json: a named CLIP guide is"):
        RefineStyleModel.from_pretrained(tmp_path / "m")


def test_a_real_guide_set_by_hand_is_saved_by_name(tmp_path, monkeypatch):
    """README's `model.extra_clips.append(CLIPGuide.from_open_clip("ViT-B-16", "openai"))`, then `save_pretrained`:
    the real guide is written as a name (its weights stay where open_clip keeps them) and counts once."""
    model = RefineStyleModel(generator=_tiny_generator(), open_clip_guides=[("ViT-B-32", "openai")])
    real = CLIPGuide.create_synthfaces(vocabulary=["a"])  # stands in for a loaded real guide: only its name matters here
    real.open_clip_name, real.name = ("ViT-B-16", "openai"), "ViT-B-16/openai"
    again = CLIPGuide.create_synthfaces(vocabulary=["a"])
    again.open_clip_name, again.name = ("ViT-B-32", "openai"), "ViT-B-32/openai"
    model.extra_clips += [real, again]
    _no_open_clip(monkeypatch)
    assert model.guide_names == ["ViT-B-16/openai", "ViT-B-32/openai"]
    assert model.clips == [real, again] and model.named_guide("ViT-B-32", "openai") is again
    model.save_pretrained(tmp_path / "m")
    index = json.loads((tmp_path / "m" / "model_index.json").read_text())
    assert index["open_clip_guides"] == [["ViT-B-16", "openai"], ["ViT-B-32", "openai"]]
    assert "extra_clips" not in index and "clip" not in index and not list((tmp_path / "m").glob("clip*"))
    assert RefineStyleModel.from_pretrained(tmp_path / "m").guide_names == ["ViT-B-16/openai", "ViT-B-32/openai"]


def test_the_app_serves_a_converted_repo_offline_and_says_why_adaptation_cannot_run(converted, monkeypatch):
    """The app builds without loading the named guides; adapting offline without them is one clear sentence."""
    from gradio_client import Client

    from refinestyle import clip as clip_module

    from .conftest import load_app_module

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(clip_module, "cached_open_clip_weights", lambda *a, **k: None)
    _no_open_clip(monkeypatch)
    app_module = load_app_module()
    demo = app_module.build_demo(RefineStyleModel.from_pretrained(converted), invert_steps=5)
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=None, quiet=True)
    try:
        client = Client(demo.local_url, verbose=False)
        with pytest.raises(Exception, match=r"ViT-B-32.*openai.*HF_HUB_OFFLINE"):
            client.predict("a photo of a face", "a pencil sketch of a face", None, 5, 0, 0, "", api_name="/adapt")
        assert client.predict("0-1", 0.7, "", 1.0, api_name="/generate")  # the rest of the app serves on
    finally:
        demo.close()
