"""RefineStyle kernel math: the modulated convolution with a low-rank dynamic-kernel residual.

For one layer with static kernel ``W0`` (``[O, I, k, k]``), per-sample styles ``s`` (``[N, I]``) and
a residual given by token matrices ``P`` (``[N, R, O]``) and ``Q`` (``[N, R, I*k*k]``)::

    Wd = s ⊙ W0 + Pᵀ Q                      # [N, O, I, k, k]
    Wd = Wd / sqrt(sum_{i,kh,kw} Wd² + eps)   # demodulation, per sample and output channel

Two computations give the same result:

* ``"materialized"``: build ``Wd`` per sample and run a grouped convolution (StyleGAN2's fused
  modconv). With ``N == 1`` the grouped convolution is an ordinary one, so folding the residual
  into the kernel costs ``O·I·k²·(R+1)`` multiply-adds per layer, whatever the resolution.
* ``"lowrank"``: the unchanged batched convolution of ``x ⊙ s`` with ``W0`` plus a side branch
  ``conv(x, Q)`` (R channels) mixed by ``Pᵀ`` (a 1×1 conv), and the demodulation factor of ``Wd``
  in closed form. It keeps one batched convolution for the whole batch, which beats ``N`` distinct
  kernels once ``N > 1``.

``choose_path`` picks one per call and layer from the shapes only (batch size, channels, resolution,
never the rank), so the plain generator and a refined one with an all-zero residual take the same path
and agree bit for bit (the residual terms then add exact zeros).

Token sets (``TokenSet``) hold ``P``, ``Q`` and a gain per layer, either per image (leading batch
dimension) or shared (a domain). ``combine_residuals`` stacks several weighted sources along the
rank dimension: ``Σ_j a_j · g_j/√K_j · P_jᵀ Q_j = [a_j g_j/√K_j P_j]_jᵀ [Q_j]_j``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, Sequence, Union

import torch
import torch.nn.functional as F

DEMOD_EPS = 1e-8
Path = Literal["auto", "materialized", "lowrank"]
PATHS = ("auto", "materialized", "lowrank")


def choose_path(batch_size: int, *, in_channels: int, out_channels: int, kernel_size: int, height: int, width: int) -> str:
    """The cheaper computation for a layer call, from shapes only (never from the residual's rank).

    Batches take the low-rank path: one batched convolution beats ``N`` per-sample kernels. A single image
    takes the materialised path when building its kernel (``O·I·k²`` values) costs less than modulating the
    activations instead (``(I + O)·H·W``), i.e. at high resolution with few channels; at low resolution
    with many channels the kernel is the larger tensor. Because the choice ignores the rank, the plain
    generator and a refined one with an all-zero residual always take the same path (bit-identical output).
    """
    if batch_size != 1:
        return "lowrank"
    kernel_cost = out_channels * in_channels * kernel_size * kernel_size
    activation_cost = (in_channels + out_channels) * height * width
    return "materialized" if kernel_cost <= activation_cost else "lowrank"


def upfirdn_up2(x: torch.Tensor, filter_2d: torch.Tensor, *, pad: tuple[int, int]) -> torch.Tensor:
    """Depthwise FIR filter of an already zero-stuffed or plain input with symmetric 4x4 ``filter_2d``.

    ``pad`` is (before, after) for both spatial axes. ``filter_2d`` already includes any gain.
    """
    n, c, h, w = x.shape
    x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]])  # [N, C, H+p0+p1, W+p0+p1]
    kernel = filter_2d[None, None].expand(c, 1, *filter_2d.shape).to(x.dtype)  # [C, 1, 4, 4]
    # The filter is symmetric, so correlation (conv2d) equals convolution.
    return F.conv2d(x, kernel, groups=c)


def upsample2x(x: torch.Tensor, filter_2d: torch.Tensor) -> torch.Tensor:
    """StyleGAN2's 2x FIR upsampling: zero-stuff, pad (2, 1), filter with ``filter_2d * 4``."""
    n, c, h, w = x.shape
    stuffed = x.new_zeros(n, c, h * 2, w * 2)  # [N, C, 2H, 2W]
    stuffed[:, :, ::2, ::2] = x
    return upfirdn_up2(stuffed, filter_2d * 4, pad=(2, 1))


def _conv(x: torch.Tensor, weight: torch.Tensor, *, up: bool, groups: int) -> torch.Tensor:
    """3x3 (or 1x1) cross-correlation, or StyleGAN2's stride-2 transposed conv when ``up``.

    ``weight`` is ``[groups*O, I, k, k]`` in conv2d layout either way.
    """
    if not up:
        k = weight.shape[-1]
        return F.conv2d(x, weight, padding=k // 2, groups=groups)
    go, i, k, _ = weight.shape
    o = go // groups
    # conv_transpose2d wants [groups*I, O, k, k]; the stored kernel is used unflipped.
    w_t = weight.reshape(groups, o, i, k, k).transpose(1, 2).reshape(groups * i, o, k, k)  # [G*I, O, k, k]
    return F.conv_transpose2d(x, w_t, stride=2, groups=groups)


def _shape_error(name: str, expected: str, got: torch.Tensor) -> ValueError:
    return ValueError(f"modulated_conv2d: {name} must be {expected}, got {list(got.shape)}")


def _check_shapes(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor,
                  residual_p: torch.Tensor | None, residual_q: torch.Tensor | None) -> None:
    """Raise a ValueError naming the argument whose shape disagrees with the others (as NVlabs asserts its inputs).

    Without it a mismatch surfaces as a reshape or conv error deep inside, naming no argument. Integer
    comparisons only: it runs on every layer of every forward.
    """
    if x.dim() != 4:
        raise _shape_error("x", "[N, I, H, W]", x)
    n, i = x.shape[0], x.shape[1]
    if weight.dim() != 4 or weight.shape[1] != i or weight.shape[2] != weight.shape[3]:
        raise _shape_error("weight", f"[O, I={i}, k, k] (I from x)", weight)
    o, k = weight.shape[0], weight.shape[2]
    if styles.dim() != 2 or styles.shape[0] != n or styles.shape[1] != i:
        raise _shape_error("styles", f"[N, I] = [{n}, {i}] (from x)", styles)
    if residual_p is not None and (residual_p.dim() != 3 or residual_p.shape[0] != n or residual_p.shape[2] != o):
        raise _shape_error("residual_p", f"[N, R, O] = [{n}, R, {o}] (N from x, O from weight)", residual_p)
    if residual_q is not None:
        r = residual_p.shape[1] if residual_p is not None else None
        if (residual_q.dim() != 3 or residual_q.shape[0] != n or residual_q.shape[2] != i * k * k
                or (r is not None and residual_q.shape[1] != r)):
            want = f"[N, R, I*k*k] = [{n}, {'R' if r is None else r}, {i * k * k}] (N from x, R from residual_p, I*k*k from weight)"
            raise _shape_error("residual_q", want, residual_q)


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    *,
    demodulate: bool = True,
    up: bool = False,
    resample_filter: torch.Tensor | None = None,
    residual_p: torch.Tensor | None = None,
    residual_q: torch.Tensor | None = None,
    path: str = "auto",
) -> torch.Tensor:
    """Modulated (and demodulated) convolution with an optional low-rank kernel residual.

    Args:
        x: input activations ``[N, I, H, W]``.
        weight: static kernel ``W0`` ``[O, I, k, k]``.
        styles: per-sample input-channel scales ``s`` ``[N, I]`` (any weight gain already applied).
        demodulate: normalise each output channel of the dynamic kernel to unit norm.
        up: 2x upsampling (transposed stride-2 conv followed by the FIR filter ``resample_filter``).
        resample_filter: the normalised 4x4 FIR filter (sum 1); required when ``up``.
        residual_p: ``P`` ``[N, R, O]`` (already scaled), or None for no residual.
        residual_q: ``Q`` ``[N, R, I*k*k]``, or None.
        path: ``"auto"``, ``"materialized"`` or ``"lowrank"``.

    Returns:
        ``[N, O, H', W']`` with ``H' = 2H`` when ``up`` else ``H``.
    """
    _check_shapes(x, weight, styles, residual_p, residual_q)
    n, i, h, w = x.shape
    o, _, k, _ = weight.shape
    if path == "auto":
        path = choose_path(n, in_channels=i, out_channels=o, kernel_size=k, height=h, width=w)
    if path not in ("materialized", "lowrank"):
        raise ValueError(f"path must be one of {PATHS}, got {path!r}")
    if up and resample_filter is None:
        raise ValueError("up=True needs resample_filter")
    has_residual = residual_p is not None
    if has_residual != (residual_q is not None):
        raise ValueError("residual_p and residual_q must be given together")

    if path == "materialized":
        kernel = weight[None] * styles[:, None, :, None, None]  # [N, O, I, k, k]
        if has_residual:
            delta = torch.bmm(residual_p.transpose(1, 2), residual_q)  # [N, O, I*k*k]
            kernel = kernel + delta.reshape(n, o, i, k, k)  # [N, O, I, k, k]
        if demodulate:
            dcoefs = (kernel.square().sum(dim=[2, 3, 4]) + DEMOD_EPS).rsqrt()  # [N, O]
            kernel = kernel * dcoefs[:, :, None, None, None]  # [N, O, I, k, k]
        y = _conv(x.reshape(1, n * i, h, w), kernel.reshape(n * o, i, k, k), up=up, groups=n)  # [1, N*O, H', W']
        y = y.reshape(n, o, *y.shape[2:])  # [N, O, H', W']
        if up:
            y = upfirdn_up2(y, resample_filter * 4, pad=(1, 1))  # [N, O, 2H, 2W]
        return y

    # Low-rank path: batched conv of the modulated input, side branch for the residual.
    y = _conv(x * styles[:, :, None, None], weight, up=up, groups=1)  # [N, O, H', W']
    if has_residual:
        r = residual_q.shape[1]
        if residual_q.stride(0) == 0:
            # A shared token set (expanded over the batch): one batched conv instead of a grouped one.
            side = _conv(x, residual_q[0].reshape(r, i, k, k), up=up, groups=1)  # [N, R, H', W']
        else:
            q_kernel = residual_q.reshape(n * r, i, k, k)  # [N*R, I, k, k]
            side = _conv(x.reshape(1, n * i, h, w), q_kernel, up=up, groups=n)  # [1, N*R, H', W']
        side = side.reshape(n, r, -1)  # [N, R, H'*W']
        y = y + torch.bmm(residual_p.transpose(1, 2), side).reshape(y.shape)  # [N, O, H', W']
    if up:
        y = upfirdn_up2(y, resample_filter * 4, pad=(1, 1))  # [N, O, 2H, 2W]
    if demodulate:
        base_sq = styles.square() @ weight.square().sum(dim=[2, 3]).t()  # [N, O]
        if has_residual:
            # ||s⊙W0 + PᵀQ||² = Σ s²·||W0||² + 2·Σ_r P_r·<W0, s⊙Q_r> + Pᵀ(QQᵀ)P
            q_mod = residual_q.reshape(n, -1, i, k * k) * styles[:, None, :, None]  # [N, R, I, k*k]
            cross = torch.einsum("oj,nrj->nro", weight.reshape(o, -1), q_mod.reshape(n, -1, i * k * k))  # [N, R, O]
            cross = (cross * residual_p).sum(dim=1)  # [N, O]
            gram = torch.bmm(residual_q, residual_q.transpose(1, 2))  # [N, R, R]
            res_sq = (torch.bmm(gram, residual_p) * residual_p).sum(dim=1)  # [N, O]
            base_sq = base_sq + 2 * cross + res_sq  # [N, O]
        dcoefs = (base_sq + DEMOD_EPS).rsqrt()  # [N, O]
        y = y * dcoefs[:, :, None, None]  # [N, O, H', W']
    return y


@dataclass
class LayerTokens:
    """One layer's token set: ``ΔW = gain / √K · Pᵀ Q``.

    ``p``: ``[K, O]`` (shared) or ``[N, K, O]`` (per image); ``q``: ``[K, I*k*k]`` or ``[N, K, I*k*k]``;
    ``gain``: a scalar tensor or ``[N]``.
    """

    p: torch.Tensor
    q: torch.Tensor
    gain: torch.Tensor

    @property
    def per_image(self) -> bool:
        return self.p.dim() == 3

    @property
    def rank(self) -> int:
        return self.p.shape[-2]


@dataclass
class TokenSet:
    """Token sets for several layers (layer name → ``LayerTokens``), per image or shared.

    Examples:
        ```py
        >>> import torch
        >>> from refinestyle.models.refinement import LayerTokens, TokenSet
        >>> t = TokenSet({"b8.conv1": LayerTokens(torch.zeros(4, 32), torch.randn(4, 32 * 9), torch.tensor(1.0))})
        >>> t.per_image, t.rank
        (False, 4)
        ```
    """

    layers: dict[str, LayerTokens] = field(default_factory=dict)

    @property
    def per_image(self) -> bool:
        return any(t.per_image for t in self.layers.values())

    @property
    def rank(self) -> int:
        return max((t.rank for t in self.layers.values()), default=0)

    @property
    def batch_size(self) -> int | None:
        for t in self.layers.values():
            if t.per_image:
                return t.p.shape[0]
        return None

    def detach(self) -> "TokenSet":
        return TokenSet({k: LayerTokens(v.p.detach(), v.q.detach(), v.gain.detach()) for k, v in self.layers.items()})

    def to(self, device=None, dtype=None) -> "TokenSet":
        return TokenSet(
            {
                k: LayerTokens(v.p.to(device=device, dtype=dtype), v.q.to(device=device, dtype=dtype), v.gain.to(device=device, dtype=dtype))
                for k, v in self.layers.items()
            }
        )

    def index(self, idx) -> "TokenSet":
        """Rows ``idx`` of a per-image set (shared sets are returned unchanged)."""
        out = {}
        for k, v in self.layers.items():
            if v.per_image:
                gain = v.gain[idx] if v.gain.dim() == 1 else v.gain
                out[k] = LayerTokens(v.p[idx], v.q[idx], gain)
            else:
                out[k] = v
        return TokenSet(out)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Flat ``{layer.p, layer.q, layer.gain}`` dict (for safetensors)."""
        out = {}
        for k, v in self.layers.items():
            out[f"{k}.p"], out[f"{k}.q"], out[f"{k}.gain"] = v.p, v.q, v.gain
        return out


ResidualSource = Union[TokenSet, tuple[TokenSet, float]]


def normalize_sources(tokens: TokenSet | Sequence[ResidualSource] | None) -> list[tuple[TokenSet, float]]:
    """Accept None, one TokenSet, or a list of TokenSets / (TokenSet, weight) pairs."""
    if tokens is None:
        return []
    if isinstance(tokens, TokenSet):
        return [(tokens, 1.0)]
    if isinstance(tokens, (list, tuple)):
        out = []
        for item in tokens:
            if isinstance(item, TokenSet):
                out.append((item, 1.0))
            elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], TokenSet):
                out.append((item[0], float(item[1])))
            else:
                raise TypeError(f"tokens entries must be TokenSet or (TokenSet, weight), got {type(item).__name__}")
        return out
    raise TypeError(f"tokens must be None, a TokenSet or a list of (TokenSet, weight), got {type(tokens).__name__}")


def combine_residuals(
    sources: Sequence[tuple[TokenSet, float]], layer: str, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Stack every source's tokens for ``layer`` into one ``(P [N, R, O], Q [N, R, I*k*k])`` pair.

    Each source contributes ``weight · gain / √K · P`` and its ``Q``; sources without the layer are
    skipped. Returns None when no source refines the layer.
    """
    ps, qs = [], []
    for token_set, weight in sources:
        t = token_set.layers.get(layer)
        if t is None:
            continue
        scale = t.gain * (weight / math.sqrt(t.rank))  # [] or [N]
        if t.per_image:
            p = t.p * (scale[:, None, None] if scale.dim() == 1 else scale)  # [N, K, O]
            q = t.q  # [N, K, I*k*k]
        else:
            p = (t.p * scale)[None].expand(batch_size, -1, -1)  # [N, K, O]
            q = t.q[None].expand(batch_size, -1, -1)  # [N, K, I*k*k]
        ps.append(p)
        qs.append(q)
    if not ps:
        return None
    if len(ps) == 1:
        return ps[0], qs[0]
    return torch.cat(ps, dim=1), torch.cat(qs, dim=1)  # [N, ΣK, O], [N, ΣK, I*k*k]
