"""StyleGAN2Generator and the refinement math: reference parity, path agreement, exactness, gradients, errors."""

import pytest
import torch

from refinestyle import DomainTokens, LayerTokens, StyleGAN2Generator, TokenSet, load_stylegan2
from refinestyle.models.refinement import modulated_conv2d

from .conftest import tiny_config


@pytest.fixture(scope="module", params=[16, 32])
def loaded(request, fixtures_dir):
    r = request.param
    refs = torch.load(fixtures_dir / f"refs-tiny-{r}.pt", weights_only=True)
    G = load_stylegan2(fixtures_dir / f"nvlabs-tiny-{r}.state_dict.pt")
    return G, refs


@pytest.mark.parametrize("path", ["lowrank", "materialized", "auto"])
def test_matches_reference_outputs(loaded, path):
    G, refs = loaded
    with torch.no_grad():
        assert torch.allclose(G.mapping(refs["z"]), refs["ws_psi1"], atol=1e-5, rtol=0)
        ws07 = G.mapping(refs["z"], truncation_psi=0.7)
        assert torch.allclose(ws07, refs["ws_psi07"], atol=1e-5, rtol=0)
        checks = {
            "img_psi1": G.synthesis(G.mapping(refs["z"]), path=path),
            "img_psi07": G.synthesis(ws07, path=path),
            "img_ws": G.synthesis(refs["ws"], path=path),
            "img_ws_noise_none": G.synthesis(refs["ws"], noise_mode="none", path=path),
        }
    for key, img in checks.items():
        err = (img - refs[key]).abs().max().item()
        assert err < 1e-4, f"{key}: max abs diff {err}"
    # A single image takes the other path under "auto"; it must match too.
    with torch.no_grad():
        one = G.synthesis(refs["ws"][:1])
    assert (one - refs["img_ws"][:1]).abs().max() < 1e-4


def test_truncation_cutoff_and_forward(loaded):
    G, refs = loaded
    with torch.no_grad():
        ws = G.mapping(refs["z"], truncation_psi=0.7, truncation_cutoff=2)
        assert torch.allclose(ws[:, :2], refs["ws_psi07"][:, :2], atol=1e-5)
        assert torch.allclose(ws[:, 2:], refs["ws_psi1"][:, 2:], atol=1e-5)
        assert torch.allclose(G(refs["z"], truncation_psi=0.7), refs["img_psi07"], atol=1e-4)


