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

``choose_path`` picks one per call and layer from the device and the shapes only (batch size, channels,
resolution, never the rank), so the plain generator and a refined one with an all-zero residual take the same path
and agree bit for bit (the residual terms then add exact zeros).

Half precision (float16, bfloat16) follows NVlabs' stylegan2-ada recipe: before modulating, the static kernel is
scaled per output channel to a max-abs of about ``1/√(I·k²)`` and the styles per sample to about 1 (the residual by
the same factors, its ``Q`` rows to the kernel's scale; every factor a power of two, so the scaling itself is exact).
No product or sum of squares then overflows float16 (at 512 channels and styles near 4 every output was zero), the
demodulation cancels every one of these factors, and its sums of squares run in float32. The low-rank path's
closed-form ``‖Wd‖²`` is a sum of large terms that cancel when a residual removes most of a channel: it is accumulated
in float64 for float32 activations (float32 for half ones, see ``demodulation_dtype``) and clamped at the
rounding-noise floor of the materialised kernel's norm. On a CPU without native half-precision convolutions
(``conv_dtype``) each convolution runs in float32 and rounds back, as torch's own fallback is hundreds of times
slower. Without a residual (or with a zero one) none of this touches
float32: the output is the plain modulated convolution's, bit for bit.

Token sets (``TokenSet``) hold ``P``, ``Q`` and a gain per layer, either per image (leading batch
dimension) or shared (a domain). ``combine_residuals`` stacks several weighted sources along the
rank dimension: ``Σ_j a_j · g_j/√K_j · P_jᵀ Q_j = [a_j g_j/√K_j P_j]_jᵀ [Q_j]_j``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Literal, Sequence, Union

import torch
import torch.nn.functional as F

DEMOD_EPS = 1e-8
Path = Literal["auto", "materialized", "lowrank"]
PATHS = ("auto", "materialized", "lowrank")
HALF_DTYPES = (torch.float16, torch.bfloat16)


def demodulation_dtype(dtype: torch.dtype, device: torch.device) -> torch.dtype:
    """The type the low-rank path's closed-form demodulation ``Σ s²‖W0‖² + 2·Σ_r P_r⟨W0, s⊙Q_r⟩ + Pᵀ(QQᵀ)P`` is
    accumulated in: float32 for half-precision activations, float64 for float32 and float64 ones (float32 on MPS,
    which has no float64).

    The three terms cancel when a residual removes most of a channel. With ``ρ`` the ratio of
    ``Σ s²‖W0‖² + Pᵀ(QQᵀ)P`` to ``‖Wd‖²``, the sum's relative error is about ``u·ρ`` (``u``: the accumulation type's
    unit roundoff), while the convolutions themselves, in the activations' type, are off by about ``u_x·√ρ`` on
    either path. Measured at 512 channels (styles near 4, a token cancelling a channel to ``ε`` of its norm,
    ρ = ε⁻²), the low-rank output of that channel against a float64 reference:

        ε      low-rank, float32 acc   low-rank, float64 acc   materialised
        1e-2   8.5e-4                  4.1e-5                  4.6e-6
        1e-3   6.9e-2                  4.1e-4                  4.6e-5
        1e-4   3.1e-1                  2.4e-3                  2.6e-4

    (float32 activations; in bfloat16 and float16 both accumulation types measure the same, the channel being as far
    off on the materialised path.)

    So float64 where the activations are float32 (what is left is the side branch's own float32 cancellation,
    ``u_x·√ρ`` times the convolution's accumulation), and float32 suffices for bfloat16 and float16, whose own
    rounding is far larger. The float64 work is a cast of the kernel and ``N·R·O·I·k²`` multiply-adds per layer.
    """
    if dtype in HALF_DTYPES or device.type == "mps":
        return torch.float32
    return torch.float64


def unit_roundoff(dtype: torch.dtype) -> float:
    """Half the machine epsilon: the largest relative error of one rounding to ``dtype``."""
    return torch.finfo(dtype).eps / 2


# On the CPU a batch pays for its N per-sample kernels in a grouped convolution, which runs slower than one batched
# convolution: the materialised path clearly wins only where the activations outweigh the kernel about 4 times over
# (bench/kernel_paths.py, config-f at batch 8: it leads by 1.2-2.3 times from b128.conv1 on, where the ratio is 14 or
# more, loses below b64.conv1, and is within 15% at b64.conv1 and b128.conv0, ratios 1.8 and 2.7).
BATCH_ACTIVATION_RATIO = 4


def choose_path(batch_size: int, *, in_channels: int, out_channels: int, kernel_size: int, height: int, width: int,
                device_type: str = "cpu") -> str:
    """The cheaper computation for a layer call on ``device_type``, from shapes only (never from the residual's rank).

    On the CPU the materialised path builds a kernel per sample (``O·I·k²`` values) and the low-rank path modulates
    the activations instead (``(I + O)·H·W`` per sample), so the smaller of the two wins: the kernel at high
    resolution with few channels, the activations at low resolution with many. A batch adds the grouped
    convolution's overhead, so there the activations must outweigh the kernel ``BATCH_ACTIVATION_RATIO`` times
    (``bench/kernel_paths.py``: at 1024 px, batch 8, the convolutions take 27 s chosen this way against 41 s all
    low-rank and 29 s all materialised). On CUDA the materialised path is faster at every batch size
    (``bench/gpu.py``: 1024 px config-f with K = 8, 18.1 against 26.5 ms per image at batch 1 and 7.5 against 9.1
    at batch 8 on an H100): a grouped convolution is one kernel launch, the side branch several.
    Because the choice ignores the rank, the plain generator and a refined one with an all-zero residual always
    take the same path (bit-identical output).
    """
    if device_type == "cuda":
        return "materialized"
    kernel_cost = out_channels * in_channels * kernel_size * kernel_size
    activation_cost = (in_channels + out_channels) * height * width
    ratio = 1 if batch_size == 1 else BATCH_ACTIVATION_RATIO
    return "materialized" if ratio * kernel_cost <= activation_cost else "lowrank"


@functools.lru_cache(maxsize=None)
def cpu_has_native(dtype: torch.dtype) -> bool:
    """Whether this CPU runs ``dtype`` convolutions natively (oneDNN with AVX-512 BF16/FP16 or AMX); float32: yes."""
    if dtype == torch.float32 or dtype == torch.float64:
        return True
    check = {torch.bfloat16: "_is_mkldnn_bf16_supported", torch.float16: "_is_mkldnn_fp16_supported"}.get(dtype)
    try:
        return bool(check and getattr(torch.ops.mkldnn, check)())
    except (AttributeError, RuntimeError):  # a torch without the query: assume the slow path
        return False


def conv_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype a convolution of ``x`` runs in: its own, except half precision on a CPU without native support.

    There torch falls back to a reference loop hundreds of times slower than float32 (a 512-channel 64 px 3x3
    convolution: 74 s in bfloat16 against 0.17 s in float32 on a 2-core AVX2 CPU), so the convolution runs in
    float32 and its output is rounded back to ``x``'s dtype: half-precision storage and results, float32's speed.
    """
    if x.device.type == "cpu" and not cpu_has_native(x.dtype):
        return torch.float32
    return x.dtype


def _conv_in(conv, x: torch.Tensor, weight: torch.Tensor, **kwargs) -> torch.Tensor:
    """``conv(x, weight, **kwargs)`` computed in ``conv_dtype(x)``, returned in ``x``'s dtype."""
    dtype = conv_dtype(x)
    if dtype == x.dtype:
        return conv(x, weight, **kwargs)
    return conv(x.to(dtype), weight.to(dtype), **kwargs).to(x.dtype)


def upfirdn_up2(x: torch.Tensor, filter_2d: torch.Tensor, *, pad: tuple[int, int]) -> torch.Tensor:
    """Depthwise FIR filter of an already zero-stuffed or plain input with symmetric 4x4 ``filter_2d``.

    ``pad`` is (before, after) for both spatial axes. ``filter_2d`` already includes any gain.
    """
    n, c, h, w = x.shape
    x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]])  # [N, C, H+p0+p1, W+p0+p1]
    kernel = filter_2d[None, None].expand(c, 1, *filter_2d.shape).to(x.dtype)  # [C, 1, 4, 4]
    # The filter is symmetric, so correlation (conv2d) equals convolution.
    return _conv_in(F.conv2d, x, kernel, groups=c)


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
        return _conv_in(F.conv2d, x, weight, padding=k // 2, groups=groups)
    go, i, k, _ = weight.shape
    o = go // groups
    # conv_transpose2d wants [groups*I, O, k, k]; the stored kernel is used unflipped.
    w_t = weight.reshape(groups, o, i, k, k).transpose(1, 2).reshape(groups * i, o, k, k)  # [G*I, O, k, k]
    return _conv_in(F.conv_transpose2d, x, w_t, stride=2, groups=groups)


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
        path = choose_path(n, in_channels=i, out_channels=o, kernel_size=k, height=h, width=w, device_type=x.device.type)
    if path not in ("materialized", "lowrank"):
        raise ValueError(f"path must be one of {PATHS}, got {path!r}")
    if up and resample_filter is None:
        raise ValueError("up=True needs resample_filter")
    has_residual = residual_p is not None
    if has_residual != (residual_q is not None):
        raise ValueError("residual_p and residual_q must be given together")
    dtype = x.dtype
    half = dtype in HALF_DTYPES
    if half and demodulate:
        # Pre-normalise (NVlabs' recipe for half precision): at 512 channels with styles near 4, ‖s⊙W0‖² ≈ 7e4
        # overflows float16 and every output became zero. The per-(sample, output channel) factor s_gain·w_gain
        # multiplies all of Wd (P takes it, Q's row scale moves into P), so the demodulation cancels it exactly.
        # Every gain is a power of two (max-abs lands in (½, 1] of its target), so scaling adds no rounding.
        w_max = weight.detach().abs().amax(dim=[1, 2, 3]).float() * math.sqrt(i * k * k)  # [O]
        w_gain = torch.exp2(-torch.ceil(torch.log2(torch.where(w_max > 0, w_max, 1.0))))  # [O]
        s_max = styles.detach().abs().amax(dim=1).float()  # [N]
        s_gain = torch.exp2(-torch.ceil(torch.log2(torch.where(s_max > 0, s_max, 1.0))))  # [N]
        weight = (weight.float() * w_gain[:, None, None, None]).to(dtype)  # [O, I, k, k], max-abs ≤ 1/√(I·k²)
        styles = (styles.float() * s_gain[:, None]).to(dtype)  # [N, I], max-abs ≤ 1
        if has_residual:
            shared_q = residual_q.stride(0) == 0
            q_rows = residual_q[:1] if shared_q else residual_q  # [N or 1, R, I*k*k]
            q_max = q_rows.detach().abs().amax(dim=2).float() * math.sqrt(i * k * k)  # [N or 1, R]
            q_gain = torch.exp2(-torch.ceil(torch.log2(torch.where(q_max > 0, q_max, 1.0))))  # [N or 1, R]
            q_rows = (q_rows.float() * q_gain[:, :, None]).to(dtype)  # [N or 1, R, I*k*k], max-abs ≤ 1/√(I·k²)
            residual_q = q_rows.expand(n, -1, -1) if shared_q else q_rows  # [N, R, I*k*k]
            p_gain = s_gain[:, None, None] * w_gain[None, None, :] / q_gain[:, :, None]  # [N, R, O]
            residual_p = (residual_p.float() * p_gain).to(dtype)  # [N, R, O]

    if path == "materialized":
        kernel = weight[None] * styles[:, None, :, None, None]  # [N, O, I, k, k]
        if has_residual:
            delta = torch.bmm(residual_p.transpose(1, 2), residual_q)  # [N, O, I*k*k]
            kernel = kernel + delta.reshape(n, o, i, k, k)  # [N, O, I, k, k]
        if demodulate:
            sq = kernel.float() if half else kernel  # [N, O, I, k, k]; half: squares summed in float32
            dcoefs = (sq.square().sum(dim=[2, 3, 4]) + DEMOD_EPS).rsqrt().to(dtype)  # [N, O]
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
        w_sq, s_sq = (weight.float(), styles.float()) if half else (weight, styles)  # [O, I, k, k], [N, I]; half: in float32
        norm_sq = s_sq.square() @ w_sq.square().sum(dim=[2, 3]).t()  # [N, O], the plain generator's ||s⊙W0||²
        if has_residual:
            # ||s⊙W0 + PᵀQ||² = Σ s²·||W0||² + 2·Σ_r P_r·<W0, s⊙Q_r> + Pᵀ(QQᵀ)P, accumulated wider (demodulation_dtype)
            acc = demodulation_dtype(dtype, x.device)
            weight_acc, styles_acc = weight.to(acc), styles.to(acc)  # [O, I, k, k], [N, I]
            p_acc, q_acc = residual_p.to(acc), residual_q.to(acc)  # [N, R, O], [N, R, I*k*k]
            base_sq = norm_sq if norm_sq.dtype == acc else styles_acc.square() @ weight_acc.square().sum(dim=[2, 3]).t()  # [N, O]
            q_mod = q_acc.reshape(n, -1, i, k * k) * styles_acc[:, None, :, None]  # [N, R, I, k*k]
            cross = torch.einsum("oj,nrj->nro", weight_acc.reshape(o, -1), q_mod.reshape(n, -1, i * k * k))  # [N, R, O]
            cross = (cross * p_acc).sum(dim=1)  # [N, O]
            gram = torch.bmm(q_acc, q_acc.transpose(1, 2))  # [N, R, R]
            res_sq = (torch.bmm(gram, p_acc) * p_acc).sum(dim=1)  # [N, O]
            # A residual cancelling a channel leaves a small difference of large terms. Building Wd in the activations'
            # type (the materialised path) rounds each entry by up to u·|entry|, so its norm² hardly falls below
            # u²·(Σ s²·||W0||² + Pᵀ(QQᵀ)P): clamp there, above the wide sum's own error, so a channel cancelled to
            # rounding noise gets a noise-sized norm as on the materialised path, never a negative or zero one.
            floor = (base_sq + res_sq) * unit_roundoff(dtype) ** 2  # [N, O]
            total = torch.maximum(base_sq + 2 * cross + res_sq, floor)  # [N, O]
            # Scale the plain norm² by the exact ratio instead of replacing it: a zero residual makes the ratio exactly 1,
            # so the output is the plain generator's bit for bit (whose sum stays in the activations' type).
            ratio = total / torch.where(base_sq > 0, base_sq, 1.0)  # [N, O]
            norm_sq = torch.where(base_sq > 0, norm_sq * ratio.to(norm_sq.dtype), total.to(norm_sq.dtype))  # [N, O]
        dcoefs = (norm_sq + DEMOD_EPS).rsqrt().to(dtype)  # [N, O]
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
