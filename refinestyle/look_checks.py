"""Hand-written checks of what a person sees in each SynthFaces style (evaluation only).

Each out-of-domain style of the SynthFaces renderer (``refinestyle/data/synthfaces/_render.py``) has a defining
look, written down here from the renderer's own definition, and a deterministic check of it on ``[N, 3, 64, 64]``
images in ``[-1, 1]``. Every check returns ``(passed, score)``: one bool per image and the score it came from.

- ``sketch``: one grey channel copied to RGB (``StyleSpec(1, ...)``: no colour at all) with diagonal graphite
  hatching (``hatch1`` / ``hatch2``: lines of a 3-pixel period at +-45 degrees). Measured: the mean RGB spread
  (max - min) must be near 0, and the amplitude at the hatch frequency along both diagonals high.
- ``pixelart``: drawn at ``sprite_resolution(64) = 32`` pixels and upsampled nearest-neighbour, so every 2x2
  block on the even grid is one constant colour. Measured: the variation inside the blocks relative to the
  variation between neighbouring blocks (0 for the renderer) must be low.
- ``popart``: halftone dots (``dots_bg``: a lattice at 45 degrees with a 5-pixel period) on flat, saturated colours
  (``_pop``: saturation boosted, value posterised; background at saturation 0.9). Measured: mean HSV saturation
  and the RGB amplitude at the dot lattice's frequency must both be high.
- ``zombie``: green skin (skin mixed 72% towards (0.50, 0.66, 0.44), then tinted by (0.9, 1.0, 0.86)) in the face
  region. Measured: the share of pixels, in a fixed window over cheeks, nose and mouth (every SynthFaces face is
  centred), whose green exceeds red and blue.
- ``watercolor``: soft edges (every part drawn with a soft edge, then 60% blurred) over paper texture (the
  ``wash`` and ``grain`` textures multiply every pixel, background included). Measured: fine texture (the
  residual after a 3x3 blur) in the top corners must be present and the sharpest edges (99th percentile of
  neighbour luma steps) soft.

A check's score is the smallest of its margins (measured / threshold for a lower bound, threshold / measured for an
upper bound), so ``score >= 1`` passes every condition; the score says how far from passing an image is.

Thresholds were set once from renderer images of the TRAINING seeds ``TRAIN_SEEDS`` (all six styles); the checks
are evaluated on other seeds (``bench/look_checks.py``, ``tests/test_look_checks.py``).

These checks are evaluation only: they are never a loss, never a guide, and never used to choose among runs,
steps, strengths or hyperparameters. They measure whether a generated image has a style's look as a person would
see it, independently of the CLIPs and of the attribute/style classifier.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["CHECKS", "CONDITIONS", "LOOKS", "TRAIN_SEEDS", "check", "check_all", "features", "margins"]

TRAIN_SEEDS: tuple[int, ...] = (0, 1, 2, 3)
"""Seeds of ``sample_params(100, seed=s)`` whose renders set the thresholds (held-out evaluation uses others)."""

LOOKS: dict[str, str] = {
    "sketch": "grey levels only (no colour) and diagonal pencil hatching",
    "pixelart": "constant 2x2 blocks on the 32-pixel sprite grid",
    "popart": "halftone dots and saturated colours",
    "zombie": "green skin in the face region",
    "watercolor": "soft edges over paper texture",
}
"""The defining look of each style, from the renderer's definition."""

# Thresholds, set from renderer images of TRAIN_SEEDS (400 faces per style; ``bench/look_checks.py --calibrate``
# prints the training distributions): each lies between the style's own training range and every other style's.
SKETCH_MAX_SPREAD = 0.015  # mean per-pixel RGB max - min; renderer sketch 0 exactly, other styles >= 0.033
SKETCH_MIN_HATCH = 0.014  # amplitude at the hatch frequency; sketch >= 0.022, photo <= 0.009
PIXELART_MAX_INSIDE = 0.2  # in-block / between-block variation; renderer pixelart 0 exactly, others >= 0.40
POPART_MIN_SATURATION = 0.55  # mean HSV saturation; popart >= 0.63, photo <= 0.51
POPART_MIN_DOTS = 0.088  # RGB amplitude at the halftone frequency; popart >= 0.107, photo/pixelart <= 0.070
ZOMBIE_MIN_GREEN = 0.33  # share of green pixels in the face window; zombie >= 0.51, others <= 0.21
WATERCOLOR_MIN_PAPER = 0.003  # fine texture in the top corners; watercolor >= 0.0068, photo/zombie <= 0.0001
WATERCOLOR_MAX_SHARP = 0.32  # 99th percentile of neighbour luma steps; watercolor <= 0.28, popart >= 0.35


