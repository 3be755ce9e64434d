"""The CLIP interface (our open_clip model, tokenizer, save/load) and the evaluation metrics."""

import json

import pytest
import torch

from refinestyle import HubError
from refinestyle.clip import CLIPGuide, WordTokenizer, register_configs
from refinestyle.evaluation import psnr, ssim


def test_tokenizer_layout():
    tok = WordTokenizer(["a", "face", "sketch"], context_length=6)
    ids = tok(["A sketch of a FACE!", "x " * 20])
    assert ids.shape == (2, 6)
    # start, a, sketch, <unk> for "of", a, ... then end-of-text as the highest id (open_clip pools there)
    assert (tok.sot, tok.eot) == (5, 6)
    assert ids[0].tolist() == [5, 2, 4, 1, 2, 6]  # "face" is cut: 4 words fit between start and end
    assert ids[0].argmax() == (ids[0] == tok.eot).nonzero()[0, 0]
    assert ids[1, -1] == tok.eot and tok.vocab_size == tok.eot + 1


def test_clip_round_trip_and_normalised(tmp_path):
    torch.manual_seed(0)
    clip = CLIPGuide.create_synthfaces(vocabulary="a photo sketch of face".split())
    images = torch.rand(3, 3, 48, 48) * 2 - 1  # resized to 64 inside
    img = clip.encode_image(images)
    txt = clip.encode_text(["a photo of a face", "a sketch of a face"])
    assert torch.allclose(img.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(txt.norm(dim=-1), torch.ones(2), atol=1e-5)
    clip.save_pretrained(tmp_path / "clip")
    again = CLIPGuide.from_pretrained(tmp_path / "clip")
    assert torch.allclose(again.encode_image(images), img, atol=1e-6)
    assert torch.allclose(again.encode_text(["a photo of a face", "a sketch of a face"]), txt, atol=1e-6)
    cfg = json.loads((tmp_path / "clip" / "open_clip_config.json").read_text())
    assert {(f.stat().st_mode & 0o777) for f in (tmp_path / "clip").iterdir()} == {(tmp_path / "clip" / "vocab.json").stat().st_mode & 0o777}
    assert cfg["model_cfg"]["text_cfg"]["vocab_size"] == again.tokenizer.vocab_size
    import open_clip

    register_configs()
    assert "RefineStyle-SynthFaces-CLIP" in open_clip.list_models()


def test_vit_clip_saves_its_own_architecture(tmp_path):
    """A CLIP saves the config it was built from: the ViT folder reloads as a ViT, not as the default ResNet."""
    torch.manual_seed(0)
    vit = CLIPGuide.create_synthfaces(vocabulary="a photo sketch of face".split(), arch="vit")
    assert type(vit.model.visual).__name__ == "VisionTransformer"
    vit.save_pretrained(tmp_path / "vit")
    again = CLIPGuide.from_pretrained(tmp_path / "vit")
    assert type(again.model.visual).__name__ == "VisionTransformer" and again.name == "RefineStyle-SynthFaces-CLIP-ViT"
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    assert torch.allclose(again.encode_image(images), vit.encode_image(images), atol=1e-6)
    assert type(CLIPGuide.create_synthfaces(vocabulary=["a"]).model.visual).__name__ == "ModifiedResNet"
    with pytest.raises(ValueError, match="arch must be one of"):
        CLIPGuide.create_synthfaces(vocabulary=["a"], arch="convnext")


def test_clip_bad_inputs(tmp_path):
    clip = CLIPGuide.create_synthfaces(vocabulary=["a"])
    with pytest.raises(TypeError, match="list of strings"):
        clip.encode_text("a face")
    with pytest.raises(ValueError, match="prompt is empty"):
        clip.encode_text(["  "])
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        clip.encode_image(torch.zeros(3, 8, 8))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "open_clip_config.json").write_text("{}")
    (tmp_path / "bad" / "vocab.json").write_text("{}")
    with pytest.raises(HubError, match="not a refinestyle CLIP folder"):
        CLIPGuide.from_pretrained(tmp_path / "bad")
    with pytest.raises(HubError, match="could not load open_clip"):
        CLIPGuide.from_open_clip("ViT-B-32", "openai")  # offline: no download


def test_psnr_and_ssim_closed_form():
    a = torch.zeros(2, 3, 16, 16)
    b = a + 0.2  # MSE 0.04 on a range of 2 → 10·log10(4 / 0.04) = 20 dB
    assert torch.allclose(psnr(a, b), torch.full((2,), 20.0), atol=1e-4)
    mask = torch.zeros(2, 1, 16, 16)
    mask[:, :, :4, :4] = 1
    c = a.clone()
    c[:, :, :4, :4] = 0.02  # inside the mask: MSE 4e-4 → 40 dB
    assert torch.allclose(psnr(a, c, mask), torch.full((2,), 40.0), atol=1e-3)
    assert torch.allclose(ssim(a + 0.3, a + 0.3), torch.ones(2))
    assert (ssim(a, torch.rand(2, 3, 16, 16) * 2 - 1) < 0.2).all()


