"""Face parameters of the SynthFaces world: attributes, priors, sampling and the z <-> params map.

Every attribute is stored as its *prior CDF value* ``u`` in ``[0, 1]``. The prior of each attribute
is uniform in ``u``, so sampling is ``u ~ U(0, 1)`` and the generator latent is ``z = Phi^-1(u)``
(standard normal). Categorical attributes are read from ``u`` by equal-width bins; continuous ones
map ``u`` linearly (or piecewise linearly, for ``smile``) onto a small physical range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Union

import torch
from torch import Tensor

ATTRIBUTES: tuple[str, ...] = (
    "face_width",
    "face_height",
    "jaw_width",
    "skin_tone",
    "hair_style",
    "hair_color",
    "hair_length",
    "eye_size",
    "eye_spacing",
    "eye_color",
    "brow_thickness",
    "brow_tilt",
    "nose_size",
    "mouth_width",
    "smile",
    "glasses",
    "background_hue",
    "background_brightness",
    "clothing_hue",
    "pose_x",
    "pose_y",
    "pose_yaw",
    "pose_tilt",
    "light_angle",
)
"""Names of the latent attributes, in the order of the columns of ``FaceParams.u`` and of ``z``."""

OOD_FIELDS: tuple[str, ...] = ("hat", "face_paint", "exotic_color")
"""Out-of-domain strengths in ``[0, 1]`` (0 = absent). The prior never produces them."""

HAIR_STYLES: tuple[str, ...] = ("short", "long", "bob", "buzz")
HAIR_COLORS: tuple[str, ...] = ("black", "brown", "blond", "red", "grey", "blue")
EYE_COLORS: tuple[str, ...] = ("brown", "blue", "green")

GLASSES_THRESHOLD = 0.6
"""``u_glasses > 0.6`` means the face wears glasses (40% of the prior)."""
GLASSES_FRAME_STEPS = 6
"""Glasses' shape and frame change at ``GLASSES_FRAME_STEPS`` equal steps of u above the threshold."""
SMILE_THRESHOLD = 0.5
"""``u_smile > 0.5`` means the ``smile`` label is 1 (mouth curvature above ~0.25)."""

# Continuous attributes: u -> lo + (hi - lo) * u (physical units of the renderer, image = [-1, 1]^2).
CONTINUOUS_RANGES: dict[str, tuple[float, float]] = {
    "face_width": (0.35, 0.45),  # half width of the face ellipse
    "face_height": (0.45, 0.54),  # half height of the face ellipse
    "jaw_width": (1.8, 0.3),  # jaw narrowing coefficient (large = narrow jaw), decreasing in u
    "hair_length": (0.0, 1.0),
    "eye_size": (0.085, 0.125),  # half width of an eye
    "eye_spacing": (0.15, 0.20),  # distance of each eye from the face's mid line
    "brow_thickness": (0.018, 0.036),
    "brow_tilt": (-0.35, 0.35),  # slope of the brows; positive raises the outer ends
    "nose_size": (0.03, 0.055),
    "mouth_width": (0.09, 0.15),  # half width of the mouth
    "background_hue": (0.0, 1.0),
    "background_brightness": (0.5, 0.95),
    "clothing_hue": (0.0, 1.0),
    "pose_x": (-0.08, 0.08),  # horizontal shift of the head
    "pose_y": (-0.05, 0.05),  # vertical shift of the head
    "pose_yaw": (-1.0, 1.0),  # pseudo yaw: inner features slide sideways
    "pose_tilt": (-0.08, 0.08),  # roll as t = tan(angle / 2): about +-9 degrees
    "light_angle": (-1.2, 1.2),  # horizontal component of the light direction (light comes from above)
}

# smile: piecewise linear, steep around the label threshold so that the two classes look different.
SMILE_KNOTS: tuple[tuple[float, ...], tuple[float, ...]] = ((0.0, 0.45, 0.55, 1.0), (-0.6, 0.05, 0.45, 1.0))

_INDEX: dict[str, int] = {name: i for i, name in enumerate(ATTRIBUTES)}

SeedLike = Union[int, torch.Generator]