def _to01(images: Tensor) -> Tensor:
    if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be a [N, 3, H, W] tensor in [-1, 1], got {getattr(images, 'shape', type(images))}")
    return ((images.detach().to("cpu", torch.float64) + 1.0) / 2.0).clamp(0.0, 1.0)


def _luma(x: Tensor) -> Tensor:
    return x[:, 0] * 0.299 + x[:, 1] * 0.587 + x[:, 2] * 0.114


def _spread(x: Tensor) -> Tensor:
    """Per-pixel ``max - min`` over RGB, ``[N, H, W]``."""
    return x.max(1).values - x.min(1).values


def _saturation(x: Tensor) -> Tensor:
    """Per-pixel HSV saturation, ``[N, H, W]``."""
    mx = x.max(1).values
    return torch.where(mx > 0, _spread(x) / mx.clamp(min=1e-6), torch.zeros_like(mx))


def _diag_amplitude(img: Tensor, k: float, width: float = 1.5) -> Tensor:
    """Amplitude of ``img`` [N, H, W] near the diagonal frequencies (+-k, +-k) (cycles per image), ``[N]``."""
    n, h, w = img.shape
    f = torch.fft.fft2(img - img.mean((1, 2), keepdim=True))
    p = f.real.square() + f.imag.square()
    fy = torch.fft.fftfreq(h, d=1.0 / h, dtype=torch.float64).reshape(-1, 1) * (64.0 / h)
    fx = torch.fft.fftfreq(w, d=1.0 / w, dtype=torch.float64).reshape(1, -1) * (64.0 / w)
    near = torch.zeros(h, w, dtype=torch.bool)
    for sy in (-1.0, 1.0):
        for sx in (-1.0, 1.0):
            near |= ((fy - sy * k).square() + (fx - sx * k).square()) <= width * width
    return (p * near).sum((1, 2)).sqrt() / (h * w)


def _residual(img: Tensor) -> Tensor:
    """``|img - 3x3 box blur|`` of ``[N, H, W]`` (replicate padding)."""
    p = torch.nn.functional.pad(img.unsqueeze(1), (1, 1, 1, 1), mode="replicate")
    return (img - torch.nn.functional.avg_pool2d(p, 3, stride=1).squeeze(1)).abs()


def _at_least(value: Tensor, threshold: float) -> Tensor:
    return value / threshold


def _at_most(value: Tensor, threshold: float) -> Tensor:
    return threshold / value.clamp(min=threshold * 0.01)  # capped at 100


def _score(*margins: Tensor) -> Tensor:
    """All conditions at once: the smallest margin (>= 1 passes every condition)."""
    return torch.stack(margins).min(0).values


# hatch lines: period max(0.045, 3 px) across the line, i.e. 3 * sqrt(2) pixels along x + y at 64 px
_HATCH_K = 64.0 / (3.0 * 2**0.5)
# dots_bg: lattice period max(0.09, 5 px) on 45-degree axes -> 64 / (5 sqrt 2) cycles along each diagonal
_DOTS_K = 64.0 / (5.0 * 2**0.5)


