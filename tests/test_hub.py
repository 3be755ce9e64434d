"""Hub I/O: save/load round trips, strictness, domains, model_index, and repo ids resolved offline from a cache."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file, save_file

from refinestyle import DomainTokens, HubError, RefineStyleModel, StyleGAN2Generator, load_stylegan2

from .conftest import REPO, tiny_config


@pytest.fixture(scope="module")
def G16(fixtures_dir):
    return load_stylegan2(fixtures_dir / "rosinality-tiny-16.pt")


def test_generator_round_trip_exact_and_fp16(G16, tmp_path):
    G16.save_pretrained(tmp_path / "fp32")
    again = StyleGAN2Generator.from_pretrained(tmp_path / "fp32")
    a, b = G16.state_dict(), again.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((tmp_path / "fp32" / "config.json").read_text())["_class_name"] == "StyleGAN2Generator"
    # Readable by whoever can read the config (safetensors alone writes owner-only files).
    modes = {f.name: f.stat().st_mode & 0o777 for f in (tmp_path / "fp32").iterdir()}
    assert modes["diffusion_pytorch_model.safetensors"] == modes["config.json"], modes
    G16.save_pretrained(tmp_path / "fp16", dtype=torch.float16)
    half = StyleGAN2Generator.from_pretrained(tmp_path / "fp16")
    assert next(half.parameters()).dtype == torch.float32
    stored = load_file(str(tmp_path / "fp16" / "diffusion_pytorch_model.safetensors"))
    assert all(v.dtype == torch.float16 for v in stored.values())
    z = torch.randn(2, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (half(z) - G16(z)).abs().max() < 0.05


def test_variants_follow_diffusers(tmp_path):
    """save_pretrained(variant="fp16") writes diffusion_pytorch_model.fp16.safetensors beside the default weights;
    from_pretrained(variant=..., torch_dtype=...) reads it, strictly, for every component."""
    torch.manual_seed(0)
    G = StyleGAN2Generator(**tiny_config(16)).eval()
    G.save_pretrained(tmp_path / "g")
    G.save_pretrained(tmp_path / "g", variant="fp16")
    assert sorted(f.name for f in (tmp_path / "g").iterdir()) == [
        "config.json", "diffusion_pytorch_model.fp16.safetensors", "diffusion_pytorch_model.safetensors"]
    stored = load_file(str(tmp_path / "g" / "diffusion_pytorch_model.fp16.safetensors"))
    assert {v.dtype for v in stored.values()} == {torch.float16}  # the variant's name sets the storage dtype
    half = StyleGAN2Generator.from_pretrained(tmp_path / "g", variant="fp16", torch_dtype=torch.float16)
    assert {p.dtype for p in half.parameters()} == {torch.float16}
    assert all(torch.equal(half.state_dict()[k], v.half()) for k, v in G.state_dict().items())
    full = StyleGAN2Generator.from_pretrained(tmp_path / "g", variant="fp16")  # default torch_dtype: float32
    assert {p.dtype for p in full.parameters()} == {torch.float32}
    exact = StyleGAN2Generator.from_pretrained(tmp_path / "g", use_safetensors=True, device="cpu")
    assert all(torch.equal(a, b) for a, b in zip(exact.state_dict().values(), G.state_dict().values()))
    # Missing or malformed variants, pickles and contradictions are refused with the reason.
    with pytest.raises(HubError, match=r"no 'bf16' variant \(diffusion_pytorch_model.bf16.safetensors\); it has 'fp16', "
                                       r"the default \(no variant=\)"):
        StyleGAN2Generator.from_pretrained(tmp_path / "g", variant="bf16")
    with pytest.raises(ValueError, match="variant must be"):
        StyleGAN2Generator.from_pretrained(tmp_path / "g", variant="../fp16")
    with pytest.raises(HubError, match="use_safetensors=False asks for pickled weights"):
        StyleGAN2Generator.from_pretrained(tmp_path / "g", use_safetensors=False)
    with pytest.raises(ValueError, match="variant 'fp16' names torch.float16 weights, but dtype=torch.float32"):
        G.save_pretrained(tmp_path / "x", variant="fp16", dtype=torch.float32)
    # The strict key check holds for variants too.
    stored["synthesis.b8.conv0.extra"] = stored.pop("synthesis.b8.conv0.bias")
    save_file(stored, str(tmp_path / "g" / "diffusion_pytorch_model.fp16.safetensors"))
    with pytest.raises(HubError, match=r"fp16.safetensors do not fit .*missing keys \['synthesis.b8.conv0.bias'\]"):
        StyleGAN2Generator.from_pretrained(tmp_path / "g", variant="fp16")

    # A whole model: every component (generator, domain, CLIP) in the variant, in a subfolder layout.
    from refinestyle.clip import CLIPGuide

    dom = DomainTokens.from_generator(G, num_tokens=2, seed=0)
    with torch.no_grad():
        for p in dom.p.values():
            p.normal_(generator=torch.Generator().manual_seed(2))
    clip = CLIPGuide.create_synthfaces(vocabulary="a photo sketch of face".split())
    RefineStyleModel(generator=G, domains={"sketch": dom}, clip=clip).save_pretrained(tmp_path / "m", variant="bf16")
    for folder in ("generator", "domains/sketch"):
        assert (tmp_path / "m" / folder / "diffusion_pytorch_model.bf16.safetensors").exists()
        assert not (tmp_path / "m" / folder / "diffusion_pytorch_model.safetensors").exists()
    assert (tmp_path / "m" / "clip" / "open_clip_model.bf16.safetensors").exists()
    model = RefineStyleModel.from_pretrained(tmp_path / "m", variant="bf16", torch_dtype=torch.bfloat16)
    assert model.generator.mapping_network_weight.dtype == torch.bfloat16
    assert model.domains["sketch"].p["b8_conv1"].dtype == torch.bfloat16  # domains run with the generator
    assert next(model.clip.model.parameters()).dtype == torch.float32  # the CLIP stays float32
    z = torch.randn(2, 32, generator=torch.Generator().manual_seed(0))
    ref = RefineStyleModel(generator=G, domains={"sketch": dom}).generate(z=z, domain="sketch")
    got = model.generate(z=z.bfloat16(), domain="sketch")
    assert got.dtype == torch.bfloat16 and (got.float() - ref).abs().max() < 0.25
    assert StyleGAN2Generator.from_pretrained(tmp_path / "m", subfolder="generator", variant="bf16").config.resolution == 16
    with pytest.raises(HubError, match="generator has no 'fp16' variant"):
        RefineStyleModel.from_pretrained(tmp_path / "m", variant="fp16")
    with pytest.raises(HubError, match="missing weights diffusion_pytorch_model.safetensors"):
        RefineStyleModel.from_pretrained(tmp_path / "m")


def test_strict_loading_names_keys(G16, tmp_path):
    G16.save_pretrained(tmp_path / "g")
    weights = tmp_path / "g" / "diffusion_pytorch_model.safetensors"
    state = load_file(str(weights))
    state.pop("synthesis.b8.conv0.bias")
    state["synthesis.b8.conv0.extra"] = torch.zeros(1)
    save_file(state, str(weights))
    with pytest.raises(HubError, match=r"missing keys \['synthesis.b8.conv0.bias'\]; unexpected keys \['synthesis.b8.conv0.extra'\]"):
        StyleGAN2Generator.from_pretrained(tmp_path / "g")
    cfg = json.loads((tmp_path / "g" / "config.json").read_text())
    cfg["fancy_option"] = 3
    (tmp_path / "g" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(HubError, match=r"config keys \['fancy_option'\]"):
        StyleGAN2Generator.from_pretrained(tmp_path / "g")
    (tmp_path / "g" / "config.json").write_text("{not json")
    with pytest.raises(HubError, match="not valid JSON"):
        StyleGAN2Generator.from_pretrained(tmp_path / "g")
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "config.json").write_text(json.dumps(tiny_config(16)))
    torch.save(G16.state_dict(), tmp_path / "p" / "diffusion_pytorch_model.bin")
    with pytest.raises(HubError, match="pickled weights are never loaded"):
        StyleGAN2Generator.from_pretrained(tmp_path / "p")


def test_model_with_domains_round_trip(G16, tmp_path):
    model = RefineStyleModel(generator=G16)
    dom = DomainTokens.from_generator(G16, num_tokens=4, seed=1, target="a sketch")
    with torch.no_grad():
        for p in dom.p.values():
            p.normal_(generator=torch.Generator().manual_seed(2))
    model.add_domain(dom, name="sketch")
    model.save_pretrained(tmp_path / "m")
    index = json.loads((tmp_path / "m" / "model_index.json").read_text())
    assert index["domains"] == ["sketch"] and index["generator"] == ["refinestyle", "StyleGAN2Generator"]
    again = RefineStyleModel.from_pretrained(tmp_path / "m")
    assert again.domains["sketch"].config.target == "a sketch"
    z = torch.randn(3, 32, generator=torch.Generator().manual_seed(0))
    a = model.generate(z=z, domain="sketch", strength=0.8)
    b = again.generate(z=z, domain={"sketch": 0.8})
    assert torch.equal(a, b)
    assert (a - again.generate(z=z)).abs().max() > 1e-2
    assert torch.equal(again.generate(z=z, domain="sketch", strength=0.0), again.generate(z=z))
    with pytest.raises(KeyError, match="unknown domain 'zombie'.*sketch"):
        again.generate(z=z, domain="zombie")
    with pytest.raises(ValueError, match="exactly one of z, ws or seeds"):
        again.generate(z=z, seeds=[1])


def test_a_domain_reads_the_same_as_a_name_a_folder_a_path_or_tokens(G16, tmp_path):
    """One resolution everywhere: generate, load_domain and resolve_domain read a domain reference alike."""
    dom = DomainTokens.from_generator(G16, num_tokens=2, seed=0)
    with torch.no_grad():
        for p in dom.p.values():
            p.normal_(generator=torch.Generator().manual_seed(2))
    RefineStyleModel(generator=G16, domains={"sketch": dom}).save_pretrained(tmp_path / "m")
    model = RefineStyleModel.from_pretrained(tmp_path / "m")
    folder = tmp_path / "m" / "domains" / "sketch"
    z = torch.randn(2, 32, generator=torch.Generator().manual_seed(0))
    by_name = model.generate(z=z, domain="sketch", strength=0.5)
    for ref in (str(folder), folder, model.domains["sketch"], {str(folder): 0.5}):
        strength = 1.0 if isinstance(ref, dict) else 0.5
        assert torch.equal(model.generate(z=z, domain=ref, strength=strength), by_name), ref
    assert model.resolve_domain("sketch") is model.domains["sketch"]
    assert sorted(model.domains) == ["sketch"]  # folders resolve without registering
    bare = RefineStyleModel(generator=G16)
    assert torch.equal(bare.load_domain(folder).token_set().layers["b8.conv1"].p, dom.p["b8_conv1"])
    assert sorted(bare.domains) == ["sketch"]  # named after its folder
    bare.load_domain("sketch", name="again")  # a loaded name registers under another
    assert bare.domains["again"] is bare.domains["sketch"]
    # A caller's own domains (the app's per-user ones) come first; load=False never touches files.
    mine = DomainTokens.from_generator(G16, num_tokens=1, seed=3)
    assert model.resolve_domain("sketch", session={"sketch": mine}) is mine
    with pytest.raises(KeyError, match=r"unknown domain .*loaded domains: \['sketch'\]") as refused:
        model.resolve_domain(str(folder), load=False)
    assert "folder" not in str(refused.value).split("loaded domains")[1]  # a server's users are not told to give one
    with pytest.raises(KeyError, match="or give a domain folder or a Hub repo id"):
        model.resolve_domain("zombie")
    with pytest.raises(TypeError, match="a domain is a name"):
        model.resolve_domain(3)


def test_two_domains_and_extra_clips_round_trip(G16, tmp_path):
    """Lists of folder names in model_index.json (two domains, extra CLIPs) are not mistaken for [library, class]."""
    from refinestyle.clip import CLIPGuide

    torch.manual_seed(0)
    model = RefineStyleModel(generator=G16, clip=CLIPGuide.create_synthfaces(vocabulary="a photo sketch of face".split()))
    model.extra_clips.append(CLIPGuide.create_synthfaces(vocabulary="a photo sketch of face".split(), arch="vit"))
    for name in ("sketch", "zombie"):
        model.add_domain(DomainTokens.from_generator(G16, num_tokens=2, seed=0), name=name)
    model.save_pretrained(tmp_path / "m")
    index = json.loads((tmp_path / "m" / "model_index.json").read_text())
    assert index["domains"] == ["sketch", "zombie"] and index["extra_clips"] == ["clip-extra-1"]
    again = RefineStyleModel.from_pretrained(tmp_path / "m")
    assert sorted(again.domains) == ["sketch", "zombie"] and len(again.extra_clips) == 1
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    assert torch.allclose(again.extra_clips[0].encode_image(images), model.extra_clips[0].encode_image(images), atol=1e-6)
    index["extra_clips"] = ["../clip"]
    (tmp_path / "m" / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="extra_clips folder names must be"):
        RefineStyleModel.from_pretrained(tmp_path / "m")


def test_domain_for_another_generator_is_refused(G16, fixtures_dir, tmp_path):
    G32 = load_stylegan2(fixtures_dir / "rosinality-tiny-32.pt")
    DomainTokens.from_generator(G32, num_tokens=4).save_pretrained(tmp_path / "d32")
    model = RefineStyleModel(generator=G16)
    with pytest.raises(ValueError, match="made for a 32 px generator"):
        model.load_domain(tmp_path / "d32", name="x")
    wide = StyleGAN2Generator(**tiny_config(16, channel_max=16))
    DomainTokens.from_generator(wide, num_tokens=4).save_pretrained(tmp_path / "dw")
    with pytest.raises(ValueError, match="layer shapes differ"):
        model.load_domain(tmp_path / "dw", name="y")
    (tmp_path / "dw" / "diffusion_pytorch_model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(HubError, match="not a readable safetensors"):
        model.load_domain(tmp_path / "dw", name="y")


def test_model_index_never_imports_named_classes(G16, tmp_path):
    RefineStyleModel(generator=G16).save_pretrained(tmp_path / "m")
    index = json.loads((tmp_path / "m" / "model_index.json").read_text())
    index["encoder"] = ["os", "system"]
    (tmp_path / "m" / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(HubError, match="unknown class 'system'"):
        RefineStyleModel.from_pretrained(tmp_path / "m")


def _make_cache(cache, repo_id, folder, commits):
    """Lay ``folder`` out as huggingface_hub stores a downloaded repo: refs/<rev> → snapshots/<commit>/."""
    import shutil

    base = cache / ("models--" + repo_id.replace("/", "--"))
    for rev, commit in commits.items():
        shutil.copytree(folder, base / "snapshots" / commit, dirs_exist_ok=True)
        (base / "refs").mkdir(parents=True, exist_ok=True)
        (base / "refs" / rev).write_text(commit)


def test_repo_id_resolves_offline_from_cache(G16, tmp_path):
    RefineStyleModel(generator=G16).save_pretrained(tmp_path / "m")
    cache = tmp_path / "cache"
    _make_cache(cache, "refinestyle/tiny", tmp_path / "m", {"main": "a" * 40, "v1": "b" * 40})
    script = textwrap.dedent("""
        import sys, torch
        from refinestyle import RefineStyleModel, HubError
        m = RefineStyleModel.from_pretrained("refinestyle/tiny")
        m2 = RefineStyleModel.from_pretrained("refinestyle/tiny", revision="v1")
        print("ok", m.generator.config.resolution, m2.generator.config.resolution)
        try:
            RefineStyleModel.from_pretrained("refinestyle/absent")
        except HubError as err:
            print("ERR", err)
    """)
    env = dict(os.environ, HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "ok 16 16" in out.stdout
    assert "ERR repo 'refinestyle/absent' (revision main) is not in the local Hugging Face cache" in out.stdout
    assert "HF_HUB_OFFLINE=1 forbids downloading" in out.stdout


def test_bad_paths_and_names(G16, tmp_path):
    with pytest.raises(HubError, match="neither an existing folder nor a Hub repo id"):
        RefineStyleModel.from_pretrained(str(tmp_path / "nope" / "deeper" / "x"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(HubError, match="missing model_index.json"):
        RefineStyleModel.from_pretrained(tmp_path / "empty")
    model = RefineStyleModel(generator=G16)
    with pytest.raises(ValueError, match="domain names"):
        model.add_domain(DomainTokens.from_generator(G16), name="../evil")


def test_push_to_hub_uploads_the_saved_folder(G16, monkeypatch):
    import huggingface_hub

    calls = {}

    class FakeApi:
        def __init__(self, token=None):
            calls["token"] = token

        def create_repo(self, repo_id, private=None, exist_ok=False):
            calls["repo"] = repo_id
            return f"https://huggingface.co/{repo_id}"

        def upload_folder(self, repo_id, folder_path, commit_message):
            from pathlib import Path

            calls["files"] = sorted(p.name for p in Path(folder_path).iterdir())

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    dom = DomainTokens.from_generator(G16, num_tokens=2)
    assert dom.push_to_hub("me/sketch", token="t") == "https://huggingface.co/me/sketch"
    assert calls == {"token": "t", "repo": "me/sketch", "files": ["config.json", "diffusion_pytorch_model.safetensors"]}
    with pytest.raises(HubError, match="user/name"):
        dom.push_to_hub("not a repo")


def test_domain_truncation_is_the_best_low_rank_residual(G16, tmp_path):
    dom = DomainTokens.from_generator(G16, num_tokens=6, seed=0)
    with torch.no_grad():
        for p in dom.p.values():
            p.normal_(0, 0.1, generator=torch.Generator().manual_seed(1))
    ws = G16.mapping(torch.randn(3, G16.config.z_dim, generator=torch.Generator().manual_seed(2)))

    def residuals(d):
        return {n: (t.gain / t.p.shape[0] ** 0.5 * t.p.T @ t.q).double() for n, t in d.token_set().layers.items()}

    # Keeping every singular value reproduces the domain (up to float32 rounding).
    same = dom.truncated(6)
    with torch.no_grad():
        assert torch.allclose(G16.synthesis(ws, tokens=same.token_set()), G16.synthesis(ws, tokens=dom.token_set()), atol=1e-5)
    # Rank 2: the error is exactly what Eckart-Young leaves (the dropped singular values), per layer.
    full, low = residuals(dom), residuals(dom.truncated(2))
    for name, delta in full.items():
        sv = torch.linalg.svdvals(delta)
        left = (delta - low[name]).square().sum()
        assert torch.allclose(left, sv[2:].square().sum(), rtol=1e-4, atol=1e-10), name
        assert torch.linalg.matrix_rank(low[name].float(), rtol=1e-4) <= 2
    small = dom.truncated(2)
    assert small.config.num_tokens == 2 and small.num_parameters() < dom.num_parameters() / 2
    small.save_pretrained(tmp_path / "small")
    back = DomainTokens.from_pretrained(tmp_path / "small")
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), small.state_dict().values()))
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="rank must be a positive integer"):
            dom.truncated(bad)


def test_domain_with_its_own_torgb_token_count(G16, tmp_path):
    layers = list(G16.refinable_layers(include_torgb=True))
    assert any(n.endswith(".torgb") for n in layers)
    # One K for all draws exactly what a single init_tokens call draws (per-layer init keeps old domains' seeds).
    uniform = DomainTokens.from_generator(G16, num_tokens=2, layers=layers, seed=3)
    ref = G16.init_tokens(num_tokens=2, layers=layers, generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(uniform.token_set().layers[n].q, ref.layers[n].q) for n in layers)
    mixed = DomainTokens.from_generator(G16, num_tokens=1, torgb_tokens=3, layers=layers, seed=0)
    assert mixed.tokens_per_layer() == {n: 3 if n.endswith(".torgb") else 1 for n in layers}
    assert mixed.config.layer_tokens == {n: 3 for n in layers if n.endswith(".torgb")}
    ws = G16.mapping(torch.randn(2, G16.config.z_dim, generator=torch.Generator().manual_seed(1)))
    with torch.no_grad():
        assert torch.equal(G16.synthesis(ws, tokens=mixed.token_set()), G16.synthesis(ws))  # zero residual: a no-op
        for p in mixed.p.values():
            p.normal_(0, 0.2, generator=torch.Generator().manual_seed(2))
    # Second implementation of the per-layer scale gain/√K: pad every layer to K = 3 with zero tokens and
    # rescale P by √(3/K); the residual ΔW = gain/√K·PᵀQ, and so the image, must not change.
    padded = DomainTokens.from_generator(G16, num_tokens=3, layers=layers, seed=0)
    with torch.no_grad():
        for key in mixed.p:
            k = mixed.p[key].shape[0]
            padded.p[key].zero_()
            padded.q[key].zero_()
            padded.p[key][:k] = mixed.p[key] * (3 / k) ** 0.5
            padded.q[key][:k] = mixed.q[key]
            padded.gain[key].copy_(mixed.gain[key])
        out = G16.synthesis(ws, tokens=mixed.token_set())
        assert (out - G16.synthesis(ws)).abs().max() > 1e-3
        assert torch.allclose(out, G16.synthesis(ws, tokens=padded.token_set()), atol=1e-5)
    mixed.save_pretrained(tmp_path / "mixed")
    back = DomainTokens.from_pretrained(tmp_path / "mixed")
    assert back.tokens_per_layer() == mixed.tokens_per_layer()
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), mixed.state_dict().values()))
    # Truncation caps each layer at the rank and never grows one: rank 2 keeps K = 1 convs, cuts toRGB to 2.
    low = mixed.truncated(2)
    assert low.tokens_per_layer() == {n: 2 if n.endswith(".torgb") else 1 for n in layers}
    assert mixed.truncated(1, torgb_rank=2).tokens_per_layer() == {n: 2 if n.endswith(".torgb") else 1 for n in layers}
    same = mixed.truncated(8)
    assert same.tokens_per_layer() == mixed.tokens_per_layer()
    with torch.no_grad():
        assert torch.allclose(G16.synthesis(ws, tokens=same.token_set()), out, atol=1e-5)
    # A file whose toRGB tokens do not match its config names the tensor.
    weights = tmp_path / "mixed" / "diffusion_pytorch_model.safetensors"
    state = load_file(str(weights))
    torgb_key = next(k for k in state if k.startswith("p.") and k.endswith("_torgb"))
    state[torgb_key] = state[torgb_key][:1]
    save_file(state, str(weights))
    with pytest.raises(HubError, match=torgb_key):
        DomainTokens.from_pretrained(tmp_path / "mixed")
    with pytest.raises(ValueError, match="torgb_tokens must be an integer from 1 to 256"):
        DomainTokens.from_generator(G16, num_tokens=1, torgb_tokens=0, layers=layers)
    with pytest.raises(ValueError, match="layer_tokens names layers"):
        DomainTokens(generator_signature=G16.signature(), layers=layers[:1], num_tokens=1, layer_tokens={layers[1]: 2})


def test_shipped_repo_saves_back_as_it_was(tmp_path):
    """One writer of model_index.json: loading the default repo and saving it reproduces its index (folder names
    included) and every component's config and weights."""
    import json

    from safetensors.torch import load_file

    from .conftest import REPO

    hub = REPO / "hub" / "refinestyle-synthfaces"
    RefineStyleModel.from_pretrained(hub).save_pretrained(tmp_path, dtype=torch.float16)
    assert json.loads((tmp_path / "model_index.json").read_text()) == json.loads((hub / "model_index.json").read_text())
    saved = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    shipped = sorted(p.relative_to(hub).as_posix() for p in hub.rglob("*") if p.is_file() and p.suffix in (".json", ".safetensors")
                     and p.name not in ("metrics.json", "build_info.json"))
    assert saved == shipped
    for name in saved:
        if name.endswith(".safetensors"):
            a, b = load_file(str(hub / name)), load_file(str(tmp_path / name))
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
        else:
            assert json.loads((hub / name).read_text()) == json.loads((tmp_path / name).read_text()), name