def _as_float_tensor(name: str, value: object, n: int | None, device: torch.device | None) -> Tensor:
    """Validates a per-face vector (or broadcastable scalar) and returns it as float32 ``[n]``."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a float tensor or a number, got bool")
    if isinstance(value, (int, float)):
        if n is None:
            raise TypeError(f"{name} must be a tensor of shape [N], got a scalar")
        value = torch.full((n,), float(value), device=device)
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape [N] (float), got {type(value).__name__}")
    if not value.is_floating_point():
        raise TypeError(f"{name} must have a floating point dtype, got {value.dtype}; use .float()")
    if value.ndim == 0 and n is not None:
        value = value.reshape(1).expand(n)
    if value.ndim != 1 or (n is not None and value.shape[0] != n):
        want = f"[{n}]" if n is not None else "[N]"
        raise ValueError(f"{name} must have shape {want} (one value per face), got {list(value.shape)}")
    value = value.to(torch.float32)
    if device is not None:
        value = value.to(device)
    if not bool(torch.isfinite(value).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    if value.numel() and (float(value.min()) < 0.0 or float(value.max()) > 1.0):
        raise ValueError(f"{name} has values outside [0, 1] (0 = absent, 1 = full strength); clamp it")
    return value.contiguous()


@dataclass(frozen=True, eq=False)
class FaceParams:
    """A batch of SynthFaces parameters.

    Args:
        u (`torch.Tensor` of shape `[N, len(ATTRIBUTES)]`):
            Each column is one attribute (see `ATTRIBUTES`) as its prior CDF value in `[0, 1]`.
            Any floating dtype is accepted and stored as float32.
        hat (`torch.Tensor` of shape `[N]`, *optional*):
            Out-of-domain hat strength (opacity) in `[0, 1]`; 0 (the default) means no hat.
        face_paint (`torch.Tensor` of shape `[N]`, *optional*):
            Out-of-domain face paint strength in `[0, 1]`; 0 (the default) means none.
        exotic_color (`torch.Tensor` of shape `[N]`, *optional*):
            Out-of-domain recolouring strength in `[0, 1]`: skin and hair are pushed toward vivid hues
            that the prior's skin and hair palettes never produce (values outside the prior). 0 = none.

    Examples:

    ```python
    >>> import torch
    >>> from refinestyle.data.synthfaces import ATTRIBUTES, FaceParams, sample_params
    >>> p = FaceParams(u=torch.full((2, len(ATTRIBUTES)), 0.5))
    >>> p.n, p.get("glasses").tolist()
    (2, [0.5, 0.5])
    >>> p.replace(glasses=1.0).get("glasses").tolist()
    [1.0, 1.0]
    >>> sample_params(8, seed=1)[2:4].n
    2

    ```
    """

    u: Tensor
    hat: Tensor | None = None
    face_paint: Tensor | None = None
    exotic_color: Tensor | None = field(default=None)

    def __post_init__(self) -> None:
        u = self.u
        if not isinstance(u, Tensor):
            raise TypeError(f"FaceParams.u must be a torch.Tensor of shape [N, {len(ATTRIBUTES)}], got {type(u).__name__}")
        if not u.is_floating_point():
            raise TypeError(f"FaceParams.u must have a floating point dtype, got {u.dtype}; use .float()")
        if u.ndim != 2 or u.shape[1] != len(ATTRIBUTES):
            raise ValueError(
                f"FaceParams.u must have shape [N, {len(ATTRIBUTES)}] (one column per attribute in ATTRIBUTES), "
                f"got {list(u.shape)}"
            )
        u = u.to(torch.float32).contiguous()
        if not bool(torch.isfinite(u).all()):
            bad = (~torch.isfinite(u)).any(0).nonzero().flatten().tolist()
            names = ", ".join(ATTRIBUTES[i] for i in bad)
            raise ValueError(f"FaceParams.u contains NaN or infinite values (attributes: {names})")
        if u.numel():
            out = ((u < 0) | (u > 1)).any(0)
            if bool(out.any()):
                names = ", ".join(ATTRIBUTES[i] for i in out.nonzero().flatten().tolist())
                raise ValueError(
                    f"attribute {names} has values outside [0, 1]; FaceParams.u holds prior CDF values: "
                    "use z_to_params for latents or clamp"
                )
        object.__setattr__(self, "u", u)
        n = u.shape[0]
        for name in OOD_FIELDS:
            value = getattr(self, name)
            if value is None:
                value = torch.zeros(n, device=u.device)
            else:
                value = _as_float_tensor(f"FaceParams.{name}", value, n, u.device)
            object.__setattr__(self, name, value)

    @property
    def n(self) -> int:
        """Number of faces."""
        return self.u.shape[0]

    @property
    def device(self) -> torch.device:
        return self.u.device

    def __len__(self) -> int:
        return self.n

    def get(self, name: str) -> Tensor:
        """The `[N]` values of one attribute (its `u` column) or of an out-of-domain field."""
        if name in _INDEX:
            return self.u[:, _INDEX[name]]
        if name in OOD_FIELDS:
            return getattr(self, name)
        raise KeyError(f"unknown attribute {name!r}; valid names: {', '.join(ATTRIBUTES + OOD_FIELDS)}")

    def replace(self, **values: Tensor | float) -> FaceParams:
        """A new `FaceParams` with some attributes (u values) or out-of-domain fields replaced.

        Values are numbers (broadcast to all faces) or `[N]` tensors in `[0, 1]`.
        """
        u = self.u.clone()
        ood = {name: getattr(self, name) for name in OOD_FIELDS}
        for name, value in values.items():
            if name in _INDEX:
                u[:, _INDEX[name]] = _as_float_tensor(name, value, self.n, self.device)
            elif name in OOD_FIELDS:
                ood[name] = _as_float_tensor(name, value, self.n, self.device)
            else:
                raise KeyError(f"unknown attribute {name!r}; valid names: {', '.join(ATTRIBUTES + OOD_FIELDS)}")
        return FaceParams(u=u, **ood)

    def to(self, device: torch.device | str) -> FaceParams:
        return FaceParams(u=self.u.to(device), **{k: getattr(self, k).to(device) for k in OOD_FIELDS})

    def __getitem__(self, index: int | slice | Tensor | list[int]) -> FaceParams:
        if isinstance(index, int):
            if not -self.n <= index < self.n:
                raise IndexError(f"index {index} out of range for {self.n} faces")
            index = slice(index % self.n, index % self.n + 1)
        return FaceParams(u=self.u[index], **{k: getattr(self, k)[index] for k in OOD_FIELDS})

    @staticmethod
    def cat(items: list[FaceParams]) -> FaceParams:
        """Concatenates batches of parameters."""
        if not items:
            raise ValueError("FaceParams.cat needs at least one FaceParams")
        return FaceParams(
            u=torch.cat([p.u for p in items]), **{k: torch.cat([getattr(p, k) for p in items]) for k in OOD_FIELDS}
        )

    def is_out_of_domain(self) -> Tensor:
        """`[N]` bool: whether any out-of-domain field is non-zero."""
        return (self.hat > 0) | (self.face_paint > 0) | (self.exotic_color > 0)


def _check_seed(seed: SeedLike) -> torch.Generator:
    if isinstance(seed, torch.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int or a torch.Generator, got {type(seed).__name__}")
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


def sample_params(n: int, *, seed: SeedLike = 0, out_of_domain: bool = False) -> FaceParams:
    """Samples `n` faces from the prior: `u ~ Uniform(0, 1)^len(ATTRIBUTES)`.

    Args:
        n (`int`): number of faces (>= 0).
        seed (`int` or `torch.Generator`, defaults to 0): a seed, or a CPU generator to draw from.
        out_of_domain (`bool`, defaults to `False`):
            Also draw out-of-domain features that the prior never produces. Every face gets one of
            a hat, face paint or an exotic (out-of-palette) skin and hair colour, and about 30% a second
            one, each with strength in `[0.8, 1]`. The attributes `u` are the same as with
            `out_of_domain=False` and the same seed, so the in-domain version of each face is known.

    Returns:
        `FaceParams` on the CPU.

    Examples:

    ```python
    >>> from refinestyle.data.synthfaces import sample_params
    >>> p = sample_params(4, seed=0)
    >>> p.u.shape, bool(p.hat.eq(0).all())
    (torch.Size([4, 24]), True)
    >>> q = sample_params(4, seed=0, out_of_domain=True)
    >>> bool((q.u == p.u).all()), bool(q.is_out_of_domain().all())
    (True, True)

    ```
    """
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n must be an int, got {type(n).__name__}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    gen = _check_seed(seed)
    u = torch.rand(n, len(ATTRIBUTES), generator=gen)
    if not out_of_domain:
        return FaceParams(u=u)
    first = torch.randint(0, 3, (n,), generator=gen)
    has_second = torch.rand(n, generator=gen) < 0.3
    second = (first + torch.randint(1, 3, (n,), generator=gen)) % 3
    strength = 0.8 + 0.2 * torch.rand(n, 3, generator=gen)
    chosen = torch.nn.functional.one_hot(first, 3).bool() | (
        torch.nn.functional.one_hot(second, 3).bool() & has_second[:, None]
    )
    ood = torch.where(chosen, strength, torch.zeros(()))
    return FaceParams(u=u, hat=ood[:, 0], face_paint=ood[:, 1], exotic_color=ood[:, 2])


def z_to_params(z: Tensor) -> FaceParams:
    """Maps generator latents to face parameters: `u = Phi(z)` (standard normal CDF), per column.

    Args:
        z (`torch.Tensor` of shape `[N, len(ATTRIBUTES)]`): latents, any real values.

    Examples:

    ```python
    >>> import torch
    >>> from refinestyle.data.synthfaces import ATTRIBUTES, params_to_z, z_to_params
    >>> z = torch.randn(3, len(ATTRIBUTES), generator=torch.Generator().manual_seed(0))
    >>> torch.allclose(params_to_z(z_to_params(z)), z, atol=1e-4)
    True

    ```
    """
    if not isinstance(z, Tensor):
        raise TypeError(f"z must be a torch.Tensor of shape [N, {len(ATTRIBUTES)}], got {type(z).__name__}")
    if not z.is_floating_point():
        raise TypeError(f"z must have a floating point dtype, got {z.dtype}")
    if z.ndim != 2 or z.shape[1] != len(ATTRIBUTES):
        raise ValueError(f"z must have shape [N, {len(ATTRIBUTES)}] (one column per attribute), got {list(z.shape)}")
    if not bool(torch.isfinite(z).all()):
        raise ValueError("z contains NaN or infinite values")
    z64 = z.detach().to(torch.float64)
    u = 0.5 * torch.special.erfc(-z64 / math.sqrt(2.0))
    return FaceParams(u=u.to(torch.float32).clamp_(0.0, 1.0))


def params_to_z(params: FaceParams) -> Tensor:
    """Inverse of `z_to_params`: `z = Phi^-1(u)` with `u` clamped to `[1e-6, 1 - 1e-6]` first.

    Out-of-domain fields (hat, face paint, exotic colour) have no latent and are dropped.

    Returns:
        `torch.Tensor` of shape `[N, len(ATTRIBUTES)]`, float32, on the parameters' device.

    Examples:

    ```python
    >>> from refinestyle.data.synthfaces import params_to_z, sample_params
    >>> params_to_z(sample_params(2)).shape
    torch.Size([2, 24])

    ```
    """
    if not isinstance(params, FaceParams):
        raise TypeError(f"params must be a FaceParams, got {type(params).__name__}")
    return _normal_icdf(params.u.to(torch.float64).clamp(1e-6, 1.0 - 1e-6)).to(torch.float32)


def _normal_icdf(u: Tensor) -> Tensor:
    """Phi^-1(u): the z of a prior quantile (float64 in, float64 out)."""
    return math.sqrt(2.0) * torch.special.erfinv(2.0 * u - 1.0)


def _bins(u: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Equal-width bins of ``u``: (class index [N] long, position inside the bin [N] in [0, 1])."""
    x = u * k
    idx = torch.floor(x).clamp_(0, k - 1)
    return idx.long(), (x - idx).clamp_(0.0, 1.0)


