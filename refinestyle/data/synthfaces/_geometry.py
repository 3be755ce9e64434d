"""Geometry of a SynthFaces face: signed-distance-like fields of every part on a pixel grid.

All per-pixel work uses only correctly rounded float32 operations (add, mul, div, abs, min, max,
clamp, where), so a face renders bit-identically whatever batch it is in: no transcendental
function ever touches a pixel, and per-face scalars are computed in float64 with exact operations
before being rounded to float32.

Coordinates: the image is ``[-1, 1]^2`` (pixel centres), ``x`` to the right, ``y`` down. Parts are
described in *head-local* coordinates (origin at the head centre, rotated by the head's roll).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Union

import torch
from torch import Tensor

from ._params import CONTINUOUS_RANGES

HEAD_Y = -0.06  # head centre (world y) before pose
ZOOM = 1.2  # head-local units -> world units

Scalar = Union[float, Tensor]  # float or per-face [n, 1, 1] float32

# Head-local bounding boxes (x0, x1, y0, y1) of the parts drawn in each window, measured over the
# whole parameter range (including extreme and out-of-domain values) with a 0.015 safety band; the
# window margin adds soft edges, strokes and anti-aliasing. tests/test_synthfaces.py checks that a
# full-frame render is bit-identical.
_LOCAL_BOXES: dict[str, tuple[float, float, float, float] | None] = {
    "full": None,
    "head": (-0.53, 0.53, -0.64, 0.57),  # face, ears, front hair, hair shadow, sockets
    "hat": (-0.68, 0.68, -0.74, -0.24),
    "eyes": (-0.545, 0.545, -0.31, 0.12),  # eyes, brows, glasses, forehead paint
    "lower": (-0.43, 0.43, 0.03, 0.38),  # nose, mouth, blush, cheek paint, scar
    "neck": (-0.21, 0.21, 0.11, 1.75),
    "body": (-0.77, 0.77, 0.62, 1.75),
}

_GRID_CACHE: dict[tuple[int, str], tuple[Tensor, Tensor]] = {}
_WINDOW_CACHE: dict[tuple[int, str], tuple[int, int, int, int]] = {}


def grid(resolution: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Pixel-centre coordinates ``(gx [R], gy [R])`` in ``[-1, 1]``, cached per resolution and device."""
    key = (resolution, str(device))
    if key not in _GRID_CACHE:
        if len(_GRID_CACHE) > 32:
            _GRID_CACHE.clear()
        g = (torch.arange(resolution, dtype=torch.float64) * 2.0 + 1.0) / resolution - 1.0
        g = g.to(torch.float32).to(device)
        _GRID_CACHE[key] = (g, g)
    return _GRID_CACHE[key]


def _pose_bounds() -> tuple[float, float, float, float, float]:
    t = max(abs(v) for v in CONTINUOUS_RANGES["pose_tilt"])
    smax = 2.0 * t / (1.0 + t * t)
    cmin = (1.0 - t * t) / (1.0 + t * t)
    px = max(abs(v) for v in CONTINUOUS_RANGES["pose_x"])
    py0, py1 = CONTINUOUS_RANGES["pose_y"]
    return smax, cmin, px, HEAD_Y + py0, HEAD_Y + py1


def window(resolution: int, name: str) -> tuple[int, int, int, int]:
    """Pixel window ``(r0, r1, c0, c1)`` that contains every pixel a part drawn in ``name`` can touch."""
    key = (resolution, name)
    if key in _WINDOW_CACHE:
        return _WINDOW_CACHE[key]
    box = _LOCAL_BOXES[name]
    if box is None:
        win = (0, resolution, 0, resolution)
    else:
        x0, x1, y0, y1 = box
        smax, cmin, px, hy0, hy1 = _pose_bounds()
        ymax, xmax = max(abs(y0), abs(y1)), max(abs(x0), abs(x1))
        # world offset from the head centre: (c X - s Y, s X + c Y), c in [cmin, 1], |s| <= smax
        wx0 = ZOOM * (min(x0, cmin * x0) - smax * ymax) - px
        wx1 = ZOOM * (max(x1, cmin * x1) + smax * ymax) + px
        wy0 = ZOOM * (min(y0, cmin * y0) - smax * xmax) + hy0
        wy1 = ZOOM * (max(y1, cmin * y1) + smax * xmax) + hy1
        # a part grows by at most 0.03 head-local units (soft edges, strokes or dilation, never
        # combined) plus anti-aliasing and stroke widths in pixels
        margin = ZOOM * 0.035 + 2.0 * 2.0 / resolution

        def rng(lo: float, hi: float) -> tuple[int, int]:
            i0 = math.floor((lo - margin + 1.0) * resolution / 2.0 - 0.5)
            i1 = math.ceil((hi + margin + 1.0) * resolution / 2.0 - 0.5) + 1
            return max(0, i0), min(resolution, i1)

        r0, r1 = rng(wy0, wy1)
        c0, c1 = rng(wx0, wx1)
        win = (r0, r1, c0, c1)
    _WINDOW_CACHE[key] = win
    return win