def test_random_noise_mode_is_seeded(loaded):
    G, refs = loaded
    with torch.no_grad():
        a = G.synthesis(refs["ws"], noise_mode="random", noise_generator=torch.Generator().manual_seed(1))
        b = G.synthesis(refs["ws"], noise_mode="random", noise_generator=torch.Generator().manual_seed(1))
        c = G.synthesis(refs["ws"], noise_mode="random", noise_generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 1e-3
    assert (a - refs["img_ws"]).abs().max() > 1e-3


def _random_tokens(G, *, batch_size=None, num_tokens=4, seed=0, include_torgb=False):
    g = torch.Generator().manual_seed(seed)
    t = G.init_tokens(batch_size=batch_size, num_tokens=num_tokens, generator=g,
                      layers=list(G.refinable_layers(include_torgb=include_torgb)))
    for v in t.layers.values():
        v.p.copy_(torch.randn(v.p.shape, generator=g, dtype=v.p.dtype) * 0.5)
    return t


@pytest.mark.parametrize("batch", [1, 3])
def test_zero_residual_is_bit_exact(batch):
    torch.manual_seed(0)
    G = StyleGAN2Generator(**tiny_config(32, refine_torgb=True)).eval()
    ws = G.mapping(torch.randn(batch, 32))
    per_image = G.init_tokens(batch_size=batch, num_tokens=16)
    shared = G.init_tokens(num_tokens=4)
    assert all(torch.count_nonzero(t.p) == 0 for t in per_image.layers.values())
    with torch.no_grad():
        for path in ("auto", "lowrank", "materialized"):
            plain = G.synthesis(ws, path=path)
            for tokens in (per_image, shared, [per_image, (shared, 0.7)]):
                assert torch.equal(G.synthesis(ws, tokens=tokens, path=path), plain), path
        # A domain at strength 0 is a no-op too.
        dom = DomainTokens.from_generator(G, num_tokens=4)
        with torch.no_grad():
            for v in dom.p.values():
                v.normal_()
        assert torch.equal(G.synthesis(ws, tokens=[(dom.token_set(), 0.0)]), G.synthesis(ws))


def test_z_bins_start_as_a_no_op_and_read_the_bins(tmp_path):
    """One-hot bin inputs of the mapping: zero weights leave the plain mapping bit for bit; each z gets the
    one-hot of the bin it falls in (edges counted as the bin above, as ``floor`` does); trained weights survive
    save / load."""
    torch.manual_seed(0)
    plain = StyleGAN2Generator(**tiny_config(16)).eval()
    bins = [[0, [-0.5, 0.5]], [3, [0.0]]]
    binned = StyleGAN2Generator(**tiny_config(16, z_bins=bins)).eval()
    missing, unexpected = binned.load_state_dict(plain.state_dict(), strict=False)
    assert missing == ["mapping.fc0_bins"] and unexpected == []
    z = torch.randn(64, 32)
    with torch.no_grad():
        assert torch.equal(binned.mapping(z), plain.mapping(z))
    z[:3, 0] = torch.tensor([-0.5, 0.49, 0.5])
    z[:3, 3] = torch.tensor([-1.0, 0.0, 2.0])
    features = binned.mapping.bin_features(z)
    assert features[:3].tolist() == [[0, 1, 0, 1, 0], [0, 1, 0, 0, 1], [0, 0, 1, 0, 1]]
    assert torch.equal(features.sum(1), torch.full([64], 2.0))  # one bin per binned coordinate
    with torch.no_grad():
        binned.mapping.fc0_bins.normal_()
    changed = binned.mapping(z)
    assert not torch.equal(changed, plain.mapping(z))
    binned.save_pretrained(tmp_path / "g")
    loaded = StyleGAN2Generator.from_pretrained(tmp_path / "g")
    assert loaded.config.z_bins == bins and torch.equal(loaded.mapping(z), changed)
    for bad, message in (([[0, [0.5, -0.5]]], "sorted finite"), ([[32, [0.0]]], "out of range"),
                         ([[1, [0.0]], [1, [0.2]]], "repeated"), ([[1, []]], "not \\[z index"), ("0:1", "must be a list")):
        with pytest.raises(ValueError, match=message):
            StyleGAN2Generator(**tiny_config(16, z_bins=bad))


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_two_paths_agree(dtype, tol):
    torch.manual_seed(0)
    G = StyleGAN2Generator(**tiny_config(32, refine_torgb=True)).to(dtype).eval()
    ws = G.mapping(torch.randn(3, 32, dtype=dtype))
    per_image = _random_tokens(G, batch_size=3, num_tokens=4, seed=1, include_torgb=True)
    shared = _random_tokens(G, num_tokens=8, seed=2)
    tokens = [per_image, (shared, 0.5)]
    with torch.no_grad():
        a = G.synthesis(ws, tokens=tokens, path="lowrank")
        b = G.synthesis(ws, tokens=tokens, path="materialized")
        plain = G.synthesis(ws)
    rel = ((a - b).abs().max() / b.abs().max()).item()
    assert rel < tol, rel
    assert (a - plain).abs().max() > 0.1  # the residual really changes the image


def test_residual_matches_explicit_kernel():
    """The low-rank side branch equals convolving with the explicitly built Wd (a second implementation)."""
    g = torch.Generator().manual_seed(0)
    n, i, o, k, r = 2, 5, 7, 3, 3
    x = torch.randn(n, i, 6, 6, generator=g, dtype=torch.float64)
    weight = torch.randn(o, i, k, k, generator=g, dtype=torch.float64)
    styles = torch.randn(n, i, generator=g, dtype=torch.float64)
    p = torch.randn(n, r, o, generator=g, dtype=torch.float64)
    q = torch.randn(n, r, i * k * k, generator=g, dtype=torch.float64)
    got = modulated_conv2d(x, weight, styles, residual_p=p, residual_q=q, path="lowrank")
    for b in range(n):
        wd = styles[b][None, :, None, None] * weight + (p[b].t() @ q[b]).reshape(o, i, k, k)
        wd = wd / (wd.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8).sqrt()
        want = torch.nn.functional.conv2d(x[b:b + 1], wd, padding=1)
        assert torch.allclose(got[b:b + 1], want, atol=1e-10)


@pytest.mark.parametrize("path", ["lowrank", "materialized"])
def test_gradients_reach_tokens(path):
    torch.manual_seed(0)
    G = StyleGAN2Generator(z_dim=4, w_dim=4, resolution=8, channels=[4, 3], mapping_layers=1, refine_torgb=True).double().eval()
    ws = G.mapping(torch.randn(2, 4, dtype=torch.float64))
    base = _random_tokens(G, batch_size=2, num_tokens=2, include_torgb=True)
    names = list(base.layers)
    leaves = [t.clone().requires_grad_(True) for name in names for t in (base.layers[name].p, base.layers[name].q)]

    def fn(*tensors):
        layers = {name: LayerTokens(tensors[2 * j], tensors[2 * j + 1], base.layers[name].gain) for j, name in enumerate(names)}
        return G.synthesis(ws, tokens=TokenSet(layers), path=path)

    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-6)


