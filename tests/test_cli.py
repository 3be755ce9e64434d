"""The refinestyle CLI: convert then generate, and clear errors for bad input."""

import json

import pytest
from PIL import Image

from refinestyle.cli import main
from refinestyle.images import parse_seeds


def test_convert_then_generate(fixtures_dir, tmp_path, capsys):
    out = tmp_path / "model"
    assert main(["convert", str(fixtures_dir / "nvlabs-tiny-32.state_dict.pt"), str(out)]) == 0
    index = json.loads((out / "model_index.json").read_text())
    assert index["generator"][1] == "StyleGAN2Generator"
    # No flags: no guide named (the key is absent) and no face alignment, which the card says how to ask for.
    assert "open_clip_guides" not in index and index["face_alignment"] == "none"
    card = (out / "README.md").read_text()
    assert "parity check" in card and "resolution 32" in card
    assert "--face-alignment ffhq" in card and "--clip ViT-B-32:openai --clip ViT-B-16:openai" in card
    assert main(["generate", "--model", str(out), "--seeds", "0-5", "--truncation", "0.7", "--columns", "3",
                 "--out", str(tmp_path / "grid.png"), "--quiet"]) == 0
    assert Image.open(tmp_path / "grid.png").size == (3 * 32, 2 * 32)
    # The same grid straight from the checkpoint file.
    assert main(["generate", "--model", str(fixtures_dir / "rosinality-tiny-32.pt"), "--seeds", "0-5", "--truncation", "0.7",
                 "--columns", "3", "--out", str(tmp_path / "grid2.png"), "--quiet"]) == 0
    assert Image.open(tmp_path / "grid.png").tobytes() == Image.open(tmp_path / "grid2.png").tobytes()


def test_cli_errors(tmp_path, capsys):
    (tmp_path / "bad.pt").write_text("not a checkpoint")
    assert main(["convert", str(tmp_path / "bad.pt"), str(tmp_path / "o")]) == 2
    assert "is a text file, not a StyleGAN2 checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["generate", "--model", "x", "--seeds", "7-3"])
    assert "seeds must look like" in capsys.readouterr().err
    assert parse_seeds("0-3,9") == [0, 1, 2, 3, 9]


def test_adapt_command_writes_a_domain_with_card_and_metrics(tmp_path, capsys):
    import torch

    from refinestyle import RefineStyleModel, StyleGAN2Generator
    from refinestyle.cards import domain_metrics
    from refinestyle.clip import CLIPGuide

    torch.manual_seed(0)
    G = StyleGAN2Generator(z_dim=8, w_dim=16, resolution=16, channels=[16, 16, 8], mapping_layers=2, num_tokens=4)
    RefineStyleModel(generator=G, clip=CLIPGuide.create_synthfaces(vocabulary="a photo sketch of face".split())).save_pretrained(tmp_path / "m")
    out = tmp_path / "dom"
    assert main(["adapt", "--model", str(tmp_path / "m"), "--target", "a sketch of a face", "--steps", "4", "--batch", "2",
                 "--out", str(out), "--quiet"]) == 0
    assert (out / "preview.png").exists() and "a sketch of a face" in (out / "README.md").read_text()
    # No --lr: the automatic rate for 4 steps (0.75 / 4 capped at 0.01), said so on the card.
    assert "peak learning rate 0.01 (cosine, automatic for these steps)" in (out / "README.md").read_text()
    # The card's usage snippet runs as written (our own generated card, in a test).
    snippet = (out / "README.md").read_text().split("```python\n")[1].split("```")[0]
    scope = {}
    exec(snippet, scope)
    assert scope["images"].shape == (8, 3, 16, 16) and "dom" in scope["model"].domains
    recorded = json.loads((out / "metrics.json").read_text())
    model = RefineStyleModel.from_pretrained(tmp_path / "m")
    dom = model.load_domain(out, name="s")
    # With no token flags the command makes the shipped recipe: K = 1 per convolution, 3 per toRGB layer.
    assert {(name.endswith(".torgb"), k) for name, k in dom.tokens_per_layer().items()} == {(False, 1), (True, 3)}
    again = domain_metrics(model, dom, target="a sketch of a face")
    assert abs(again["clip_target_similarity_after"] - recorded["clip_target_similarity_after"]) < 1e-5
    # The suggested strength is in the file and on the card; `generate --strength suggested` applies it.
    suggested = dom.config.suggested_strength
    assert suggested is not None and f"suggested strength: {suggested:g}" in (out / "README.md").read_text()
    assert main(["generate", "--model", str(tmp_path / "m"), "--domain", str(out), "--seeds", "0-1", "--strength", "suggested",
                 "--out", str(tmp_path / "s.png"), "--quiet"]) == 0
    assert main(["generate", "--model", str(tmp_path / "m"), "--domain", str(out), "--seeds", "0-1", "--strength", str(suggested),
                 "--out", str(tmp_path / "n.png"), "--quiet"]) == 0
    assert (tmp_path / "s.png").read_bytes() == (tmp_path / "n.png").read_bytes()
    with pytest.raises(SystemExit):
        main(["generate", "--model", str(tmp_path / "m"), "--strength", "strong", "--out", str(tmp_path / "x.png")])
    assert "not a number or 'suggested'" in capsys.readouterr().err
    assert main(["adapt", "--model", str(tmp_path / "m"), "--target", "", "--steps", "4", "--out", str(out), "--quiet"]) == 2
    assert "prompt is empty" in capsys.readouterr().err