def _piecewise(u: Tensor, xs: tuple[float, ...], ys: tuple[float, ...]) -> Tensor:
    out = torch.full_like(u, ys[0])
    for x0, x1, y0, y1 in zip(xs[:-1], xs[1:], ys[:-1], ys[1:]):
        seg = y0 + (y1 - y0) * (u - x0) / (x1 - x0)
        out = torch.where(u >= x0, seg, out)
    return out


def categorical_z_edges() -> dict[str, list[float]]:
    """Where each attribute that the renderer draws by category jumps, in z units (sorted edges).

    The renderer bins u = Φ(z): eye colour, hair style and hair colour in equal-width bins of u, glasses
    on above ``GLASSES_THRESHOLD`` with shape and frame changing in ``GLASSES_FRAME_STEPS`` steps above it.
    A generator sees these as one-hot inputs (``StyleGAN2Generator(z_bins=...)``), since its image jumps
    there too.

    Examples:

    ```python
    >>> from refinestyle.data.synthfaces import categorical_z_edges
    >>> [round(e, 4) for e in categorical_z_edges()["eye_color"]]
    [-0.4307, 0.4307]

    ```
    """
    def z_of(u: float) -> float:
        return _normal_icdf(torch.tensor(u, dtype=torch.float64)).item()

    edges = {name: [z_of(k / len(classes)) for k in range(1, len(classes))]
             for name, classes in (("hair_style", HAIR_STYLES), ("hair_color", HAIR_COLORS), ("eye_color", EYE_COLORS))}
    steps = [GLASSES_THRESHOLD + (1.0 - GLASSES_THRESHOLD) * k / GLASSES_FRAME_STEPS for k in range(GLASSES_FRAME_STEPS)]
    edges["glasses"] = [z_of(u) for u in steps]
    return edges