def test_eye_colour_confusion_counts_what_the_classifier_reads():
    """``evaluate_generator``'s confusion: rows are the faces' true eye colours, columns what the classifier reads;
    its diagonal is the agreement rate and its rows the label counts (checked against a second count here)."""
    from refinestyle import StyleGAN2Generator
    from refinestyle.data.synthfaces import EYE_COLORS, z_to_params
    from refinestyle.evaluation import attribute_labels, evaluate_generator

    class BrightnessReader:  # reads "eye colour" from mean brightness: any fixed rule will do for counting
        def predict(self, images):
            level = images.mean((1, 2, 3))
            eye = torch.bucketize(level, torch.tensor([-0.05, 0.05]))  # [N] in {0, 1, 2}
            zeros = torch.zeros_like(eye)
            return {"glasses": zeros, "smile": zeros, "eye_color": eye, "style": zeros}

    torch.manual_seed(0)
    G = StyleGAN2Generator(z_dim=24, w_dim=16, resolution=16, channels=[16, 16, 8], mapping_layers=2)
    reader = BrightnessReader()
    m = evaluate_generator(G, reader, n=60, seed=5, batch=20)
    z = torch.randn(60, 24, generator=torch.Generator().manual_seed(5))
    truth = attribute_labels(z_to_params(z))["eye_color"]
    with torch.no_grad():
        read = reader.predict(G.synthesis(G.mapping(z), noise_mode="const").clamp(-1, 1))["eye_color"]
    expected = [[int(((truth == t) & (read == r)).sum()) for r in range(len(EYE_COLORS))] for t in range(len(EYE_COLORS))]
    assert m.eye_color_confusion == expected
    assert sum(m.eye_color_confusion[i][i] for i in range(len(EYE_COLORS))) / 60 == pytest.approx(m.agree_eye_color)
    assert [sum(row) for row in m.eye_color_confusion] == [int((truth == t).sum()) for t in range(len(EYE_COLORS))]


def test_attribute_classifier_files_load_strictly(tmp_path):
    """A saved classifier round-trips (fp16 storage loads into fp32 weights); a file missing a weight or with an
    extra one is refused with the key named, and a missing file says how to make one."""
    from safetensors.torch import save_file

    from refinestyle.evaluation import AttributeClassifier, load_attribute_classifier

    torch.manual_seed(0)
    model = AttributeClassifier(32).eval()
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, str(tmp_path / "half.safetensors"))
    loaded = load_attribute_classifier(tmp_path / "half.safetensors", resolution=32)
    assert loaded.heads["smile"].weight.dtype == torch.float32
    assert torch.equal(loaded.heads["smile"].weight, state["heads.smile.weight"].half().float())
    save_file({k: v for k, v in state.items() if k != "heads.style.bias"} | {"heads.hat.weight": torch.zeros(1)},
              str(tmp_path / "bad.safetensors"))
    with pytest.raises(HubError, match=r"missing keys \['heads.style.bias'\]; unexpected keys \['heads.hat.weight'\]"):
        load_attribute_classifier(tmp_path / "bad.safetensors", resolution=32)
    with pytest.raises(FileNotFoundError, match="cached_attribute_classifier"):
        load_attribute_classifier(tmp_path / "none.safetensors")


def test_unknown_prompt_words_are_named_with_the_style_words_the_guide_knows():
    import warnings

    import torch

    from refinestyle import RefineStyleModel, StyleGAN2Generator

    clip = CLIPGuide.create_synthfaces(vocabulary="a photo pencil sketch of face zombie".split())
    assert clip.unknown_words("a charcoal drawing of a face") == ["charcoal", "drawing"]
    assert clip.unknown_words("A Pencil SKETCH of a face") == []
    assert clip.style_words() == ["pencil", "photo", "sketch", "zombie"]
    torch.manual_seed(0)
    model = RefineStyleModel(generator=StyleGAN2Generator(z_dim=8, w_dim=16, resolution=16, channels=[16, 16, 8],
                                                          mapping_layers=2, num_tokens=2), clip=clip)
    with pytest.raises(ValueError, match=r"does not know the words \['charcoal', 'drawing'\].*styles: pencil, photo, "
                                         r"sketch, zombie.*allow_unknown_words=True"):
        model.adapt("a photo of a face", "a charcoal drawing of a face", steps=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.adapt("a photo of a face", "a charcoal drawing of a face", steps=2, batch=2, warmup_steps=0,
                    suggest_strength=False, allow_unknown_words=True)
    assert any("charcoal" in str(w.message) for w in caught)
