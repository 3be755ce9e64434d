"""Tests of the SynthFaces renderer: behaviour, not just shapes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from refinestyle.data.synthfaces import (
    ATTRIBUTES,
    EYE_COLORS,
    HAIR_COLORS,
    HAIR_STYLES,
    MASK_NAMES,
    STYLES,
    FaceParams,
    attribute_labels,
    caption,
    categorical_z_edges,
    params_to_z,
    render,
    sample_params,
    sprite_resolution,
    style_prompt,
    z_to_params,
)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def params() -> FaceParams:
    return sample_params(6, seed=3)


def _dilate(mask: torch.Tensor, px: int) -> torch.Tensor:
    return F.max_pool2d(mask, 2 * px + 1, stride=1, padding=px)


def _pair(p: FaceParams, name: str, lo: float, hi: float, resolution: int = 64):
    a, ma = render(p.replace(**{name: lo}), resolution=resolution, return_masks=True)
    b, mb = render(p.replace(**{name: hi}), resolution=resolution, return_masks=True)
    diff = (a - b).abs().sum(1, keepdim=True)
    return diff, ma, mb


# ----------------------------------------------------------------------------------------- determinism
@pytest.mark.parametrize("style", STYLES)
def test_deterministic_and_batch_independent(style: str) -> None:
    p = sample_params(5, seed=11, out_of_domain=True)
    a = render(p, style=style, resolution=32)
    b = render(p, style=style, resolution=32)
    assert torch.equal(a, b)
    for i in (0, 3):
        assert torch.equal(render(p[i], style=style, resolution=32)[0], a[i])


def test_batch_independent_across_chunks() -> None:
    from refinestyle.data.synthfaces._render import _chunk_size

    c = _chunk_size(64)  # faces rendered together; rows c.. are in a second chunk
    p = sample_params(c + 5, seed=5)
    full, masks = render(p, resolution=64, return_masks=True)
    for i in (0, c - 1, c, c + 4):
        one, one_masks = render(p[i], resolution=64, return_masks=True)
        assert torch.equal(one[0], full[i])
        assert all(torch.equal(one_masks[k][0], masks[k][i]) for k in MASK_NAMES)
    assert torch.equal(render(p[c - 2 : c + 2], resolution=64), full[c - 2 : c + 2])


def test_windows_are_conservative(monkeypatch: pytest.MonkeyPatch) -> None:
    """Parts are computed inside fixed windows for speed; a full-frame render must be bit-identical."""
    import refinestyle.data.synthfaces._geometry as geometry

    gen = torch.Generator().manual_seed(0)
    corners = torch.randint(0, 2, (48, len(ATTRIBUTES)), generator=gen).float()  # extreme poses and sizes
    ones = torch.ones(48)
    p = FaceParams.cat(
        [sample_params(12, seed=9, out_of_domain=True), FaceParams(u=corners, hat=ones, face_paint=ones, exotic_color=ones)]
    )
    windowed = {(s, r): render(p, style=s, resolution=r, return_masks=True) for s in STYLES for r in (8, 16, 64)}
    monkeypatch.setattr(geometry, "_LOCAL_BOXES", {k: None for k in geometry._LOCAL_BOXES})
    monkeypatch.setattr(geometry, "_WINDOW_CACHE", {})
    for (s, r), (img, masks) in windowed.items():
        full, full_masks = render(p, style=s, resolution=r, return_masks=True)
        assert torch.equal(img, full), (s, r)
        assert all(torch.equal(masks[k], full_masks[k]) for k in MASK_NAMES), (s, r)


@pytest.mark.parametrize("resolution", [8, 33, 100])
def test_shapes_and_range_any_resolution(resolution: int, params: FaceParams) -> None:
    for style in STYLES:
        img, masks = render(params, style=style, resolution=resolution, return_masks=True)
        assert img.shape == (params.n, 3, resolution, resolution) and img.dtype == torch.float32
        assert torch.isfinite(img).all() and img.min() >= -1 and img.max() <= 1
        assert set(masks) == set(MASK_NAMES)
        for m in masks.values():
            assert m.shape == (params.n, 1, resolution, resolution)
            assert m.min() >= 0 and m.max() <= 1


def test_resolutions_render_the_same_face(params: FaceParams) -> None:
    big = render(params, resolution=128)
    small = render(params, resolution=32)
    down = F.avg_pool2d(big, 4)
    assert (down - small).abs().mean() < 0.05


# ----------------------------------------------------------------------------------------- params
def test_z_roundtrip() -> None:
    z = torch.randn(64, len(ATTRIBUTES), generator=torch.Generator().manual_seed(0)).clamp(-3, 3)
    p = z_to_params(z)
    assert p.u.min() >= 0 and p.u.max() <= 1
    assert torch.allclose(params_to_z(p), z, atol=1e-3)
    q = sample_params(64, seed=1)
    assert torch.allclose(z_to_params(params_to_z(q)).u, q.u.clamp(1e-6, 1 - 1e-6), atol=1e-6)
    assert torch.isfinite(params_to_z(FaceParams(u=torch.tensor([[0.0, 1.0] * 12])))).all()


def test_categorical_z_edges_are_where_the_labels_change() -> None:
    """The edges a generator's one-hot inputs use agree with the renderer's own labels and glasses switch."""
    from refinestyle.data.synthfaces import decode

    z = torch.randn(4000, len(ATTRIBUTES), generator=torch.Generator().manual_seed(3))
    params = z_to_params(z)
    labels, values = attribute_labels(params), decode(params)
    edges = categorical_z_edges()
    bin_of = {name: (z[:, ATTRIBUTES.index(name), None] >= torch.tensor(e)).sum(1) for name, e in edges.items()}
    for name in ("eye_color", "hair_style", "hair_color"):
        assert torch.equal(bin_of[name], labels[name]), name
    assert torch.equal(bin_of["glasses"] > 0, labels["glasses"].bool())
    # Shape and frame are constant inside each glasses bin, and every bin draws different glasses.
    code = values["glasses_shape"] * 3 + values["glasses_frame"]
    on = bin_of["glasses"] > 0
    for b in range(1, len(edges["glasses"]) + 1):
        inside = code[bin_of["glasses"] == b]
        assert inside.numel() > 0 and torch.all(inside == inside[0]), b
    n = len(edges["glasses"])
    assert len({code[bin_of["glasses"] == b][0].item() for b in range(1, n + 1)}) == n and on.any()


def test_sample_params_prior_and_seed() -> None:
    p = sample_params(4000, seed=0)
    assert p.u.shape == (4000, len(ATTRIBUTES))
    assert torch.allclose(p.u.mean(0), torch.full((len(ATTRIBUTES),), 0.5), atol=0.03)
    assert torch.equal(sample_params(5, seed=7).u, sample_params(5, seed=7).u)
    assert not torch.equal(sample_params(5, seed=7).u, sample_params(5, seed=8).u)
    g = torch.Generator().manual_seed(7)
    assert torch.equal(sample_params(5, seed=g).u, sample_params(5, seed=7).u)
    labels = attribute_labels(p)
    assert abs(labels["glasses"].float().mean() - 0.4) < 0.03
    assert abs(labels["smile"].float().mean() - 0.5) < 0.03
    assert set(labels["eye_color"].tolist()) == set(range(len(EYE_COLORS)))
    assert set(labels["hair_style"].tolist()) == set(range(len(HAIR_STYLES)))
    assert set(labels["hair_color"].tolist()) == set(range(len(HAIR_COLORS)))


def test_out_of_domain_sampling() -> None:
    for seed in range(5):
        p = sample_params(200, seed=seed)
        assert not p.is_out_of_domain().any()
        assert p.hat.eq(0).all() and p.face_paint.eq(0).all() and p.exotic_color.eq(0).all()
    q = sample_params(200, seed=0, out_of_domain=True)
    assert torch.equal(q.u, sample_params(200, seed=0).u)
    assert q.is_out_of_domain().all()
    for name in ("hat", "face_paint", "exotic_color"):
        frac = (q.get(name) > 0).float().mean()
        assert 0.2 < frac < 0.6, name
    labels = attribute_labels(q)
    assert labels["hat"].sum() > 0 and labels["face_paint"].sum() > 0


def test_out_of_domain_features_are_visible(params: FaceParams) -> None:
    base, masks = render(params, return_masks=True)
    for name, region in (("hat", "hair"), ("face_paint", "face"), ("exotic_color", None)):
        img = render(params.replace(**{name: 1.0}), resolution=64)
        diff = (img - base).abs().sum(1, keepdim=True)
        assert diff.mean() > 0.02, name
        if region is not None:  # the feature lands on its part (a hat is counted as hair)
            m = _dilate(masks[region] + render(params.replace(**{name: 1.0}), return_masks=True)[1][region], 1)
            assert (diff * (m > 0.01)).sum() / diff.sum() > 0.8, name


def test_face_params_helpers(params: FaceParams) -> None:
    assert params.n == len(params) == 6
    assert torch.equal(params.get("glasses"), params.u[:, ATTRIBUTES.index("glasses")])
    q = params.replace(glasses=torch.linspace(0, 1, 6), hat=0.5)
    assert torch.equal(q.get("glasses"), torch.linspace(0, 1, 6)) and q.hat.eq(0.5).all()
    assert torch.equal(params.u, params.u.clone())  # replace returned a copy
    assert params[1:3].n == 2 and params[-1].n == 1
    assert torch.equal(FaceParams.cat([params[:2], params[2:]]).u, params.u)
    assert params.to("cpu").u.device.type == "cpu"
    with pytest.raises(KeyError, match="unknown attribute"):
        params.get("nose_ring")


# ----------------------------------------------------------------------------------------- locality
def test_glasses_change_only_the_eye_region(params: FaceParams) -> None:
    diff, ma, mb = _pair(params, "glasses", 0.1, 0.9)
    assert attribute_labels(params.replace(glasses=0.9))["glasses"].eq(1).all()
    assert mb["glasses"].sum() > 0 and ma["glasses"].sum() == 0
    region = _dilate(mb["glasses"] + mb["eyes"], 1) > 0.01
    assert (diff * region).sum() / diff.sum() > 0.9
    assert diff[..., :8, :8].eq(0).all() and diff[..., :8, -8:].eq(0).all()
    assert (diff.flatten(1).sum(1) > 5).all()  # every face visibly changes


def test_hair_color_changes_the_hair(params: FaceParams) -> None:
    diff, ma, mb = _pair(params.replace(hair_style=0.1), "hair_color", 0.05, 0.55)  # black -> red, short hair
    region = _dilate(ma["hair"] + ma["brows"], 1) > 0.01
    assert (diff * region).sum() / diff.sum() > 0.9
    assert torch.equal(ma["hair"], mb["hair"])


def test_smile_changes_the_mouth(params: FaceParams) -> None:
    diff, ma, mb = _pair(params, "smile", 0.1, 0.95)
    region = _dilate(ma["mouth"] + mb["mouth"], 1) > 0.01
    assert (diff * region).sum() / diff.sum() > 0.9
    labels = attribute_labels(params.replace(smile=0.95))["smile"]
    assert labels.eq(1).all() and attribute_labels(params.replace(smile=0.1))["smile"].eq(0).all()


def test_background_hue_changes_only_the_background(params: FaceParams) -> None:
    diff, ma, mb = _pair(params, "background_hue", 0.1, 0.6)
    assert torch.equal(ma["background"], mb["background"])
    assert diff[ma["background"] == 0].eq(0).all()
    assert (diff[ma["background"] > 0.99]).mean() > 0.2


@pytest.mark.parametrize(
    "name,part", [("eye_color", "eyes"), ("brow_thickness", "brows"), ("eye_size", "eyes"), ("skin_tone", "face")]
)
def test_attributes_change_their_part(params: FaceParams, name: str, part: str) -> None:
    diff, ma, mb = _pair(params, name, 0.02, 0.98)
    region = _dilate(ma[part] + mb[part], 2) > 0.01
    assert diff.sum() > 0 and (diff * region).sum() / diff.sum() > 0.75


def test_eyes_mouth_glasses_visible_at_64px() -> None:
    p = sample_params(64, seed=2).replace(glasses=0.9)
    _, masks = render(p, resolution=64, return_masks=True)
    for part, min_px in (("eyes", 10), ("mouth", 4), ("glasses", 20), ("brows", 4)):
        assert (masks[part].flatten(1).sum(1) >= min_px).all(), part


def test_masks_partition_and_pose(params: FaceParams) -> None:
    _, m = render(params.replace(glasses=0.1), resolution=64, return_masks=True)
    total = sum(m[k] for k in MASK_NAMES)
    assert torch.allclose(total, torch.ones_like(total), atol=1e-5)
    # pose moves the masks
    _, left = render(params.replace(pose_x=0.0), resolution=64, return_masks=True)
    _, right = render(params.replace(pose_x=1.0), resolution=64, return_masks=True)
    xs = torch.linspace(-1, 1, 64)
    cx_left = (left["face"].sum(2).squeeze(1) * xs).sum(1) / left["face"].sum((1, 2, 3))
    cx_right = (right["face"].sum(2).squeeze(1) * xs).sum(1) / right["face"].sum((1, 2, 3))
    assert (cx_right - cx_left > 0.12).all()


# ----------------------------------------------------------------------------------------- styles
def test_styles_keep_geometry_and_differ(params: FaceParams) -> None:
    photo, ref = render(params, style="photo", resolution=64, return_masks=True)
    for style in STYLES[1:]:
        img, m = render(params, style=style, resolution=64, return_masks=True)
        for k in MASK_NAMES:
            assert torch.equal(m[k], ref[k]), (style, k)
        assert (img - photo).abs().mean() > 0.08, style
    # every pair of styles differs
    imgs = {s: render(params, style=s, resolution=64) for s in STYLES}
    for i, s in enumerate(STYLES):
        for t in STYLES[i + 1 :]:
            assert (imgs[s] - imgs[t]).abs().mean() > 0.08, (s, t)


def test_pixelart_is_blocky_and_quantised(params: FaceParams) -> None:
    img = render(params, style="pixelart", resolution=64)
    block = 64 // sprite_resolution(64)
    assert block >= 2
    blocks = img.unfold(2, block, block).unfold(3, block, block)  # [N, 3, 64/b, 64/b, b, b]
    assert (blocks == blocks[..., :1, :1]).all()
    colors = torch.unique(img.permute(0, 2, 3, 1).reshape(-1, 3), dim=0)
    assert len(colors) <= 32


def test_sketch_is_grayscale_paper(params: FaceParams) -> None:
    img = render(params, style="sketch", resolution=64)
    assert torch.equal(img[:, 0], img[:, 1]) and torch.equal(img[:, 1], img[:, 2])
    assert img[:, :, :4, :4].mean() > 0.8  # white paper in the corner


def test_sketch_and_pixelart_keep_glasses_and_mouth(params: FaceParams) -> None:
    for style in ("sketch", "pixelart", "popart"):
        a = render(params.replace(glasses=0.1), style=style, resolution=64)
        b = render(params.replace(glasses=0.9), style=style, resolution=64)
        assert ((a - b).abs().flatten(1).mean(1) > 0.01).all(), style
        c = render(params.replace(smile=0.1), style=style, resolution=64)
        d = render(params.replace(smile=0.95), style=style, resolution=64)
        assert ((c - d).abs().flatten(1).mean(1) > 0.003).all(), style


# ----------------------------------------------------------------------------------------- text
def test_captions(params: FaceParams) -> None:
    p = sample_params(300, seed=4, out_of_domain=True)
    labels = attribute_labels(p)
    for style in STYLES:
        caps = caption(p, style, seed=1)
        assert caps == caption(p, style, seed=1) and len(caps) == p.n
        for cap, g, hat in zip(caps, labels["glasses"].tolist(), labels["hat"].tolist()):
            negated = "no glasses" in cap or "without glasses" in cap
            assert ("glasses" in cap and not negated) == bool(g), cap
            assert ("hat" in cap) == bool(hat), cap
        assert len(set(caps)) > 250
    assert caption(p, "photo", seed=1) != caption(p, "photo", seed=2)
    assert all("zombie" in c for c in caption(p, "zombie"))
    assert all("sketch" in c or "drawing" in c for c in caption(p, "sketch", seed=3))
    assert caption(p[5], "popart", seed=9)[0] == caption(p, "popart", seed=9)[5]


def test_style_prompts() -> None:
    assert style_prompt("photo") == "a photo of a face"
    assert style_prompt("sketch") == "a pencil sketch of a face"
    assert style_prompt("popart") == "a pop art painting of a face"
    assert style_prompt("pixelart") == "a pixel art image of a face"
    assert style_prompt("zombie") == "a zombie face"
    assert style_prompt("watercolor") == "a watercolor painting of a face"
    assert len({style_prompt(s) for s in STYLES}) == len(STYLES)


# ----------------------------------------------------------------------------------------- errors
def test_bad_inputs(params: FaceParams) -> None:
    with pytest.raises(ValueError, match="unknown style 'cubism'.*photo, sketch"):
        render(params, style="cubism")
    with pytest.raises(ValueError, match="unknown style"):
        style_prompt("cubism")
    with pytest.raises(ValueError, match=">= 8"):
        render(params, resolution=4)
    with pytest.raises(TypeError, match="resolution must be an int"):
        render(params, resolution=64.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="resolution must be an int"):
        render(params, resolution=True)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="FaceParams"):
        render(torch.rand(2, len(ATTRIBUTES)))  # type: ignore[arg-type]
    u = torch.rand(2, len(ATTRIBUTES))
    u[1, ATTRIBUTES.index("smile")] = 1.5
    with pytest.raises(ValueError, match="attribute smile has values outside \\[0, 1\\].*z_to_params.*clamp"):
        FaceParams(u=u)
    with pytest.raises(ValueError, match=r"shape \[N, 24\]"):
        FaceParams(u=torch.rand(2, 5))
    with pytest.raises(ValueError, match="NaN"):
        FaceParams(u=torch.full((1, len(ATTRIBUTES)), float("nan")))
    with pytest.raises(TypeError, match="floating point"):
        FaceParams(u=torch.zeros(1, len(ATTRIBUTES), dtype=torch.long))
    with pytest.raises(ValueError, match=r"hat.*\[0, 1\]"):
        FaceParams(u=torch.rand(2, len(ATTRIBUTES)), hat=torch.tensor([0.0, 2.0]))
    with pytest.raises(ValueError, match=r"face_paint must have shape \[2\]"):
        FaceParams(u=torch.rand(2, len(ATTRIBUTES)), face_paint=torch.zeros(3))
    with pytest.raises(ValueError, match="NaN"):
        z_to_params(torch.full((1, len(ATTRIBUTES)), float("nan")))
    with pytest.raises(ValueError, match="shape"):
        z_to_params(torch.zeros(3))
    with pytest.raises(TypeError, match="seed"):
        sample_params(2, seed=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=">= 0"):
        sample_params(-1)
    with pytest.raises(ValueError, match="outside"):
        params.replace(glasses=1.2)