@dataclass
class Layer:
    """One part: signed distance ``d = field * scale + offset`` (normalised units, < 0 inside)."""

    name: str
    group: str | None  # mask it belongs to (None: decoration, not part of any mask)
    win: str
    field: Tensor  # [n, h, w]
    scale: Scalar = 1.0
    offset: Scalar = 0.0
    opacity: Scalar = 1.0
    occludes: bool = True  # in the mask computation
    figure: bool = False  # part of the lit silhouette

    def distance(self) -> Tensor:
        d = self.field * self.scale
        return d.add_(self.offset)


def _c(x: Tensor) -> Tensor:
    """float64 [n] -> float32 [n, 1, 1]."""
    return x.to(torch.float32).reshape(-1, 1, 1)


def _tri(x: Tensor) -> Tensor:
    """Triangle wave |frac(x) - 0.5| in [0, 0.5] (distance to the nearest half-integer lattice)."""
    t = x - torch.floor(x)
    return t.sub_(0.5).abs_()


def _thin_ellipse_d(A: Tensor, B: Tensor, rx: Scalar, ry: Scalar) -> Tensor:
    """Distance estimate ``(Q - 1) / |grad Q|`` of an ellipse from ``A = (x/rx)^2``, ``B = (y/ry)^2``.

    Accurate at the boundary whatever the eccentricity (unlike ``(Q - 1) r / 2``). Consumes A and B.
    """
    q = A + B
    A.mul_(1.0 / (rx * rx))
    B.mul_(1.0 / (ry * ry))
    g = A.add_(B).sqrt_().mul_(2.0)
    return q.sub_(1.0).div_(g)


def _max(*ts: Tensor) -> Tensor:
    out = ts[0]
    for t in ts[1:]:
        out = torch.maximum(out, t)
    return out