def test_full_width_paths_agree():
    """Config-f channel widths (512) at 32 px, float32."""
    torch.manual_seed(0)
    G = StyleGAN2Generator(z_dim=512, w_dim=512, resolution=32, mapping_layers=2).eval()
    ws = G.mapping(torch.randn(2, 512))
    tokens = _random_tokens(G, batch_size=2, num_tokens=16)
    with torch.no_grad():
        a = G.synthesis(ws, tokens=tokens, path="lowrank")
        b = G.synthesis(ws, tokens=tokens, path="materialized")
        assert torch.equal(G.synthesis(ws, tokens=G.init_tokens(batch_size=2, num_tokens=16)), G.synthesis(ws))
    assert ((a - b).abs().max() / b.abs().max()) < 1e-5


def test_bad_inputs_name_the_problem():
    G = StyleGAN2Generator(**tiny_config(16)).eval()
    ws = G.mapping(torch.randn(2, 32))
    with pytest.raises(ValueError, match=r"z must have shape \[N, 32\]"):
        G.mapping(torch.randn(2, 31))
    with pytest.raises(TypeError, match="floating-point"):
        G.mapping(torch.zeros(2, 32, dtype=torch.long))
    with pytest.raises(TypeError, match="float64.*cast it"):
        G.mapping(torch.randn(2, 32, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"ws must have shape \[N, 6, 32\]"):
        G.synthesis(torch.randn(2, 5, 32))
    with pytest.raises(ValueError, match="noise_mode"):
        G.synthesis(ws, noise_mode="fresh")
    with pytest.raises(ValueError, match="path must be one of"):
        G.synthesis(ws, path="fast")
    with pytest.raises(ValueError, match="ws is on meta but the generator is on cpu"):
        G.synthesis(ws.to("meta"))
    tokens = G.init_tokens(batch_size=3)
    with pytest.raises(ValueError, match="batch 3 but ws has batch 2"):
        G.synthesis(ws, tokens=tokens)
    bad = G.init_tokens()
    bad.layers["b8.conv1"] = LayerTokens(torch.zeros(4, 31), torch.zeros(4, 32 * 9), torch.tensor(1.0))
    with pytest.raises(ValueError, match=r"tokens\['b8.conv1'\].p must have shape \[4, 32\]"):
        G.synthesis(ws, tokens=bad)
    other = StyleGAN2Generator(**tiny_config(32)).init_tokens()
    with pytest.raises(ValueError, match="b32.conv0.*another generator"):
        G.synthesis(ws, tokens=other)
    with pytest.raises(TypeError, match="tokens must be"):
        G.synthesis(ws, tokens={"b8.conv1": 1})
    for bad_res in (6, 12, 2048):
        with pytest.raises(ValueError, match="power of two"):
            StyleGAN2Generator(**tiny_config(bad_res))
    with pytest.raises(ValueError, match="channels must list 3"):
        StyleGAN2Generator(**tiny_config(16, channels=[8, 8]))


@pytest.mark.parametrize("path", ["lowrank", "materialized"])
def test_modulated_conv2d_names_the_argument_of_a_shape_mismatch(path):
    n, i, o, k, r = 2, 5, 7, 3, 3
    x, weight, styles = torch.randn(n, i, 6, 6), torch.randn(o, i, k, k), torch.randn(n, i)
    p, q = torch.randn(n, r, o), torch.randn(n, r, i * k * k)
    assert modulated_conv2d(x, weight, styles, residual_p=p, residual_q=q, path=path).shape == (n, o, 6, 6)
    cases = [
        (dict(x=torch.randn(i, 6, 6)), r"x must be \[N, I, H, W\], got \[5, 6, 6\]"),
        (dict(weight=torch.randn(o, i + 1, k, k)), r"weight must be \[O, I=5, k, k\] \(I from x\), got \[7, 6, 3, 3\]"),
        (dict(weight=torch.randn(o, i, k, 1)), r"weight must be .*got \[7, 5, 3, 1\]"),
        (dict(styles=torch.randn(n, i - 1)), r"styles must be \[N, I\] = \[2, 5\] \(from x\), got \[2, 4\]"),
        (dict(styles=torch.randn(n + 1, i)), r"styles must be \[N, I\] = \[2, 5\].*got \[3, 5\]"),
        (dict(residual_p=torch.randn(n, r, o + 1)), r"residual_p must be \[N, R, O\] = \[2, R, 7\].*got \[2, 3, 8\]"),
        (dict(residual_p=torch.randn(r, o)), r"residual_p must be .*got \[3, 7\]"),
        (dict(residual_q=torch.randn(n, r, i * k * k - 1)), r"residual_q must be \[N, R, I\*k\*k\] = \[2, 3, 45\].*got \[2, 3, 44\]"),
        (dict(residual_q=torch.randn(n, r + 1, i * k * k)), r"residual_q must be .* = \[2, 3, 45\].*got \[2, 4, 45\]"),
    ]
    for change, message in cases:
        args = dict(x=x, weight=weight, styles=styles, residual_p=p, residual_q=q) | change
        with pytest.raises(ValueError, match="modulated_conv2d: " + message):
            modulated_conv2d(args.pop("x"), args.pop("weight"), args.pop("styles"), path=path, **args)


def test_the_nvlabs_module_tree_does_the_work():
    """G.mapping and G.synthesis are the submodules (NVlabs' names and state-dict keys), called directly."""
    from refinestyle.models.stylegan2 import MappingNetwork, ModulatedLayer, SynthesisBlock, SynthesisNetwork

    torch.manual_seed(0)
    G = StyleGAN2Generator(**tiny_config(64)).eval()
    assert isinstance(G.mapping, MappingNetwork) and isinstance(G.synthesis, SynthesisNetwork)
    assert isinstance(G.synthesis.b4, SynthesisBlock) and isinstance(G.synthesis.b64.conv1, ModulatedLayer)
    assert G.mapping.w_avg.shape == (32,) and G.synthesis.num_ws == G.mapping.num_ws == G.num_ws
    assert {k.split(".")[0] for k in G.state_dict()} == {"mapping", "synthesis"}
    assert "synthesis.b64.conv1.weight" in G.state_dict() and "mapping.w_avg" in G.state_dict()
    assert G.layer("b64.conv1") is G.synthesis.b64.conv1
    z = torch.randn(2, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ws = G.mapping(z, truncation_psi=0.5)
        assert torch.equal(ws[:, 0], G.mapping.w_avg + 0.5 * (G.mapping.w(z) - G.mapping.w_avg))
        tokens = G.init_tokens(batch_size=2)
        assert torch.equal(G.synthesis(ws, tokens=tokens), G(z, truncation_psi=0.5, tokens=tokens))


def test_path_choice_depends_on_shapes_only():
    from refinestyle.models.refinement import choose_path

    # A batch: the activations must outweigh the kernel 4 times (512 channels at 64 px: 1.8 times; at 128 px: 7).
    assert choose_path(8, in_channels=512, out_channels=512, kernel_size=3, height=64, width=64) == "lowrank"
    assert choose_path(8, in_channels=512, out_channels=512, kernel_size=3, height=128, width=128) == "materialized"
    assert choose_path(1, in_channels=512, out_channels=512, kernel_size=3, height=64, width=64) == "materialized"
    # One image: a 512x512x3x3 kernel is larger than 4x4 activations, a 128-channel one smaller than 256x256 ones.
    assert choose_path(1, in_channels=512, out_channels=512, kernel_size=3, height=4, width=4) == "lowrank"
    assert choose_path(1, in_channels=128, out_channels=128, kernel_size=3, height=256, width=256) == "materialized"
    # On CUDA the grouped (materialised) convolution wins at every batch size, as bench/gpu.py measured.
    assert choose_path(8, in_channels=16, out_channels=16, kernel_size=3, height=64, width=64, device_type="cuda") == "materialized"
    assert choose_path(1, in_channels=512, out_channels=512, kernel_size=3, height=4, width=4, device_type="cuda") == "materialized"


def test_per_layer_mapping(tmp_path):
    """``mapping_per_layer``: zero maps draw the plain generator's W+ bit for bit (truncated too); trained maps
    give layer i ``w + A_i w + b_i`` (checked against that formula written out), truncation moves each layer toward
    its own mean latent (``mean_ws``, also where inversion starts: the mean of many mapped z, as the maps are
    linear), the option saves and loads, and a bad value is refused."""
    torch.manual_seed(0)
    cfg = dict(z_dim=12, w_dim=16, resolution=8, channels=[8, 8], mapping_layers=2, mapping_lr_multiplier=0.5)
    plain = StyleGAN2Generator(**cfg).eval()
    per_layer = StyleGAN2Generator(**cfg, mapping_per_layer=True).eval()
    missing, unexpected = per_layer.load_state_dict(plain.state_dict(), strict=False)
    assert sorted(missing) == ["mapping.layer_biases", "mapping.layer_maps"] and not unexpected
    assert per_layer.mapping.layer_maps.shape == (plain.num_ws, 16, 16)
    with torch.no_grad():
        plain.mapping.w_avg.normal_()
        per_layer.mapping.w_avg.copy_(plain.mapping.w_avg)
    z = torch.randn(6, 12)
    with torch.no_grad():
        assert torch.equal(per_layer.mapping(z), plain.mapping(z))
        assert torch.equal(per_layer.mapping(z, truncation_psi=0.6, truncation_cutoff=2),
                           plain.mapping(z, truncation_psi=0.6, truncation_cutoff=2))
        mapping = per_layer.mapping
        mapping.layer_maps.normal_()
        mapping.layer_biases.normal_()
        w = mapping.w(z)  # [6, w_dim]
        ws = per_layer.mapping(z)
        for i in range(per_layer.num_ws):
            a = mapping.layer_maps[i] * 0.5 / 16**0.5  # run-time map: stored · lr_mul / √w_dim
            expected = w + w @ a.t() + mapping.layer_biases[i] * 0.5
            torch.testing.assert_close(ws[:, i], expected, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(ws[:, 0], ws[:, 1])
        # Truncation toward each layer's mean: the mean of the mapped W+ equals mean_ws when w_avg is the mean w.
        many = torch.randn(4000, 12)
        mapping.w_avg.copy_(mapping.w(many).mean(0))
        torch.testing.assert_close(per_layer.mean_ws(), per_layer.mapping(many).mean(0), rtol=1e-4, atol=1e-4)
        psi = 0.3
        truncated = per_layer.mapping(z, truncation_psi=psi, truncation_cutoff=3)
        mean = per_layer.mean_ws()
        torch.testing.assert_close(truncated[:, :3], mean[:3] + psi * (ws[:, :3] - mean[:3]), rtol=1e-5, atol=1e-5)
        assert torch.equal(truncated[:, 3:], ws[:, 3:])
    per_layer.save_pretrained(tmp_path / "g")
    again = StyleGAN2Generator.from_pretrained(tmp_path / "g")
    assert again.config.mapping_per_layer is True
    with torch.no_grad():
        assert torch.equal(again.mapping(z), ws)
    with pytest.raises(ValueError, match="mapping_per_layer must be true or false"):
        StyleGAN2Generator(**cfg, mapping_per_layer="yes")


def test_wider_mapping_draws_the_same_images(tmp_path):
    """``with_wider_mapping``: more hidden units, the same w for every z (new units start with zero outgoing
    weights; the old ones are rescaled for the larger fan-in of equalized lr), synthesis and w_avg untouched; the
    wider config saves and loads; narrowing and bad widths are refused."""
    torch.manual_seed(0)
    G = StyleGAN2Generator(z_dim=12, w_dim=16, resolution=8, channels=[8, 8], mapping_layers=3, mapping_lr_multiplier=0.01,
                           z_bins=[[2, [-0.5, 0.5]]]).eval()
    with torch.no_grad():
        G.mapping.fc0_bins.normal_()  # a trained generator's bin inputs are not zero
        G.mapping.w_avg.normal_()
    wide = G.with_wider_mapping(40, seed=3)
    assert wide.config.mapping_hidden_dim == 40 and G.config.mapping_hidden_dim is None
    assert [tuple(getattr(wide.mapping, f"fc{i}").weight.shape) for i in range(3)] == [(40, 12), (40, 40), (16, 40)]
    z = torch.randn(32, 12)
    with torch.no_grad():
        torch.testing.assert_close(wide.mapping(z), G.mapping(z), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(wide.mapping(z, truncation_psi=0.5), G.mapping(z, truncation_psi=0.5), rtol=1e-5, atol=1e-6)
        # The new units are live (they learn), only their outgoing weights are zero.
        assert wide.mapping.fc0.weight[16:].abs().min() > 0
        assert wide.mapping.fc1.weight[:16, 16:].abs().max() == 0
    assert all(torch.equal(wide.state_dict()[k], v) for k, v in G.state_dict().items() if not k.startswith("mapping.fc"))
    wide.save_pretrained(tmp_path / "wide")
    again = StyleGAN2Generator.from_pretrained(tmp_path / "wide")
    assert again.config.mapping_hidden_dim == 40
    with torch.no_grad():
        torch.testing.assert_close(again.mapping(z), G.mapping(z), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="at least the current width 40"):
        wide.with_wider_mapping(20)
    with pytest.raises(ValueError, match="mapping_hidden_dim must be a positive integer or None"):
        StyleGAN2Generator(z_dim=12, w_dim=16, resolution=8, channels=[8, 8], mapping_hidden_dim=0)
    with pytest.raises(ValueError, match="one-layer mapping"):
        StyleGAN2Generator(z_dim=12, w_dim=16, resolution=8, channels=[8, 8], mapping_layers=1).with_wider_mapping(32)
