"""Rendering of SynthFaces: colours per style, back-to-front compositing, masks and post-processing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from ._geometry import ZOOM, Layer, Scene, derive, to_f32, window
from ._params import FaceParams, decode

STYLES: tuple[str, ...] = ("photo", "sketch", "popart", "pixelart", "zombie", "watercolor")
"""Rendering styles: ``photo`` is the generator's domain, the others are out-of-domain styles."""

MASK_NAMES: tuple[str, ...] = ("face", "hair", "eyes", "brows", "mouth", "glasses", "background")
"""Keys of the part masks returned by ``render(..., return_masks=True)``."""

# Back-to-front drawing order of all parts (a style draws a subset).
ORDER: tuple[str, ...] = (
    "bg_shadow",
    "back_hair",
    "neck",
    "clothing",
    "ears",
    "face",
    "blush",
    "hair_shadow",
    "paint_cheeks",
    "paint_forehead",
    "nose",
    "sockets",
    "scar",
    "eye_line",
    "eye_white",
    "iris",
    "pupil",
    "glint",
    "brows",
    "lips",
    "mouth_in",
    "teeth",
    "lens",
    "frames",
    "front_hair",
    "hat",
    "hat_band",
)
# Parts that make up the masks (the same in every style), in drawing order.
MASK_LAYERS: tuple[str, ...] = (
    "back_hair",
    "neck",
    "clothing",
    "ears",
    "face",
    "eye_line",
    "eye_white",
    "iris",
    "pupil",
    "glint",
    "brows",
    "lips",
    "mouth_in",
    "teeth",
    "lens",
    "frames",
    "front_hair",
    "hat",
    "hat_band",
)
# A part is skipped for a chunk when this per-face scalar is 0 for every face (exact: alpha would be 0).
GATES: dict[str, str] = {
    "back_hair": "bh_on",
    "paint_cheeks": "face_paint",
    "paint_forehead": "face_paint",
    "teeth": "open",
    "lens": "glasses_on",
    "frames": "glasses_on",
    "hat": "hat",
    "hat_band": "hat",
}

# ------------------------------------------------------------------------------------------- palettes
SKIN_ANCHORS = ((0.98, 0.85, 0.76), (0.93, 0.73, 0.59), (0.72, 0.49, 0.34), (0.43, 0.28, 0.19))
HAIR_RGB = (
    (0.10, 0.08, 0.08),  # black
    (0.42, 0.25, 0.12),  # brown
    (0.92, 0.78, 0.42),  # blond
    (0.78, 0.28, 0.10),  # red
    (0.70, 0.70, 0.72),  # grey
    (0.18, 0.38, 0.85),  # blue
)
EYE_RGB = ((0.45, 0.25, 0.10), (0.22, 0.52, 0.95), (0.22, 0.65, 0.28))
FRAME_RGB = ((0.07, 0.07, 0.08), (0.30, 0.16, 0.07), (0.10, 0.12, 0.30))
PIXEL_PALETTE = (
    (0.08, 0.07, 0.10), (0.30, 0.30, 0.34), (0.55, 0.55, 0.58), (0.78, 0.78, 0.80), (0.97, 0.97, 0.95),
    (1.00, 0.86, 0.74), (0.93, 0.71, 0.56), (0.74, 0.50, 0.34), (0.50, 0.32, 0.20), (0.32, 0.19, 0.12),
    (0.95, 0.80, 0.40), (0.80, 0.30, 0.10), (0.55, 0.12, 0.12), (0.88, 0.32, 0.36), (1.00, 0.62, 0.70),
    (1.00, 0.60, 0.20), (1.00, 0.90, 0.30), (0.15, 0.30, 0.70), (0.35, 0.60, 0.95), (0.62, 0.82, 1.00),
    (0.15, 0.50, 0.20), (0.45, 0.75, 0.35), (0.20, 0.65, 0.65), (0.50, 0.30, 0.70), (0.80, 0.62, 0.90),
    (0.85, 0.78, 0.62), (0.96, 0.78, 0.66), (0.80, 0.64, 0.54), (0.62, 0.44, 0.32), (0.42, 0.27, 0.18),
)  # fmt: skip


def hsv_to_rgb(h: Tensor, s: Tensor | float, v: Tensor | float) -> Tensor:
    """Piecewise-linear HSV -> RGB for float64 ``[n]`` tensors; returns ``[n, 3]``."""
    h = h - torch.floor(h)
    r = ((h * 6.0 - 3.0).abs() - 1.0).clamp(0.0, 1.0)
    g = (2.0 - (h * 6.0 - 2.0).abs()).clamp(0.0, 1.0)
    b = (2.0 - (h * 6.0 - 4.0).abs()).clamp(0.0, 1.0)
    pure = torch.stack([r, g, b], dim=1)
    s = torch.as_tensor(s, dtype=h.dtype).reshape(-1, 1) if not isinstance(s, float) else s
    v = torch.as_tensor(v, dtype=h.dtype).reshape(-1, 1) if not isinstance(v, float) else v
    return v * (1.0 - s + s * pure)