def derive(d: dict[str, Tensor]) -> dict[str, Tensor]:
    """Per-face geometry scalars (float64 [n]) from decoded parameters (see ``decode``)."""
    a, b = d["face_width"], d["face_height"]
    s = d["smile"]
    rx = d["eye_size"]
    ry = 0.62 * rx
    sp = d["eye_spacing"]
    v = {
        "a": a,
        "b": b,
        "jaw": d["jaw_width"],
        "ey": -0.08 * b,
        "ny": 0.22 * b,
        "my": 0.5 * b + 0.02,
        "fx": 0.06 * d["pose_yaw"],
        "nx": 0.085 * d["pose_yaw"],
        "rx": rx,
        "ry": ry,
        "ri": 0.8 * ry,
        "rp": 0.8 * 0.42 * ry,
        "sp": sp,
        "by": -0.08 * b - ry - 0.07,
        "bL": 0.095 + 0.5 * (rx - 0.1),
        "bT": d["brow_thickness"],
        "tilt": d["brow_tilt"],
        "la": torch.minimum(rx + 0.045, sp - 0.03),
        "lb": ry + 0.045,
        "smile": s,
        "mw": d["mouth_width"] * (1.0 + 0.12 * s.clamp(min=0.0)),
        "open": ((s - 0.45) / 0.45).clamp(0.0, 1.0),
        "ns": d["nose_size"],
        "nw": 0.42 * a,
    }
    # pose: roll from t = tan(angle / 2) with exact rational formulas
    t = d["pose_tilt"]
    v["cos"] = (1.0 - t * t) / (1.0 + t * t) / ZOOM
    v["sin"] = 2.0 * t / (1.0 + t * t) / ZOOM
    v["hx"] = d["pose_x"]
    v["hy"] = HEAD_Y + d["pose_y"]
    lx = d["light_angle"]
    norm = torch.sqrt(1.0 + lx * lx)
    v["Lx"], v["Ly"] = lx / norm, -1.0 / norm
    v["shadow_cx"] = -0.07 * v["Lx"]
    v["shadow_cy"] = 0.02 - 0.07 * v["Ly"]
    v["nose_cx"] = v["nx"] - 0.012 * v["Lx"]
    # hair style tables: short, long, bob, buzz
    hs = d["hair_style"]
    length = d["hair_length"]

    def tab(*vals: float) -> Tensor:
        return torch.tensor(vals, dtype=torch.float64, device=hs.device)[hs]

    top = -(b + tab(0.05, 0.05, 0.07, 0.0))
    bottom = tab(0.25, 1.3, 0.6, 0.25)
    v["bh_on"] = tab(1.0, 1.0, 1.0, 0.0)
    v["bh_cy"] = 0.5 * (top + bottom)
    v["bh_ry"] = 0.5 * (bottom - top)
    v["bh_rx"] = a + tab(0.05, 0.11, 0.13, 0.05)
    v["bh_cut"] = tab(0.02, 0.35, 0.24, 0.0) + length * tab(0.0, 0.55, 0.12, 0.0)
    vol = tab(0.04, 0.035, 0.06, 0.012)
    v["fh_rx"] = a + vol
    v["fh_ry"] = b + vol
    v["fh_base"] = b * tab(-0.6, -0.64, -0.55, -0.66) + 0.05 * (length - 0.5) * tab(1.0, 1.0, 0.5, 0.0)
    v["fh_slope"] = tab(0.15, 0.0, 0.0, 0.0) * torch.where(d["hair_style_shade"] > 0.5, 1.0, -1.0)
    v["fh_k2"] = tab(1.4, 2.5, 0.8, 0.9)
    v["fh_wave"] = tab(0.0, 0.0, 0.018, 0.0)
    v["fh_op"] = tab(1.0, 1.0, 1.0, 0.8)
    v["glasses_on"] = d["glasses_on"]
    v["glasses_rect"] = d["glasses_shape"]
    v["hat"] = d["hat"]
    v["face_paint"] = d["face_paint"]
    return v



