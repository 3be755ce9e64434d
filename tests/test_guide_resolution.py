"""Early exit: ``G.synthesis(ws, max_resolution=r)`` and adaptation whose guide reads the ``r`` px skip image.

The independent truth is a second generator: in the skip architecture no block feeds a lower one, so a generator of
resolution ``r`` holding the same lower blocks must draw exactly the early-exit image, and adapting the large
generator with ``guide_resolution=r`` must be the same run as adapting the small one at its full size."""

import pytest
import torch

from refinestyle import RefineStyleModel, StyleGAN2Generator
from refinestyle.adaptation import GUIDE_MAX_RESOLUTION, AdaptConfig
from refinestyle.clip import CLIPGuide

ADAPT = dict(steps=6, batch=2, seed=3, lr=0.05, warmup_steps=0, augment_views=1)


def _generator(resolution: int) -> StyleGAN2Generator:
    channels = {16: [16, 16, 8], 32: [16, 16, 8, 8]}[resolution]
    return StyleGAN2Generator(z_dim=8, w_dim=16, resolution=resolution, channels=channels, mapping_layers=2, num_tokens=2)


@pytest.fixture(scope="module")
def pair():
    """A 32 px generator with random weights and non-zero noise, and a 16 px one holding its lower blocks."""
    torch.manual_seed(0)
    big = _generator(32).eval()
    with torch.no_grad():
        big.mapping.w_avg.copy_(big.mapping.w(torch.randn(500, 8)).mean(0))
        for name, buf in big.named_buffers():
            if "noise" in name:
                buf.normal_()
    small = _generator(16).eval()
    shared = {k: v for k, v in big.state_dict().items() if k in small.state_dict()}
    assert len(shared) == len(small.state_dict())  # every tensor of the small generator comes from the big one
    small.load_state_dict(shared, strict=True)
    return big, small


@pytest.fixture(scope="module")
def clip():
    torch.manual_seed(1)
    return CLIPGuide.create_synthfaces(vocabulary="a photo sketch of face red blue".split())


def test_early_exit_is_the_smaller_generator_bit_for_bit(pair):
    big, small = pair
    ws = big.mapping(torch.randn(3, 8, generator=torch.Generator().manual_seed(2)), truncation_psi=0.7)  # [3, 8, 16]
    tokens = big.init_tokens(batch_size=3, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        for t in tokens.layers.values():
            t.p.normal_(0, 0.1)  # a non-zero residual everywhere
        full = big.synthesis(ws, tokens=tokens)
        assert full.shape == (3, 3, 32, 32) and torch.equal(full, big.synthesis(ws, tokens=tokens, max_resolution=32))
        for path in ("materialized", "lowrank"):
            early = big.synthesis(ws, max_resolution=16, path=path)  # [3, 3, 16, 16]
            assert torch.equal(early, small.synthesis(ws[:, :small.num_ws], path=path))
        # with tokens on every layer, those above 16 px play no part
        small_tokens = small.init_tokens(batch_size=3)
        for name in small_tokens.layers:
            small_tokens.layers[name] = tokens.layers[name]
        assert torch.equal(big.synthesis(ws, tokens=tokens, max_resolution=16), small.synthesis(ws[:, :small.num_ws], tokens=small_tokens))
    for bad in (2, 24, 64, "16"):
        with pytest.raises(ValueError, match="max_resolution must be None or one of"):
            big.synthesis(ws, max_resolution=bad)


def test_adapting_at_a_guide_resolution_is_adapting_the_smaller_generator(pair, clip):
    big, small = pair
    early = RefineStyleModel(generator=big, clip=clip).adapt("a photo of a face", "a sketch of a face",
                                                             guide_resolution=16, **ADAPT)
    reference = RefineStyleModel(generator=small, clip=clip).adapt("a photo of a face", "a sketch of a face", **ADAPT)
    # The same layers (those up to 16 px), the same tokens, the same suggested strength.
    assert early.config.layers == reference.config.layers and all(not name.startswith("b32") for name in early.config.layers)
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(early.state_dict()[key], value, rtol=1e-5, atol=1e-6)
    assert early.config.suggested_strength == reference.config.suggested_strength
    # The domain applies to the full-size generator: 32 px images change, and an exact no-op at strength 0.
    ws = big.mapping(torch.randn(2, 8, generator=torch.Generator().manual_seed(4)))
    with torch.no_grad():
        plain = big.synthesis(ws)
        assert (big.synthesis(ws, tokens=[(early.token_set(), 1.0)]) - plain).abs().max() > 1e-3
        assert torch.equal(big.synthesis(ws, tokens=[(early.token_set(), 0.0)]), plain)
    # Full size (the default for a generator of at most 256 px) refines the 32 px layers too.
    full = RefineStyleModel(generator=big, clip=clip).adapt("a photo of a face", "a sketch of a face", **{**ADAPT, "steps": 2})
    assert any(name.startswith("b32") for name in full.config.layers)


def test_guide_resolution_defaults_and_errors(pair, clip):
    big, _ = pair
    assert GUIDE_MAX_RESOLUTION == 256
    assert [AdaptConfig().resolution_for(r) for r in (64, 256, 512, 1024)] == [64, 256, 256, 256]
    assert AdaptConfig(guide_resolution=1024).resolution_for(1024) == 1024
    # never fewer pixels than the guides take (a 336 px CLIP reads the 512 px image); an explicit value stands
    assert [AdaptConfig().resolution_for(1024, size) for size in (64, 224, 336)] == [256, 256, 512]
    assert AdaptConfig(guide_resolution=128).resolution_for(1024, 336) == 128
    model = RefineStyleModel(generator=big, clip=clip)
    cases = [(dict(guide_resolution=64), "above the generator's 32 px"),
             (dict(guide_resolution=24), "a power of two from 16"),
             (dict(guide_resolution=8), "a power of two from 16"),
             (dict(guide_resolution=16, layers=["b16.conv1", "b32.conv0"]), r"layers \['b32.conv0'\] are above the guide")]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            model.adapt("a photo of a face", "a sketch of a face", steps=1, **kwargs)


def test_a_large_generator_is_guided_at_256_px_by_default(clip):
    """A 512 px generator (narrow, random weights): the guide reads 256 px, so b512 gets no tokens; the preview the
    callback sees is the 256 px image."""
    torch.manual_seed(5)
    G = StyleGAN2Generator(z_dim=8, w_dim=16, resolution=512, channels=[8] * 8, mapping_layers=2).eval()
    seen = []
    dom = RefineStyleModel(generator=G, clip=clip).adapt(
        "a photo of a face", "a sketch of a face", steps=2, batch=1, augment_views=0, suggest_strength=False,
        preview_every=1, callback=lambda step, total, state: seen.append(state.preview.shape))
    assert dom.config.layers and max(int(name.split(".")[0][1:]) for name in dom.config.layers) == 256
    assert seen == [torch.Size([4, 3, 256, 256])] * 2