def decode(params: FaceParams) -> dict[str, Tensor]:
    """Physical values of every attribute (float64 `[N]` tensors; class indices as long).

    Continuous attributes are in renderer units (see `CONTINUOUS_RANGES`), `smile` is the mouth
    curvature in `[-0.6, 1]`, categorical ones are class indices with a `<name>_shade` in `[0, 1]`
    (the position inside the class bin, used for small shade variations). `glasses_on` is 0/1,
    `glasses_shape` is 0 (round) or 1 (rectangular).
    """
    if not isinstance(params, FaceParams):
        raise TypeError(f"params must be a FaceParams, got {type(params).__name__}")
    u = params.u.to(torch.float64)
    out: dict[str, Tensor] = {}
    for name, (lo, hi) in CONTINUOUS_RANGES.items():
        out[name] = lo + (hi - lo) * u[:, _INDEX[name]]
    out["skin_tone"] = u[:, _INDEX["skin_tone"]]
    out["hair_style"], out["hair_style_shade"] = _bins(u[:, _INDEX["hair_style"]], len(HAIR_STYLES))
    out["hair_color"], out["hair_color_shade"] = _bins(u[:, _INDEX["hair_color"]], len(HAIR_COLORS))
    out["eye_color"], out["eye_color_shade"] = _bins(u[:, _INDEX["eye_color"]], len(EYE_COLORS))
    out["smile"] = _piecewise(u[:, _INDEX["smile"]], *SMILE_KNOTS)
    g = u[:, _INDEX["glasses"]]
    out["glasses_on"] = (g > GLASSES_THRESHOLD).to(torch.float64)
    r = ((g - GLASSES_THRESHOLD) / (1.0 - GLASSES_THRESHOLD)).clamp(0.0, 1.0)
    out["glasses_shape"] = (r > 0.5).to(torch.float64)
    out["glasses_frame"] = torch.floor(r * GLASSES_FRAME_STEPS).remainder(3.0)
    for name in OOD_FIELDS:
        out[name] = getattr(params, name).to(torch.float64)
    return out