def to_f32(values: dict[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    return {k: _c(v).to(device) for k, v in values.items() if v.is_floating_point()}


class Scene:
    """Per-chunk geometry: decoded parameters of ``n`` faces and lazily computed part fields."""

    def __init__(self, values: dict[str, Tensor], values32: dict[str, Tensor], resolution: int, device: torch.device):
        """``values``: float64 [n] per-face scalars (see ``derive``); ``values32``: the same as float32 [n, 1, 1]."""
        self.R = resolution
        self.pw = 2.0 / resolution / ZOOM  # pixel width in head-local units
        self.device = device
        self._v = values
        self._v32 = values32
        self.n = values["a"].shape[0]
        self._xy: dict[str, tuple[Tensor, Tensor]] = {}
        self._cache: dict[str, object] = {}

    def v(self, name: str) -> Tensor:
        """A per-face scalar as float32 [n, 1, 1]."""
        return self._v32[name]

    def raw(self, name: str) -> Tensor:
        """A per-face scalar as float64 [n]."""
        return self._v[name]

    # ---------------------------------------------------------------- coordinates
    def xy(self, win: str) -> tuple[Tensor, Tensor]:
        """Head-local coordinates ``(X, Y)``, each [n, h, w], of the pixels of a window."""
        if win not in self._xy:
            r0, r1, c0, c1 = window(self.R, win)
            gx, gy = grid(self.R, self.device)
            gx = gx[c0:c1].reshape(1, 1, -1)
            gy = gy[r0:r1].reshape(1, -1, 1)
            c, s, hx, hy = self.v("cos"), self.v("sin"), self.v("hx"), self.v("hy")
            dx = gx - hx  # [n, 1, w]
            dy = gy - hy  # [n, h, 1]
            X = (dx * c) + (dy * s)
            Y = (dy * c) - (dx * s)
            self._xy[win] = (X, Y)
        return self._xy[win]

    def _get(self, key: str, fn) -> object:  # small memo helper
        if key not in self._cache:
            self._cache[key] = fn()
        return self._cache[key]

    def sq(self, win: str) -> tuple[Tensor, Tensor]:
        def f() -> tuple[Tensor, Tensor]:
            X, Y = self.xy(win)
            return X * X, Y * Y

        return self._get("sq:" + win, f)  # type: ignore[return-value]

    def ellipse_q(self, win: str, cx: Tensor | float, cy: Tensor | float, rx: Tensor, ry: Tensor) -> Tensor:
        """``((X - cx) / rx)^2 + ((Y - cy) / ry)^2``."""
        X, Y = self.xy(win)
        u = X - cx if not (isinstance(cx, float) and cx == 0.0) else X.clone()
        u.mul_(1.0 / rx)
        u.mul_(u)
        w = Y - cy if not (isinstance(cy, float) and cy == 0.0) else Y.clone()
        w.mul_(1.0 / ry)
        w.mul_(w)
        return u.add_(w)

    # ---------------------------------------------------------------- parts
    def face_q(self) -> Tensor:
        def f() -> Tensor:
            X, Y = self.xy("head")
            X2, Y2 = self.sq("head")
            a, b = self.v("a"), self.v("b")
            ia2 = 1.0 / (a * a)
            q = Y.clamp(min=0.0)
            q.mul_(self.v("jaw") * ia2).add_(ia2).mul_(X2)
            return q.add_(Y2 * (1.0 / (b * b)))

        return self._get("face_q", f)  # type: ignore[return-value]

    def face_d(self) -> Tensor:
        """Explicit signed distance of the face (head window)."""

        def f() -> Tensor:
            r = 0.5 * self.v("a")
            return (self.face_q() * r).sub_(r)

        return self._get("face_d", f)  # type: ignore[return-value]

    def layer(self, name: str) -> Layer:
        if name not in self._cache:
            self._cache[name] = getattr(self, "_l_" + name)()
        return self._cache[name]  # type: ignore[return-value]

    def _l_bg_shadow(self) -> Layer:
        q = self.ellipse_q("full", self.v("shadow_cx"), self.v("shadow_cy"), self.v("a") + 0.1, self.v("b") + 0.14)
        r = 0.5 * self.v("a")
        return Layer("bg_shadow", None, "full", q, r, -r, occludes=False)

    def _l_back_hair(self) -> Layer:
        q = self.ellipse_q("full", 0.0, self.v("bh_cy"), self.v("bh_rx"), self.v("bh_ry"))
        r = 0.5 * self.v("bh_rx")
        q.mul_(r).sub_(r)
        _, Y = self.xy("full")
        d = torch.maximum(q, Y - self.v("bh_cut"))
        return Layer("back_hair", "hair", "full", d, opacity=self.v("bh_on"), figure=True)

    def _l_neck(self) -> Layer:
        X, Y = self.xy("neck")
        d = X.abs().sub_(self.v("nw"))
        d = torch.maximum(d, (0.3 * self.v("b")) - Y)
        return Layer("neck", "face", "neck", d, figure=True)

    def _l_clothing(self) -> Layer:
        X, Y = self.xy("body")
        X2, _ = self.sq("body")
        w = Y - 1.05
        w.mul_(w).mul_(1.0 / 0.42**2)
        q = (X2 * (1.0 / 0.75**2)).add_(w).sub_(1.0).mul_(0.21)
        nw = 1.25 * self.v("nw")
        w = Y - 0.65
        w.mul_(w).mul_(1.0 / 0.1**2)
        qc = (X2 * (1.0 / (nw * nw))).add_(w).sub_(1.0).mul_(-0.05)
        return Layer("clothing", "background", "body", torch.maximum(q, qc), figure=True)

    def _l_ears(self) -> Layer:
        X, Y = self.xy("head")
        u = X.abs().sub_(0.98 * self.v("a")).mul_(1.0 / 0.055)
        u.mul_(u)
        w = Y - (self.v("ey") + 0.05)
        w.mul_(1.0 / 0.1)
        w.mul_(w)
        return Layer("ears", "face", "head", u.add_(w), 0.0275, -0.0275, figure=True)

    def _l_face(self) -> Layer:
        r = 0.5 * self.v("a")
        return Layer("face", "face", "head", self.face_q(), r, -r, figure=True)

    def _front_hair_parts(self) -> tuple[Tensor, Tensor]:
        def f() -> tuple[Tensor, Tensor]:
            X, Y = self.xy("head")
            X2, _ = self.sq("head")
            q = self.ellipse_q("head", 0.0, -0.02, self.v("fh_rx"), self.v("fh_ry"))
            r = 0.5 * self.v("fh_rx")
            d1 = q.mul_(r).sub_(r)
            # hairline: y < base + slope x + k2 x^2 (+ scalloped bangs)
            d2 = Y - self.v("fh_base")
            d2.sub_(X * self.v("fh_slope")).sub_(X2 * self.v("fh_k2"))
            if bool((self.raw("fh_wave") > 0).any()):
                d2.add_(_tri(X * 9.0).mul_(self.v("fh_wave")))
            d2.mul_(0.8)
            return d1, d2

        return self._get("front_hair_parts", f)  # type: ignore[return-value]

    def _l_front_hair(self) -> Layer:
        d1, d2 = self._front_hair_parts()
        return Layer("front_hair", "hair", "head", torch.maximum(d1, d2), opacity=self.v("fh_op"), figure=True)

    def _l_hair_shadow(self) -> Layer:
        d1, d2 = self._front_hair_parts()
        d = torch.maximum(d1, d2 - 0.035)
        d = torch.maximum(d, self.face_d())
        return Layer("hair_shadow", None, "head", d, opacity=self.v("fh_op"), occludes=False)

    def _l_blush(self) -> Layer:
        X, Y = self.xy("lower")
        u = (X - self.v("fx")).abs_().sub_(self.v("sp") + 0.02).mul_(1.0 / 0.08)
        u.mul_(u)
        w = Y - (self.v("ey") + 0.15)
        w.mul_(1.0 / 0.05)
        w.mul_(w)
        return Layer("blush", None, "lower", u.add_(w), 0.025, -0.025, occludes=False)

    def _l_nose(self) -> Layer:
        ns = self.v("ns")
        q = self.ellipse_q("lower", self.v("nose_cx"), self.v("ny"), 0.8 * ns, ns)
        r = 0.4 * ns
        return Layer("nose", None, "lower", q, r, -r, occludes=False)

    def _eye_coords(self) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        def f() -> tuple[Tensor, ...]:
            X, Y = self.xy("eyes")
            AX = (X - self.v("fx")).abs_()
            EX = AX - self.v("sp")
            EY = Y - self.v("ey")
            return AX, EX, EY, EX * EX, EY * EY

        return self._get("eye_coords", f)  # type: ignore[return-value]

    def _eye_white_d(self) -> Tensor:
        def f() -> Tensor:
            _, _, _, EX2, EY2 = self._eye_coords()
            rx, ry = self.v("rx"), self.v("ry")
            q = (EX2 * (1.0 / (rx * rx))).add_(EY2 * (1.0 / (ry * ry)))
            r = 0.5 * ry
            return q.mul_(r).sub_(r)

        return self._get("eye_white_d", f)  # type: ignore[return-value]

    def _eye_s(self) -> Tensor:
        def f() -> Tensor:
            _, _, _, EX2, EY2 = self._eye_coords()
            return EX2 + EY2

        return self._get("eye_s", f)  # type: ignore[return-value]

    def _l_eye_line(self) -> Layer:
        _, _, EY, EX2, _ = self._eye_coords()
        rx, ry = self.v("rx") + 0.013, self.v("ry") + 0.016
        w = EY + 0.007
        w.mul_(w).mul_(1.0 / (ry * ry))
        q = (EX2 * (1.0 / (rx * rx))).add_(w)
        r = 0.5 * ry
        return Layer("eye_line", "eyes", "eyes", q, r, -r)

    def _l_eye_white(self) -> Layer:
        return Layer("eye_white", "eyes", "eyes", self._eye_white_d())

    def _l_iris(self) -> Layer:
        ri = self.v("ri")
        d = (self._eye_s() * (0.5 / ri)).sub_(0.5 * ri)
        return Layer("iris", "eyes", "eyes", torch.maximum(d, self._eye_white_d()))

    def _l_pupil(self) -> Layer:
        rp = self.v("rp")
        d = (self._eye_s() * (0.5 / rp)).sub_(0.5 * rp)
        return Layer("pupil", "eyes", "eyes", torch.maximum(d, self._eye_white_d()))

    def _l_glint(self) -> Layer:
        _, EX, EY, _, _ = self._eye_coords()
        ri = self.v("ri")
        u = EX + 0.3 * ri
        u.mul_(u)
        w = EY + 0.35 * ri
        w.mul_(w)
        rg = 0.28 * ri
        d = u.add_(w).mul_(0.5 / rg).sub_(0.5 * rg)
        return Layer("glint", "eyes", "eyes", d)

    def _l_sockets(self) -> Layer:
        X, Y = self.xy("head")
        EX = (X - self.v("fx")).abs_().sub_(self.v("sp"))
        EX2 = EX.mul_(EX)
        rx, ry = 1.45 * self.v("rx"), 2.3 * self.v("ry")
        w = Y - self.v("ey") + 0.01
        w.mul_(w).mul_(1.0 / (ry * ry))
        q = (EX2 * (1.0 / (rx * rx))).add_(w)
        r = 0.5 * ry
        return Layer("sockets", None, "head", q, r, -r, occludes=False)

    def _l_brows(self) -> Layer:
        _, EX, EY, EX2, _ = self._eye_coords()
        # across-brow coordinate: centre line y = by - tilt * x + arch * x^2 (x outward from the eye centre)
        q = EY + (self.v("ey") - self.v("by"))
        q.add_(EX * self.v("tilt")).sub_(EX2 * 2.2)
        T, L = self.v("bT"), self.v("bL")
        d = _thin_ellipse_d(EX2 * (1.0 / (L * L)), q.mul_(q).mul_(1.0 / (T * T)), L, T)
        q = EY + (self.v("ey") - self.v("by"))  # keep the (approximate) field within the brow's slab
        return Layer("brows", "brows", "eyes", _max(d, EX.abs().sub_(L), q.abs_().sub_(T + 0.7 * L)))

    def _lens_d(self) -> Tensor:
        def f() -> Tensor:
            _, _, _, EX2, EY2 = self._eye_coords()
            la, lb = self.v("la"), self.v("lb")
            A = EX2 * (1.0 / (la * la))
            B = EY2 * (1.0 / (lb * lb))
            rect = self.v("glasses_rect")
            if bool((self.raw("glasses_rect") > 0).any()):
                q = torch.where(rect > 0, (A * A).add_(B * B), A + B)
            else:
                q = A.add_(B)
            scale = lb * torch.where(rect > 0, 0.25, 0.5)
            return q.mul_(scale).sub_(scale)

        return self._get("lens_d", f)  # type: ignore[return-value]

    def _l_lens(self) -> Layer:
        return Layer("lens", "glasses", "eyes", self._lens_d(), opacity=self.v("glasses_on"), occludes=False)

    def _l_frames(self) -> Layer:
        AX, EX, EY, _, _ = self._eye_coords()
        ft = 0.032
        ring = self._lens_d().abs().sub_(0.5 * ft)
        la, lb, sp = self.v("la"), self.v("lb"), self.v("sp")
        bw = sp - la + 0.01
        bridge = torch.maximum(AX - bw, (EY + 0.012).abs_().sub_(0.5 * ft))
        tlen = (self.v("a") - sp - la + 0.01).clamp(min=0.0)
        temple = torch.maximum((EX - la - 0.5 * tlen).abs_().sub_(0.5 * tlen), (EY + 0.3 * lb).abs_().sub_(0.4 * ft))
        d = torch.minimum(torch.minimum(ring, bridge), temple)
        return Layer("frames", "glasses", "eyes", d, opacity=self.v("glasses_on"))

    def _mouth_coords(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        def f() -> tuple[Tensor, ...]:
            X, Y = self.xy("lower")
            MX = X - self.v("fx")
            XM2 = MX * (1.0 / self.v("mw"))
            XM2.mul_(XM2)
            # centre line: y = my + 0.06 * smile * (0.4 - (x / mw)^2)
            V = Y - self.v("my")
            V.sub_((0.4 - XM2).mul_(0.06 * self.v("smile")))
            return MX.abs_(), XM2, V, V.abs()

        return self._get("mouth_coords", f)  # type: ignore[return-value]

    def _l_lips(self) -> Layer:
        AMX, XM2, _, AV = self._mouth_coords()
        t0 = 0.02 + 0.02 * self.v("open")
        tmin = 0.005
        d = AV - t0
        d.add_(XM2 * (t0 - tmin))
        d = torch.maximum(d, AMX - self.v("mw"))
        return Layer("lips", "mouth", "lower", d)

    def _mouth_in_d(self) -> Tensor:
        def f() -> Tensor:
            AMX, XM2, _, AV = self._mouth_coords()
            ti = 0.009 + 0.03 * self.v("open")
            d = AV - ti
            d.add_(XM2 * (0.9 * ti))
            return torch.maximum(d, AMX - 0.95 * self.v("mw"))

        return self._get("mouth_in_d", f)  # type: ignore[return-value]

    def _l_mouth_in(self) -> Layer:
        return Layer("mouth_in", "mouth", "lower", self._mouth_in_d())

    def _l_teeth(self) -> Layer:
        _, _, V, _ = self._mouth_coords()
        ti = 0.009 + 0.03 * self.v("open")
        d = torch.maximum(self._mouth_in_d(), V + 0.25 * ti)
        return Layer("teeth", "mouth", "lower", d, opacity=(self.v("open") * 3.0).clamp(max=1.0))

    def _l_paint_cheeks(self) -> Layer:
        X, Y = self.xy("lower")
        u = (X - self.v("fx")).abs_().sub_(self.v("sp") + 0.03).mul_(1.0 / 0.11)
        u.mul_(u)
        cy = Y - (self.v("ey") + 0.16)
        w = cy * (1.0 / 0.065)
        w.mul_(w)
        de = u.add_(w).sub_(1.0).mul_(0.0325)
        ds = _tri(cy * (1.0 / 0.045)).mul_(0.045).sub_(0.011)
        return Layer("paint_cheeks", None, "lower", torch.maximum(de, ds), opacity=self.v("face_paint"), occludes=False)

    def _l_paint_forehead(self) -> Layer:
        X, Y = self.xy("eyes")
        d = (X - self.v("fx")).abs_().add_((Y + 0.42 * self.v("b")).abs_()).mul_(0.7071).sub_(0.045)
        return Layer("paint_forehead", None, "eyes", d, opacity=self.v("face_paint"), occludes=False)

    def _hat_parts(self) -> tuple[Tensor, Tensor, Tensor]:
        def f() -> tuple[Tensor, ...]:
            X, Y = self.xy("hat")
            X2, _ = self.sq("hat")
            a, b = self.v("a"), self.v("b")
            yb = -0.7 * b
            rb = a + 0.2
            w = Y - yb
            w.mul_(w).mul_(1.0 / 0.055**2)
            db = _thin_ellipse_d(X2 * (1.0 / (rb * rb)), w, rb, 0.055)
            A = X2 * (1.0 / (0.78 * a) ** 2)
            B = Y - (yb - 0.15)
            B.mul_(B).mul_(1.0 / 0.19**2)
            dc = (A.mul_(A)).add_(B.mul_(B)).sub_(1.0).mul_(0.0475)
            dc = torch.maximum(dc, Y - yb)
            return db, dc, yb

        return self._get("hat_parts", f)  # type: ignore[return-value]

    def _l_hat(self) -> Layer:
        db, dc, _ = self._hat_parts()
        return Layer("hat", "hair", "hat", torch.minimum(db, dc), opacity=self.v("hat"), figure=True)

    def _l_hat_band(self) -> Layer:
        _, dc, yb = self._hat_parts()
        _, Y = self.xy("hat")
        d = torch.maximum(dc, (yb - 0.06) - Y)
        return Layer("hat_band", "hair", "hat", d, opacity=self.v("hat"))

    def _l_scar(self) -> Layer:
        X, Y = self.xy("lower")
        p = X - self.v("fx") + 0.22
        q = Y - (self.v("ey") + 0.2)
        q.sub_(p * 0.35)
        ap = p.abs()
        line = torch.maximum(q.abs().sub_(0.007), ap - 0.1)
        ticks = _max(_tri(p * (1.0 / 0.045)).mul_(0.045).sub_(0.006), q.abs_().sub_(0.026), ap.sub_(0.1))
        return Layer("scar", None, "lower", torch.minimum(line, ticks), occludes=False)

    def lighting(self, win: str = "full") -> Tensor:
        """Linear light ramp over the head, ``clamp(X/a Lx + Y/b Ly, -1, 1)`` [n, h, w]."""
        X, Y = self.xy(win)
        lin = X * (self.v("Lx") / self.v("a"))
        lin.add_(Y * (self.v("Ly") / self.v("b")))
        return lin.clamp_(-1.0, 1.0)