def rgb_to_hsv(rgb: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Inverse of ``hsv_to_rgb`` for float64 ``[n, 3]``."""
    r, g, b = rgb.unbind(1)
    mx = rgb.max(1).values
    mn = rgb.min(1).values
    delta = mx - mn
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    h = torch.where(mx == r, (g - b) / safe, torch.where(mx == g, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe))
    h = torch.where(delta > 0, h / 6.0, torch.zeros_like(h))
    h = h - torch.floor(h)
    s = torch.where(mx > 0, delta / torch.where(mx > 0, mx, torch.ones_like(mx)), torch.zeros_like(mx))
    return h, s, mx


def _mix(a: Tensor, b: Tensor | tuple[float, ...], t: float | Tensor) -> Tensor:
    b = torch.as_tensor(b, dtype=a.dtype, device=a.device).expand_as(a)
    if isinstance(t, Tensor):
        t = t.reshape(-1, 1)
    return a + (b - a) * t


def _lum(c: Tensor) -> Tensor:
    """Luma of ``[n, 3]`` colours as ``[n, 1]`` (explicit adds: no reduction-order dependence)."""
    return c[:, 0:1] * 0.299 + c[:, 1:2] * 0.587 + c[:, 2:3] * 0.114


def _table(rows: tuple[tuple[float, ...], ...], idx: Tensor) -> Tensor:
    return torch.tensor(rows, dtype=torch.float64, device=idx.device)[idx]


def base_colors(dec: dict[str, Tensor]) -> dict[str, Tensor]:
    """Photo colours of every part, float64 ``[n, 3]`` in [0, 1]."""
    n = dec["skin_tone"].shape[0]
    dev = dec["skin_tone"].device
    t = dec["skin_tone"] * 3.0
    k = torch.floor(t).clamp(0, 2)
    anchors = torch.tensor(SKIN_ANCHORS, dtype=torch.float64, device=dev)
    skin = anchors[k.long()] + (anchors[k.long() + 1] - anchors[k.long()]) * (t - k).reshape(-1, 1)
    hair = _table(HAIR_RGB, dec["hair_color"]) * (0.85 + 0.3 * dec["hair_color_shade"]).reshape(-1, 1)
    hair = hair.clamp(0.0, 1.0)
    eye = _table(EYE_RGB, dec["eye_color"]) * (0.85 + 0.3 * dec["eye_color_shade"]).reshape(-1, 1)
    eye = eye.clamp(0.0, 1.0)
    bgh = dec["background_hue"]
    # out-of-domain: exotic (out-of-palette) skin and hair colours
    ex = dec["exotic_color"]
    skin = _mix(skin, hsv_to_rgb(bgh + 0.37, 0.8, 0.75), 0.9 * ex)
    hair = _mix(hair, hsv_to_rgb(bgh + 0.7, 0.95, 0.95), ex)

    def const(*rgb: float) -> Tensor:
        return torch.tensor(rgb, dtype=torch.float64, device=dev).expand(n, 3)

    return {
        "skin": skin,
        "hair": hair,
        "eye": eye,
        "bg": hsv_to_rgb(bgh, 0.38, dec["background_brightness"]),
        "clothing": hsv_to_rgb(dec["clothing_hue"], 0.55, 0.6),
        "lips": skin * 0.62 + torch.tensor((0.33, 0.04, 0.06), dtype=torch.float64, device=dev),
        "brows": hair * 0.55 + 0.04,
        "frames": _table(FRAME_RGB, dec["glasses_frame"].long()),
        "hat": hsv_to_rgb(dec["clothing_hue"] + 0.5, 0.7, 0.45),
        "paint": hsv_to_rgb(bgh + 0.5, 0.9, 0.9),
        "white": const(0.97, 0.97, 0.95),
        "dark": const(0.12, 0.08, 0.07),
        "pupil": const(0.03, 0.03, 0.04),
        "mouth_in": const(0.30, 0.06, 0.07),
        "teeth": const(0.96, 0.95, 0.90),
        "lens": const(0.85, 0.93, 1.0),
        "black": const(0.02, 0.02, 0.03),
    }


# ------------------------------------------------------------------------------------------- textures
_TEX_CACHE: dict[tuple, Tensor] = {}


def _hash01(ix: Tensor, iy: Tensor, seed: int) -> Tensor:
    """Integer hash of lattice points -> float64 in [0, 1] (exact integer arithmetic)."""
    m = 0xFFFFFFFF
    h = (ix * 374761393 + iy * 668265263 + seed * 2246822519) & m
    h = ((h ^ (h >> 13)) * 1274126177) & m
    h = h ^ (h >> 16)
    return (h & 0xFFFF).to(torch.float64) / 65535.0


def _value_noise(resolution: int, cell: float, seed: int) -> Tensor:
    """Smooth value noise [R, R] in [0, 1] with lattice spacing ``cell`` (normalised units)."""
    g = (torch.arange(resolution, dtype=torch.float64) * 2.0 + 1.0) / resolution
    p = g / cell
    i = torch.floor(p)
    f = p - i
    s = f * f * (3.0 - 2.0 * f)
    i = i.long()
    iy, ix = i.reshape(-1, 1), i.reshape(1, -1)
    sy, sx = s.reshape(-1, 1), s.reshape(1, -1)
    v00, v01 = _hash01(ix, iy, seed), _hash01(ix + 1, iy, seed)
    v10, v11 = _hash01(ix, iy + 1, seed), _hash01(ix + 1, iy + 1, seed)
    top = v00 + (v01 - v00) * sx
    bot = v10 + (v11 - v10) * sx
    return top + (bot - top) * sy


def texture(name: str, resolution: int, device: torch.device) -> Tensor:
    """Cached style textures (float32, [R, R] unless noted), fixed per resolution."""
    key = (name, resolution, str(device))
    if key in _TEX_CACHE:
        return _TEX_CACHE[key]
    if len(_TEX_CACHE) > 64:
        _TEX_CACHE.clear()
    R = resolution
    pw = 2.0 / R
    g = (torch.arange(R, dtype=torch.float64) * 2.0 + 1.0) / R - 1.0
    gy, gx = g.reshape(-1, 1), g.reshape(1, -1)

    def tri(x: Tensor) -> Tensor:
        return (x - torch.floor(x) - 0.5).abs()

    if name == "vgrad":  # [R, 1]: lighter at the top
        t = 1.08 - 0.16 * (gy + 1.0) / 2.0
    elif name in ("hatch1", "hatch2"):
        period = max(0.045, 3.0 * pw)
        s = (gx + gy) if name == "hatch1" else (gx - gy)
        dist = (0.5 - tri(s * 0.7071 / period)) * period
        t = (0.5 + (0.2 * period - dist) / pw).clamp(0.0, 1.0)
    elif name in ("dots_face", "dots_bg"):
        period = max(0.055, 4.0 * pw) if name == "dots_face" else max(0.09, 5.0 * pw)
        u, v = (gx + gy) * 0.7071 / period, (gx - gy) * 0.7071 / period
        dist = torch.sqrt(tri(u) ** 2 + tri(v) ** 2) * period
        radius = (0.27 if name == "dots_face" else 0.22) * period
        t = (0.5 - (dist - radius) / pw).clamp(0.0, 1.0)
    elif name == "grain":
        cell = max(0.02, 1.2 * pw)
        t = 0.6 * _value_noise(R, cell, 11) + 0.4 * _value_noise(R, 2.3 * cell, 12)
    elif name == "wash":  # [3, R, R]: one low-frequency pigment density per channel
        t = torch.stack(
            [
                0.5 * _value_noise(R, 0.35, 21 + c) + 0.3 * _value_noise(R, 0.17, 31 + c) + 0.2 * _value_noise(R, 0.08, 41 + c)
                for c in range(3)
            ]
        )
    elif name == "vignette":
        t = (1.0 - 0.28 * (gx * gx + gy * gy)).clamp(0.0, 1.0)
    else:  # pragma: no cover - internal
        raise KeyError(name)
    out = t.to(torch.float32).to(device).contiguous()
    _TEX_CACHE[key] = out
    return out


# ------------------------------------------------------------------------------------------- styles
@dataclass
class Step:
    """How a style draws one part. Colours are float64 ``[N, C]`` (or ``[C]``) until ``finalize``."""

    color: Tensor
    opacity: float = 1.0
    soft: float | None = None  # anti-aliasing width in head-local units (None: one pixel)
    dilate: float = 0.0  # grow the part by this much (head-local units)
    stroke: float | None = None  # outline half width (head-local units), drawn after the fill
    stroke_color: Tensor | None = None
    multiply: bool = False  # darken by ``opacity * alpha`` instead of painting (shadows)
    color2: Tensor | None = None  # with ``pattern``: colour = color + (color2 - color) * texture
    pattern: str | None = None


@dataclass
class StyleSpec:
    channels: int
    background: Tensor  # [N, C]
    bg_kind: str  # "gradient" | "flat" | "dots"
    steps: dict[str, Step]
    light: float = 0.0
    post: Callable[[Scene, Tensor], Tensor] | None = None

    def finalize(self, n: int, device: torch.device) -> StyleSpec:
        """Converts every colour to float32 ``[N, C, 1, 1]`` on ``device`` (once per render)."""

        def conv(c: Tensor | None) -> Tensor | None:
            if c is None:
                return None
            c = c.to(torch.float64)
            if c.ndim == 1:
                c = c.reshape(1, -1).expand(n, -1)
            return c.to(torch.float32).reshape(n, -1, 1, 1).to(device).contiguous()

        for st in self.steps.values():
            st.color = conv(st.color)  # type: ignore[assignment]
            st.color2 = conv(st.color2)
            st.stroke_color = conv(st.stroke_color if st.stroke_color is not None else torch.zeros(self.channels))
        self.background = conv(self.background)  # type: ignore[assignment]
        return self


def _grey(c: Tensor) -> Tensor:
    return _lum(c)


def _pop(c: Tensor) -> Tensor:
    """Pop-art colour: hue snapped to 12 steps, saturation boosted, value posterised to 4 levels."""
    h, s, v = rgb_to_hsv(c.clamp(0.0, 1.0))
    h = torch.round(h * 12.0) / 12.0
    s = (s * 1.7 + 0.15).clamp(0.0, 1.0)
    v = (torch.round(v * 3.0) / 3.0).clamp(0.0, 1.0)
    return hsv_to_rgb(h, s, v)


def _desat(c: Tensor, amount: float) -> Tensor:
    return c + (_lum(c) - c) * amount


def _rgb(*v: float) -> Tensor:
    return torch.tensor(v, dtype=torch.float64)


def _style_spec(style: str, pw: float, dec: dict[str, Tensor], col: dict[str, Tensor]) -> StyleSpec:
    """Colours and drawing options of a style (``pw``: pixel width in head-local units)."""
    skin, hair = col["skin"], col["hair"]
    n = skin.shape[0]
    if style in ("photo", "watercolor", "zombie", "pixelart"):
        if style == "watercolor":
            paper = _rgb(0.98, 0.96, 0.91)
            tone: Callable[[Tensor], Tensor] = lambda c: c * 0.68 + paper * 0.32  # noqa: E731
        else:
            tone = lambda c: c  # noqa: E731
        if style == "zombie":
            zskin = _mix(skin, (0.50, 0.66, 0.44), 0.72) * 0.88
            zhair = _desat(hair, 0.7) * 0.7
            col = dict(col)
            col.update(
                brows=_desat(col["brows"], 0.7) * 0.6,
                eye=_mix(col["eye"], (0.9, 0.9, 0.85), 0.45),
                lips=_mix(zskin, (0.25, 0.08, 0.15), 0.75),
                clothing=_desat(col["clothing"], 0.6) * 0.55,
                white=col["white"] * _rgb(0.92, 0.88, 0.62),
                mouth_in=col["mouth_in"] * 0.4,
                teeth=col["teeth"] * _rgb(0.8, 0.76, 0.52),
                hat=_desat(col["hat"], 0.5) * 0.7,
            )
            skin, hair = zskin, zhair
        steps: dict[str, Step] = {
            "back_hair": Step(tone(hair * 0.78)),
            "neck": Step(tone(skin * 0.8)),
            "clothing": Step(tone(col["clothing"])),
            "ears": Step(tone(skin * 0.93)),
            "face": Step(tone(skin)),
            "hair_shadow": Step(tone(skin * 0.55), opacity=0.35, soft=0.035),
            "paint_cheeks": Step(tone(col["paint"])),
            "paint_forehead": Step(tone(col["paint"])),
            "nose": Step(tone(skin * 0.68), opacity=0.5, soft=0.025),
            "eye_line": Step(tone(col["dark"])),
            "eye_white": Step(tone(col["white"])),
            "iris": Step(tone(col["eye"])),
            "pupil": Step(tone(col["pupil"])),
            "glint": Step(col["white"], opacity=0.9),
            "brows": Step(tone(col["brows"])),
            "lips": Step(tone(col["lips"])),
            "mouth_in": Step(tone(col["mouth_in"])),
            "teeth": Step(tone(col["teeth"])),
            "lens": Step(col["lens"], opacity=0.28),
            "frames": Step(tone(col["frames"]) if style != "watercolor" else col["frames"] * 0.8 + 0.1),
            "front_hair": Step(tone(hair)),
            "hat": Step(tone(col["hat"])),
            "hat_band": Step(tone(col["black"] + 0.08)),
        }
        blush = _rgb(0.95, 0.45, 0.45).expand(n, 3)
        if style == "photo":
            steps["bg_shadow"] = Step(col["black"], opacity=0.22, soft=0.14, multiply=True)
            steps["blush"] = Step(blush, opacity=0.16, soft=0.06)
            return StyleSpec(3, col["bg"], "gradient", steps, light=0.22)
        if style == "watercolor":
            soft = max(1.5 * pw, 0.03)
            for st in steps.values():
                st.soft = max(st.soft or 0.0, soft)
            steps["blush"] = Step(tone(blush), opacity=0.3, soft=0.06)
            del steps["glint"]
            bg = _mix(col["bg"], (0.98, 0.96, 0.91), 0.6)
            return StyleSpec(3, bg, "flat", steps, light=0.1, post=_post_watercolor)
        if style == "zombie":
            steps["bg_shadow"] = Step(col["black"], opacity=0.4, soft=0.14, multiply=True)
            steps["sockets"] = Step(_rgb(0.20, 0.15, 0.20), opacity=0.8, soft=0.05)
            steps["scar"] = Step(_rgb(0.40, 0.06, 0.10), opacity=0.9)
            steps["eye_line"] = Step(_rgb(0.80, 0.06, 0.06), dilate=0.012)
            steps["pupil"].color = _rgb(0.30, 0.08, 0.08)
            steps["glint"].opacity = 0.4
            steps["lens"].opacity = 0.2
            steps["hair_shadow"].opacity = 0.5
            steps["nose"].opacity = 0.65
            bg = hsv_to_rgb(dec["background_hue"], 0.3, 0.16 + 0.22 * dec["background_brightness"])
            bg = _mix(bg, (0.12, 0.18, 0.1), 0.4)
            return StyleSpec(3, bg, "gradient", steps, light=0.35, post=_post_zombie)
        # pixelart: flat colours, dark one-pixel outline around the silhouette, thickened features
        outline = _rgb(0.10, 0.07, 0.12)
        for name in ("back_hair", "neck", "clothing", "ears", "face", "front_hair", "hat"):
            steps[name].stroke = 0.5 * pw
            steps[name].stroke_color = outline
        for name, grow in (("eye_white", 0.2), ("iris", 0.3), ("pupil", 0.1), ("brows", 0.35), ("lips", 0.3)):
            steps[name].dilate = grow * pw
        steps["mouth_in"].dilate = 0.35 * pw
        steps["frames"].dilate = 0.4 * pw
        steps["eye_line"].dilate = 0.1 * pw
        for name in ("hair_shadow", "glint", "lens", "nose"):
            del steps[name]
        return StyleSpec(3, col["bg"], "flat", steps, light=0.0, post=_post_pixelart)
    if style == "sketch":
        paper = 0.97
        hw = max(0.011, 0.42 * pw)
        graphite = _rgb(0.22)
        g_hair = 0.38 + 0.55 * _grey(hair)

        def grey(v: float) -> Tensor:
            return torch.full((n, 1), v, dtype=torch.float64)

        def st(c: Tensor, stroke: bool = True, **kw) -> Step:
            return Step(c, stroke=hw if stroke else None, stroke_color=graphite, **kw)

        steps = {
            "back_hair": st(g_hair * 0.9),
            "neck": st(grey(0.96)),
            "clothing": st(0.78 + 0.18 * _grey(col["clothing"])),
            "ears": st(grey(0.96)),
            "face": st(grey(paper)),
            "hair_shadow": st(grey(0.7), stroke=False, opacity=0.3, soft=0.03),
            "paint_cheeks": st(grey(0.6)),
            "paint_forehead": st(grey(0.6)),
            "nose": st(grey(0.62), stroke=False, opacity=0.5, soft=0.02),
            "eye_line": st(grey(0.22), stroke=False),
            "eye_white": st(grey(1.0), stroke=False),
            "iris": st(0.25 + 0.45 * _grey(col["eye"]), stroke=False),
            "pupil": st(grey(0.06), stroke=False),
            "glint": st(grey(1.0), stroke=False),
            "brows": st(0.15 + 0.3 * _grey(col["brows"]), stroke=False),
            "lips": st(grey(0.7)),
            "mouth_in": st(grey(0.22), stroke=False),
            "teeth": st(grey(1.0), stroke=False),
            "frames": st(grey(0.1), stroke=False),
            "front_hair": st(g_hair),
            "hat": st(grey(0.55)),
            "hat_band": st(grey(0.25)),
        }
        return StyleSpec(1, grey(paper), "flat", steps, light=0.3, post=_post_sketch)
    if style == "popart":
        black = col["black"]
        hw = max(0.018, 0.6 * pw)
        pskin = _pop(skin)
        white = _rgb(1.0, 1.0, 1.0)

        def st(c: Tensor, stroke: bool = True, **kw) -> Step:
            return Step(c, stroke=hw if stroke else None, stroke_color=black, **kw)

        phair = _pop(hair)
        steps = {
            "back_hair": st(phair * 0.75),
            "neck": st(pskin * 0.85),
            "clothing": st(_pop(col["clothing"])),
            "ears": st(pskin),
            "face": st(pskin, color2=pskin * 0.72 + _rgb(0.25, 0.0, 0.02), pattern="dots_face"),
            "paint_cheeks": st(_pop(col["paint"])),
            "paint_forehead": st(_pop(col["paint"])),
            "eye_line": st(black, stroke=False),
            "eye_white": st(white, stroke=False),
            "iris": st(_pop(col["eye"]), stroke=False),
            "pupil": st(black, stroke=False),
            "glint": st(white, stroke=False),
            "brows": st(black, stroke=False),
            "lips": st(_rgb(0.95, 0.08, 0.2)),
            "mouth_in": st(_rgb(0.35, 0.0, 0.05), stroke=False),
            "teeth": st(white, stroke=False),
            "frames": st(black, stroke=False),
            "front_hair": st(phair),
            "hat": st(_pop(col["hat"])),
            "hat_band": st(black, stroke=False),
        }
        bgc = hsv_to_rgb(dec["background_hue"], 0.9, 1.0)
        return StyleSpec(3, bgc, "dots", steps, light=0.0)
    raise ValueError(f"unknown style {style!r}")  # pragma: no cover - validated earlier


# ------------------------------------------------------------------------------------------- compositing
def _alpha(scene: Scene, layer: Layer, soft: float | None, dilate: float, opacity: float) -> Tensor:
    width = scene.pw if soft is None else max(soft, scene.pw)
    k = layer.scale * (-1.0 / width)
    b = 0.5 - (layer.offset - dilate) * (1.0 / width)
    a = layer.field * k
    a.add_(b).clamp_(0.0, 1.0)
    op = layer.opacity
    if not (isinstance(op, float) and op == 1.0):
        a.mul_(op)
    if opacity != 1.0:
        a.mul_(opacity)
    return a


def _canonical_alpha(scene: Scene, name: str) -> Tensor:
    key = "alpha:" + name
    if key not in scene._cache:
        scene._cache[key] = _alpha(scene, scene.layer(name), None, 0.0, 1.0)
    return scene._cache[key]  # type: ignore[return-value]


def _gated_off(scene: Scene, name: str) -> bool:
    gate = GATES.get(name)
    return gate is not None and not bool((scene.raw(gate) > 0).any())


def _over(C: Tensor, win: tuple[int, int, int, int], alpha: Tensor, color: Tensor, scratch: Tensor) -> None:
    """``C = C * (1 - alpha) + color * alpha`` inside a window.

    Separate mul/add kernels (no fused multiply-add), so each pixel is computed the same way
    whatever the batch; alpha = 1 gives exactly ``color`` and alpha = 0 exactly ``C``.
    """
    r0, r1, c0, c1 = win
    view = C[:, :, r0:r1, c0:c1]
    n, ch, h, w = view.shape
    a = alpha.unsqueeze(1)
    view.mul_(1.0 - a)
    tmp = scratch[: n * ch * h * w].view(n, ch, h, w)
    torch.mul(color, a, out=tmp)
    view.add_(tmp)


def _step_alpha(scene: Scene, name: str, step: Step) -> Tensor:
    if step.soft is None and step.dilate == 0.0 and step.opacity == 1.0:
        return _canonical_alpha(scene, name)
    return _alpha(scene, scene.layer(name), step.soft, step.dilate, step.opacity)


def composite(scene: Scene, spec: StyleSpec, sl: slice, scratch: Tensor) -> Tensor:
    """Draws the style's parts back to front for the faces ``sl``; returns [n, C, R, R] (not clamped)."""
    R = scene.R
    bg = spec.background[sl]
    shadow = spec.steps.get("bg_shadow")
    if shadow is not None:
        a = _step_alpha(scene, "bg_shadow", shadow)  # full window
        fieldv = (1.0 - a).unsqueeze(1)
        if spec.bg_kind == "gradient":
            fieldv.mul_(texture("vgrad", R, scene.device).reshape(1, 1, R, 1))
        C = bg * fieldv
    elif spec.bg_kind == "gradient":
        C = (bg * texture("vgrad", R, scene.device).reshape(1, 1, R, 1)).expand(-1, -1, R, R).contiguous()
    elif spec.bg_kind == "dots":
        C = bg + (1.0 - bg) * (texture("dots_bg", R, scene.device) * 0.55)
    else:
        C = bg.expand(-1, -1, R, R).contiguous()
    fig_t = torch.ones(scene.n, R, R, device=scene.device) if spec.light else None
    for name in ORDER:
        step = spec.steps.get(name)
        if step is None or name == "bg_shadow" or _gated_off(scene, name):
            continue
        layer = scene.layer(name)
        win = window(R, layer.win)
        a = _step_alpha(scene, name, step)
        r0, r1, c0, c1 = win
        if step.multiply:
            C[:, :, r0:r1, c0:c1].mul_((1.0 - a).unsqueeze(1))
            continue
        color = step.color[sl]
        if step.pattern is not None:
            pat = texture(step.pattern, R, scene.device)[r0:r1, c0:c1]
            color = color + (step.color2[sl] - color) * pat  # type: ignore[index]
        _over(C, win, a, color, scratch)
        if fig_t is not None and layer.figure:
            fig_t[:, r0:r1, c0:c1].mul_(1.0 - a)
        if step.stroke is not None:
            d = layer.distance()
            d.sub_(step.dilate).abs_()
            s = d.mul_(-1.0 / scene.pw).add_(0.5 + step.stroke / scene.pw).clamp_(0.0, 1.0)
            if not (isinstance(layer.opacity, float) and layer.opacity == 1.0):
                s.mul_(layer.opacity)
            _over(C, win, s, step.stroke_color[sl], scratch)  # type: ignore[index]
    if fig_t is not None:
        lin = scene.lighting("full")
        fig_t.sub_(1.0).mul_(-spec.light)  # light * figure
        lin.mul_(fig_t).add_(1.0)
        C.mul_(lin.unsqueeze(1))
    return C


def masks(scene: Scene) -> dict[str, Tensor]:
    """Soft visible-part masks [n, 1, R, R]; they sum to 1 except under tinted lenses."""
    R = scene.R
    T = torch.ones(scene.n, R, R, device=scene.device)
    out = {name: torch.zeros(scene.n, R, R, device=scene.device) for name in MASK_NAMES}
    for name in reversed(MASK_LAYERS):
        if _gated_off(scene, name):
            continue
        layer = scene.layer(name)
        r0, r1, c0, c1 = window(R, layer.win)
        a = _canonical_alpha(scene, name)
        tv = T[:, r0:r1, c0:c1]
        w = a * tv
        out[layer.group][:, r0:r1, c0:c1].add_(w)  # type: ignore[index]
        if layer.occludes:
            tv.sub_(w)
    out["background"].add_(T)
    return {k: v.clamp_(0.0, 1.0).unsqueeze(1) for k, v in out.items()}


# ------------------------------------------------------------------------------------------- post-processing
def _box_blur(x: Tensor, radius: int) -> Tensor:
    """Separable box blur with replicate padding (explicit shifted sums: batch-independent)."""
    if radius <= 0:
        return x.clone()
    H, W = x.shape[-2:]
    p = torch.nn.functional.pad(x, (radius, radius, radius, radius), mode="replicate")
    acc = p[..., :, 0:W].clone()
    for k in range(1, 2 * radius + 1):
        acc.add_(p[..., :, k : k + W])
    p2 = acc
    acc = p2[..., 0:H, :].clone()
    for k in range(1, 2 * radius + 1):
        acc.add_(p2[..., k : k + H, :])
    return acc.mul_(1.0 / (2 * radius + 1) ** 2)


def _post_sketch(scene: Scene, C: Tensor) -> Tensor:
    R = scene.R
    h1 = texture("hatch1", R, scene.device)
    h2 = texture("hatch2", R, scene.device)
    dark = (1.0 - C).clamp_(0.0, 1.0)
    out = C - h1 * dark.clamp(max=0.5) * 0.5
    out.sub_(h2 * (dark - 0.35).clamp_(0.0, 0.5) * 0.6)
    out.mul_(texture("grain", R, scene.device) * 0.06 + 0.94)
    return out.clamp_(0.0, 1.0).expand(-1, 3, -1, -1).contiguous()


def _desat_img(C: Tensor, amount: float) -> Tensor:
    lum = C[:, 0:1] * 0.299 + C[:, 1:2] * 0.587 + C[:, 2:3] * 0.114
    return C + (lum - C) * amount


def _post_zombie(scene: Scene, C: Tensor) -> Tensor:
    C = _desat_img(C, 0.25)
    C.mul_(torch.tensor((0.9, 1.0, 0.86), device=C.device).reshape(1, 3, 1, 1))
    C.mul_(texture("vignette", scene.R, scene.device))
    return C


def _post_watercolor(scene: Scene, C: Tensor) -> Tensor:
    R = scene.R
    radius = max(1, round(0.022 * 1.2 / (2.0 / R)))
    B = _box_blur(C, radius)
    diff = (C - B).abs_()
    edge = diff[:, 0:1] + diff[:, 1:2] + diff[:, 2:3]
    out = C.mul_(0.4).add_(B * 0.6)
    out.mul_((1.0 - edge * 0.9).clamp_(min=0.5))  # pigment pools at the edges of washes
    out.mul_(texture("wash", R, scene.device) * 0.2 + 0.9)
    out.mul_(texture("grain", R, scene.device) * 0.1 + 0.92)
    return out


def _post_pixelart(scene: Scene, C: Tensor) -> Tensor:
    pal = torch.tensor(PIXEL_PALETTE, dtype=torch.float32, device=C.device)  # [K, 3]
    sq = (C.unsqueeze(1) - pal.reshape(1, -1, 3, 1, 1)).square_()  # [n, K, 3, h, w]
    dist = sq[:, :, 0] + sq[:, :, 1] + sq[:, :, 2]  # [n, K, h, w]
    idx = dist.argmin(1)  # [n, h, w]
    return pal[idx].permute(0, 3, 1, 2).contiguous()


# ------------------------------------------------------------------------------------------- public API
def _check_style(style: object) -> str:
    if not isinstance(style, str):
        raise TypeError(f"style must be a str, one of {', '.join(STYLES)}; got {type(style).__name__}")
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; valid styles: {', '.join(STYLES)}")
    return style


def _check_resolution(resolution: object) -> int:
    if isinstance(resolution, bool) or not isinstance(resolution, int):
        raise TypeError(f"resolution must be an int >= 8, got {type(resolution).__name__}")
    if resolution < 8:
        raise ValueError(f"resolution must be >= 8 pixels, got {resolution}")
    return resolution


def sprite_resolution(resolution: int) -> int:
    """Resolution at which ``pixelart`` is drawn before nearest-neighbour upsampling."""
    return min(32, max(8, resolution // 2))


def _chunk_size(resolution: int) -> int:
    """Faces per chunk: ~64K pixels per intra-op thread keeps the working set in the L2 cache.

    The chunking never changes the result (every pixel is computed independently).
    """
    return max(1, 65536 * min(8, torch.get_num_threads()) // (resolution * resolution))


def render(
    params: FaceParams, *, style: str = "photo", resolution: int = 64, return_masks: bool = False
) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
    """Renders faces.

    Deterministic: the same parameters give bit-identical images on the CPU, whatever the batch
    (a face rendered alone equals its row in a batch). Every style draws the same geometry.

    Args:
        params (`FaceParams`): the faces (see `sample_params`, `z_to_params`).
        style (`str`, defaults to `"photo"`): one of `STYLES`.
        resolution (`int`, defaults to 64): output size in pixels (any int >= 8).
        return_masks (`bool`, defaults to `False`): also return the part masks.

    Returns:
        `torch.Tensor` of shape `[N, 3, R, R]` in `[-1, 1]` (float32, on the parameters' device) or,
        with `return_masks=True`, `(images, masks)` where `masks` maps each of `MASK_NAMES` to a soft
        visible-coverage mask `[N, 1, R, R]` in `[0, 1]` at the render resolution. The masks do not
        depend on the style; they sum to 1 except under tinted glasses lenses, which count both as
        `glasses` and as what is seen through them. Clothing belongs to `background`, a hat to
        `hair`; face paint lies inside `face`.

    Examples:

    ```python
    >>> from refinestyle.data.synthfaces import render, sample_params
    >>> images, masks = render(sample_params(2), style="sketch", resolution=32, return_masks=True)
    >>> images.shape, masks["eyes"].shape
    (torch.Size([2, 3, 32, 32]), torch.Size([2, 1, 32, 32]))
    >>> bool(images.abs().max() <= 1)
    True

    ```
    """
    if not isinstance(params, FaceParams):
        raise TypeError(
            f"params must be a FaceParams (see sample_params / z_to_params), got {type(params).__name__}"
        )
    style = _check_style(style)
    R = _check_resolution(resolution)
    if not isinstance(return_masks, bool):
        raise TypeError(f"return_masks must be a bool, got {type(return_masks).__name__}")
    device = params.device
    N = params.n
    out = torch.empty(N, 3, R, R, device=device)
    mask_out = {k: torch.empty(N, 1, R, R, device=device) for k in MASK_NAMES} if return_masks else None
    if N == 0:
        return (out, mask_out) if mask_out is not None else out  # type: ignore[return-value]
    with torch.no_grad():
        dec = decode(params.to("cpu"))
        values = derive(dec)
        values32 = to_f32(values, device)
        r_img = sprite_resolution(R) if style == "pixelart" else R
        spec = _style_spec(style, 2.0 / r_img / ZOOM, dec, base_colors(dec)).finalize(N, device)
        chunk = _chunk_size(max(r_img, R) if return_masks else r_img)
        scratch = torch.empty(min(chunk, N) * spec.channels * r_img * r_img, device=device)
        up = (torch.arange(R, device=device) * 2 + 1) * r_img // (2 * R) if r_img != R else None
        for i0 in range(0, N, chunk):
            sl = slice(i0, min(N, i0 + chunk))
            v64 = {k: v[sl] for k, v in values.items()}
            v32 = {k: v[sl] for k, v in values32.items()}
            scene = Scene(v64, v32, r_img, device)
            img = composite(scene, spec, sl, scratch)
            if spec.post is not None:
                img = spec.post(scene, img)
            if img.shape[1] == 1:
                img = img.expand(-1, 3, -1, -1)
            if up is not None:
                img = img[:, :, up][:, :, :, up]
            out[sl] = img.clamp(0.0, 1.0).mul_(2.0).sub_(1.0)
            if mask_out is not None:
                mscene = scene if r_img == R else Scene(v64, v32, R, device)
                for k, v in masks(mscene).items():
                    mask_out[k][sl] = v
    if mask_out is not None:
        return out, mask_out
    return out