def test_adapt_store_rank_writes_the_truncated_domain(tmp_path, capsys):
    import torch

    from refinestyle import DomainTokens, RefineStyleModel, StyleGAN2Generator
    from refinestyle.clip import CLIPGuide

    torch.manual_seed(0)
    G = StyleGAN2Generator(z_dim=8, w_dim=16, resolution=16, channels=[16, 16, 8], mapping_layers=2, num_tokens=4)
    RefineStyleModel(generator=G, clip=CLIPGuide.create_synthfaces(vocabulary="a photo sketch of face".split())).save_pretrained(tmp_path / "m")
    common = ["adapt", "--model", str(tmp_path / "m"), "--target", "a sketch of a face", "--steps", "3", "--batch", "2",
              "--num-tokens", "4", "--dtype", "float32", "--quiet"]
    assert main(common + ["--out", str(tmp_path / "k4")]) == 0
    assert main(common + ["--store-rank", "2", "--out", str(tmp_path / "r2")]) == 0
    full, low = DomainTokens.from_pretrained(tmp_path / "k4"), DomainTokens.from_pretrained(tmp_path / "r2")
    assert low.config.num_tokens == 2 and "rank-2" in (tmp_path / "r2" / "README.md").read_text()
    assert low.config.suggested_strength is not None  # measured again on the truncated residual
    expected = full.truncated(2)  # the same seed adapts the same tokens; the file holds their truncation
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(low.state_dict().values(), expected.state_dict().values()))
    assert main(common + ["--store-rank", "0", "--out", str(tmp_path / "bad")]) == 2
    assert "rank must be a positive integer" in capsys.readouterr().err
    # K = 1 with all three toRGB tokens (as the shipped domains), then stored at rank 2: toRGB capped at 2.
    mixed = common[:-5] + ["--num-tokens", "1", "--torgb-tokens", "3", "--dtype", "float32", "--quiet"]
    assert main(mixed + ["--out", str(tmp_path / "t3")]) == 0
    assert main(mixed + ["--store-rank", "2", "--out", str(tmp_path / "t3r2")]) == 0
    t3, t3r2 = DomainTokens.from_pretrained(tmp_path / "t3"), DomainTokens.from_pretrained(tmp_path / "t3r2")
    assert set(t3.tokens_per_layer().values()) == {1, 3} and set(t3r2.tokens_per_layer().values()) == {1, 2}
    assert "tokens per layer: 1 (toRGB layers: 3)" in (tmp_path / "t3" / "README.md").read_text()
    assert main(mixed + ["--torgb-tokens", "0", "--out", str(tmp_path / "bad")]) == 2  # the last value counts
    assert "torgb_tokens must be an integer" in capsys.readouterr().err


def test_generate_domain_by_name_folder_or_unknown(tmp_path, capsys):
    """`--domain` reads a domain as the library does: a name the model ships, or a domain folder."""
    import torch

    from refinestyle import DomainTokens, RefineStyleModel, StyleGAN2Generator

    torch.manual_seed(0)
    G = StyleGAN2Generator(z_dim=8, w_dim=16, resolution=16, channels=[16, 16, 8], mapping_layers=2, num_tokens=4)
    dom = DomainTokens.from_generator(G, num_tokens=2, seed=0)
    with torch.no_grad():
        for p in dom.p.values():
            p.normal_(generator=torch.Generator().manual_seed(1))
    RefineStyleModel(generator=G, domains={"zombie": dom}).save_pretrained(tmp_path / "m")
    common = ["generate", "--model", str(tmp_path / "m"), "--seeds", "0-3", "--quiet"]
    assert main(common + ["--domain", "zombie", "--out", str(tmp_path / "name.png")]) == 0
    assert main(common + ["--domain", str(tmp_path / "m" / "domains" / "zombie"), "--out", str(tmp_path / "folder.png")]) == 0
    assert main(common + ["--out", str(tmp_path / "plain.png")]) == 0
    assert (tmp_path / "name.png").read_bytes() == (tmp_path / "folder.png").read_bytes()
    assert (tmp_path / "name.png").read_bytes() != (tmp_path / "plain.png").read_bytes()
    capsys.readouterr()
    assert main(common + ["--domain", "sketch", "--out", str(tmp_path / "x.png")]) == 2
    assert "unknown domain 'sketch'; loaded domains: ['zombie']" in capsys.readouterr().err