def features(images: Tensor) -> dict[str, Tensor]:
    """The measured quantities behind every check, ``[N]`` float64 each (images ``[N, 3, H, W]`` in [-1, 1])."""
    x = _to01(images)
    n, c, h, w = x.shape
    lum = _luma(x)
    out = {"spread": _spread(x).mean((1, 2)), "saturation": _saturation(x).mean((1, 2))}
    out["hatch"] = _diag_amplitude(lum, _HATCH_K)
    out["dots"] = sum(_diag_amplitude(x[:, i], _DOTS_K) for i in range(3))  # type: ignore[assignment]
    # pixel-art: 2x2 blocks on the even grid (sprite_resolution(64) = 32)
    b = x[:, :, : h // 2 * 2, : w // 2 * 2].reshape(n, c, h // 2, 2, w // 2, 2)
    mean = b.mean((3, 5), keepdim=True)
    inside = (b - mean).abs().mean((1, 2, 3, 4, 5))
    m = mean.reshape(n, c, h // 2, w // 2)
    between = 0.5 * ((m[:, :, 1:] - m[:, :, :-1]).abs().mean((1, 2, 3)) + (m[..., 1:] - m[..., :-1]).abs().mean((1, 2, 3)))
    out["blocks_inside"] = inside / between.clamp(min=1e-6)
    # zombie: green pixels (green above red and blue by 0.02) in the face window (cheeks, nose, mouth)
    win = x[:, :, int(0.45 * h) : int(0.68 * h), int(0.33 * w) : int(0.67 * w)]
    r, g, bl = win.unbind(1)
    out["green_face"] = ((g - torch.maximum(r, bl)) > 0.02).to(torch.float64).mean((1, 2))
    # watercolor: paper texture in the top corners, and the sharpest edges
    cs = max(2, h // 8)
    res = _residual(lum)
    out["paper"] = torch.cat([res[:, 1:cs, 1:cs].flatten(1), res[:, 1:cs, w - cs : w - 1].flatten(1)], 1).mean(1)
    d = torch.cat([(lum[:, 1:] - lum[:, :-1]).abs().flatten(1), (lum[:, :, 1:] - lum[:, :, :-1]).abs().flatten(1)], 1)
    out["sharp"] = torch.quantile(d, 0.99, dim=1)
    return out


CONDITIONS: dict[str, tuple[tuple[str, str, float], ...]] = {
    "sketch": (("spread", "max", SKETCH_MAX_SPREAD), ("hatch", "min", SKETCH_MIN_HATCH)),
    "pixelart": (("blocks_inside", "max", PIXELART_MAX_INSIDE),),
    "popart": (("saturation", "min", POPART_MIN_SATURATION), ("dots", "min", POPART_MIN_DOTS)),
    "zombie": (("green_face", "min", ZOMBIE_MIN_GREEN),),
    "watercolor": (("paper", "min", WATERCOLOR_MIN_PAPER), ("sharp", "max", WATERCOLOR_MAX_SHARP)),
}
"""style -> its conditions ``(feature, "min" | "max", threshold)``: the feature must reach (min) or stay under (max)."""

CHECKS: tuple[str, ...] = tuple(CONDITIONS)
"""The styles with a check (every SynthFaces style but ``photo``)."""


def margins(style: str, images: Tensor, feats: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
    """Each condition's margin ``[N]`` for ``style`` (>= 1: the condition holds), keyed by feature name."""
    if style not in CONDITIONS:
        raise ValueError(f"no look check for style {style!r}; checks exist for: {', '.join(CHECKS)}")
    f = features(images) if feats is None else feats
    return {name: (_at_least if kind == "min" else _at_most)(f[name], thr) for name, kind, thr in CONDITIONS[style]}


def check(style: str, images: Tensor, feats: dict[str, Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """``(passed [N] bool, score [N] float64)``: whether each image has ``style``'s look (see ``LOOKS``).

    ``feats`` (from ``features(images)``) saves recomputing the measurements when several checks run on the
    same images.

    Examples:

    ```py
    >>> from refinestyle.data.synthfaces import render, sample_params
    >>> from refinestyle.look_checks import check
    >>> images = render(sample_params(4, seed=7), style="sketch", resolution=64)
    >>> passed, score = check("sketch", images)
    >>> passed.tolist()
    [True, True, True, True]
    >>> check("pixelart", images)[0].tolist()
    [False, False, False, False]

    ```
    """
    score = _score(*margins(style, images, feats).values())
    return score >= 1.0, score


def check_all(images: Tensor) -> dict[str, tuple[Tensor, Tensor]]:
    """Every style's check on the same images (measured once)."""
    feats = features(images)
    return {style: check(style, images, feats) for style in CHECKS}