def attribute_labels(params: FaceParams) -> dict[str, Tensor]:
    """Discrete labels read from the parameters (`[N]` long tensors).

    Keys: `glasses` (0/1), `smile` (0/1), `eye_color` (index into `EYE_COLORS`), `hair_style`
    (index into `HAIR_STYLES`), `hair_color` (index into `HAIR_COLORS`), and the out-of-domain
    flags `hat`, `face_paint`, `exotic_color` (1 when the strength is above 0.5).

    Examples:

    ```python
    >>> from refinestyle.data.synthfaces import attribute_labels, sample_params
    >>> labels = attribute_labels(sample_params(5, seed=0))
    >>> sorted(labels)[:3], labels["glasses"].dtype
    (['exotic_color', 'eye_color', 'face_paint'], torch.int64)

    ```
    """
    if not isinstance(params, FaceParams):
        raise TypeError(f"params must be a FaceParams, got {type(params).__name__}")
    u = params.u
    labels = {
        "glasses": (u[:, _INDEX["glasses"]] > GLASSES_THRESHOLD).long(),
        "smile": (u[:, _INDEX["smile"]] > SMILE_THRESHOLD).long(),
        "eye_color": _bins(u[:, _INDEX["eye_color"]].double(), len(EYE_COLORS))[0],
        "hair_style": _bins(u[:, _INDEX["hair_style"]].double(), len(HAIR_STYLES))[0],
        "hair_color": _bins(u[:, _INDEX["hair_color"]].double(), len(HAIR_COLORS))[0],
    }
    for name in OOD_FIELDS:
        labels[name] = (getattr(params, name) > 0.5).long()
    return labels