def test_imports_load_only_what_they_use():
    """`import refinestyle` (the whole public API too) leaves the app's and the CLIP's libraries alone, and the
    command line parses arguments before torch loads (so `--help` answers at once)."""
    import subprocess
    import sys

    def loaded(code: str, names: tuple[str, ...]) -> list[str]:
        probe = f"import json, sys; {code}; print(json.dumps(sorted(m for m in {names!r} if m in sys.modules)))"
        return json.loads(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout)

    optional = ("gradio", "open_clip", "matplotlib", "lpips", "skimage")
    assert loaded("import refinestyle", optional) == []
    assert loaded("import refinestyle; from refinestyle import *; refinestyle.RefineStyleModel", optional) == []
    assert loaded("import refinestyle.cli", ("torch", "diffusers")) == []
    help_text = subprocess.run([sys.executable, "-m", "refinestyle.cli", "--help"], capture_output=True, text=True, check=True)
    assert "convert" in help_text.stdout and "generate" in help_text.stdout


def test_bad_arguments_are_answered_before_any_work(tmp_path, capsys):
    from refinestyle.cli import build_parser

    parser = build_parser()
    for argv, message in ((["generate", "--model", "m", "--truncation", "5"], "truncation must be from 0"),
                          (["generate", "--model", "m", "--out", str(tmp_path / "missing" / "grid.png")], "does not exist"),
                          (["generate", "--model", "m", "--seeds", "99999999999999999999"], "at most 4,294,967,295")):
        with pytest.raises(SystemExit):
            parser.parse_args(argv)
        assert message in capsys.readouterr().err


def test_a_hostile_checkpoint_is_one_line_of_error(tmp_path, capsys):
    import pickle

    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"G_ema": __import__("collections").Counter()}, protocol=2))
    assert main(["convert", str(tmp_path / "evil.pkl"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "collections.Counter" in err
    assert not (tmp_path / "out").exists()


def test_invert_writes_reconstruction_edit_and_paste_back(tmp_path, capsys):
    pytest.importorskip("dlib", reason="pip install 'refinestyle[faces]'")
    import torch
    from skimage import data

    from refinestyle import DomainTokens, RefineStyleModel, StyleGAN2Generator
    from refinestyle.inversion import DomainCheck

    torch.manual_seed(0)
    G = StyleGAN2Generator(z_dim=8, w_dim=16, resolution=32, channels=[16, 16, 8, 8], mapping_layers=2, num_tokens=2)
    model = RefineStyleModel(generator=G, domains={"toon": DomainTokens.from_generator(G, num_tokens=2, seed=1)})
    model.face_alignment = "ffhq"
    model.domain_check = DomainCheck(score="w_psnr", threshold=40.0, method="optimize")
    model.save_pretrained(tmp_path / "face-model")
    Image.fromarray(data.astronaut()).save(tmp_path / "astronaut.png")
    assert main(["invert", str(tmp_path / "astronaut.png"), "--model", str(tmp_path / "face-model"), "--steps", "6",
                 "--domain", "toon", "--out", str(tmp_path / "out"), "--quiet"]) == 0
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["astronaut-edited.png", "astronaut-input.png", "astronaut-inversion.safetensors",
                     "astronaut-pasted.png", "astronaut-reconstruction.png"]
    assert Image.open(tmp_path / "out" / "astronaut-pasted.png").size == (512, 512)
    assert Image.open(tmp_path / "out" / "astronaut-input.png").size == (32, 32)
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| astronaut.png"))
    assert row.endswith("| no (" + row.split("| no (")[1]) and "vs 40.0" in row  # out of domain, with its score
    # the folder's parent must exist; a face-less photo is one line of error
    Image.fromarray(data.chelsea()).save(tmp_path / "cat.png")
    assert main(["invert", str(tmp_path / "cat.png"), "--model", str(tmp_path / "face-model"), "--steps", "2",
                 "--out", str(tmp_path / "out2"), "--quiet"]) == 2
    assert "no face was found" in capsys.readouterr().err
