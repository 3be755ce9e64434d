"""StyleGAN2 (config-f, skip generator) in pure PyTorch, carrying RefineStyle's kernel refinement.

The state-dict layout follows the NVlabs convention (``mapping.fc{i}``, ``synthesis.b{res}.conv0`` ...)
so that official checkpoints convert with a near-identity key map; weights are stored without their
equalized-learning-rate gains, which are applied at run time.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from ..hub import HubModelMixin
from .refinement import (
    PATHS,
    LayerTokens,
    TokenSet,
    combine_residuals,
    modulated_conv2d,
    normalize_sources,
    upsample2x,
)

NOISE_MODES = ("const", "none", "random")
LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)


def fir_filter_2d(taps: Sequence[float] = (1, 3, 3, 1)) -> torch.Tensor:
    """Separable FIR filter ``outer(f, f)`` normalised to sum 1."""
    f = torch.tensor(taps, dtype=torch.float32)
    f2 = torch.outer(f, f)  # [4, 4]
    return f2 / f2.sum()


def default_channels(resolution: int, channel_base: int, channel_max: int) -> list[int]:
    """Channels per block resolution 4, 8, ..., ``resolution`` (StyleGAN2's ``min(base // res, max)``)."""
    return [min(channel_base // (2**i), channel_max) for i in range(2, int(math.log2(resolution)) + 1)]


def _check_tensor(name: str, t, *, dims: Sequence[int | None], like: torch.Tensor) -> None:
    """Raise a clear error when ``t`` is not a float tensor of the expected shape/device/dtype."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {t.dtype}; convert it with .float()")
    if t.dim() != len(dims) or any(d is not None and s != d for s, d in zip(t.shape, dims)):
        want = "[" + ", ".join("N" if d is None else str(d) for d in dims) + "]"
        raise ValueError(f"{name} must have shape {want}, got {list(t.shape)}")
    if t.device != like.device:
        raise ValueError(f"{name} is on {t.device} but the generator is on {like.device}; move it with .to({str(like.device)!r})")
    if t.dtype != like.dtype:
        raise TypeError(f"{name} has dtype {t.dtype} but the generator uses {like.dtype}; cast it with .to({like.dtype})")


class EqualLinear(nn.Module):
    """Linear layer with equalized learning rate: stored ``weight / lr_mul``, run-time gain ``lr_mul / √in``."""

    def __init__(self, in_features: int, out_features: int, *, bias_init: float = 0.0, lr_multiplier: float = 1.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init)) / lr_multiplier)
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.bias * self.bias_gain, x, (self.weight * self.weight_gain).t())  # [N, out]


class MappingNetwork(nn.Module):
    """z → W+ ``[N, num_ws, w_dim]`` (``G.mapping(z, truncation_psi=...)``), as official StyleGAN2: 2nd-moment
    normalisation, ``num_layers`` equalized-lr FC layers with leaky ReLU (``w``), then one latent per synthesis
    layer, truncated toward ``w_avg``. SynthFaces' extras live in ``synthfaces_mapping.SynthFacesMappingNetwork``."""

    def __init__(self, *, z_dim: int, w_dim: int, num_ws: int, num_layers: int, lr_multiplier: float,
                 normalize_z: bool = True, hidden_dim: Optional[int] = None):
        super().__init__()
        self.z_dim, self.w_dim, self.num_ws = z_dim, w_dim, num_ws
        self.num_layers = num_layers
        self.normalize_z = normalize_z
        self.hidden_dim = w_dim if hidden_dim is None else hidden_dim
        for idx in range(num_layers):
            in_features = z_dim if idx == 0 else self.hidden_dim
            out_features = w_dim if idx == num_layers - 1 else self.hidden_dim
            setattr(self, f"fc{idx}", EqualLinear(in_features, out_features, lr_multiplier=lr_multiplier))
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def first_layer_extra(self, z: torch.Tensor) -> Optional[torch.Tensor]:
        """What a subclass adds to the first layer's pre-activation (``[N, hidden_dim]``); none here."""
        return None

    def w(self, z: torch.Tensor) -> torch.Tensor:
        """z ``[N, z_dim]`` → w ``[N, w_dim]``: the FC layers alone (no truncation); ``w_avg`` is its mean."""
        x = z * (z.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt() if self.normalize_z else z  # [N, z_dim]
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)  # [N, hidden_dim], [N, w_dim] after the last layer
            if idx == 0:
                extra = self.first_layer_extra(z)
                if extra is not None:
                    x = x + extra  # [N, hidden_dim]
            x = F.leaky_relu(x, LRELU_SLOPE) * LRELU_GAIN
        return x

    def per_layer(self, w: torch.Tensor) -> torch.Tensor:
        """w ``[N, w_dim]`` → W+ ``[N, num_ws, w_dim]``: w repeated for every synthesis layer."""
        return w[:, None, :].repeat(1, self.num_ws, 1)  # [N, num_ws, w_dim]

    def forward(self, z: torch.Tensor, *, truncation_psi: float = 1.0, truncation_cutoff: int | None = None) -> torch.Tensor:
        """z ``[N, z_dim]`` → W+ ``[N, num_ws, w_dim]``, truncated toward ``w_avg`` in the first ``truncation_cutoff`` layers."""
        _check_tensor("z", z, dims=[None, self.z_dim], like=self.fc0.weight)
        if not isinstance(truncation_psi, (int, float)) or not math.isfinite(truncation_psi):
            raise ValueError(f"truncation_psi must be a finite number, got {truncation_psi!r}")
        w = self.w(z)  # [N, w_dim]
        ws = self.per_layer(w)  # [N, num_ws, w_dim]
        if truncation_psi != 1:
            cutoff = self.num_ws if truncation_cutoff is None else int(truncation_cutoff)
            # Truncate w, then map: a linear per_layer moves each layer toward its own mean.
            truncated = self.per_layer(self.w_avg + truncation_psi * (w - self.w_avg))  # [N, num_ws, w_dim]
            ws[:, :cutoff] = truncated[:, :cutoff]  # [N, cutoff, w_dim]
        return ws

    def mean_ws(self) -> torch.Tensor:
        """W+ ``[num_ws, w_dim]`` of ``w_avg``: each layer's mean latent (where inversion starts)."""
        return self.per_layer(self.w_avg[None])[0]  # [num_ws, w_dim]


class ModulatedLayer(nn.Module):
    """A modulated 3x3 conv (optionally upsampling) + noise + bias + leaky ReLU, or a toRGB 1x1 layer."""

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        kernel_size: int = 3,
        up: bool = False,
        is_torgb: bool = False,
        conv_clamp: Optional[float] = None,
    ):
        super().__init__()
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.resolution, self.up, self.is_torgb, self.conv_clamp = resolution, up, is_torgb, conv_clamp
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        # toRGB scales its styles instead of demodulating; conv layers need no gain (demod cancels it).
        self.style_gain = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size) if is_torgb else 1.0
        if not is_torgb:
            self.noise_strength = nn.Parameter(torch.zeros([]))
            self.register_buffer("noise_const", torch.randn(resolution, resolution))

    def styles(self, w: torch.Tensor) -> torch.Tensor:
        s = self.affine(w)  # [N, I]
        return s * self.style_gain if self.is_torgb else s

    def forward(
        self,
        x: torch.Tensor,
        w: torch.Tensor,
        *,
        residual: tuple[torch.Tensor, torch.Tensor] | None,
        noise_mode: str,
        noise_generator: torch.Generator | None,
        resample_filter: torch.Tensor,
        path: str,
    ) -> torch.Tensor:
        p, q = residual if residual is not None else (None, None)
        x = modulated_conv2d(
            x, self.weight, self.styles(w), demodulate=not self.is_torgb, up=self.up,
            resample_filter=resample_filter, residual_p=p, residual_q=q, path=path,
        )  # [N, O, H, W]
        if self.is_torgb:
            x = x + self.bias[None, :, None, None]
            return x.clamp(-self.conv_clamp, self.conv_clamp) if self.conv_clamp is not None else x
        if noise_mode == "const":
            x = x + self.noise_const * self.noise_strength  # [N, O, H, W] + [H, W]
        elif noise_mode == "random":
            noise = torch.randn(
                x.shape[0], 1, self.resolution, self.resolution, generator=noise_generator, device=x.device, dtype=x.dtype
            )  # [N, 1, H, W]
            x = x + noise * self.noise_strength
        x = F.leaky_relu(x + self.bias[None, :, None, None], LRELU_SLOPE) * LRELU_GAIN
        return x.clamp(-self.conv_clamp, self.conv_clamp) if self.conv_clamp is not None else x


class SynthesisBlock(nn.Module):
    """One resolution: (upsampling conv0), conv1, toRGB; the RGB skip path is summed by the caller."""

    def __init__(self, *, in_channels: int, out_channels: int, w_dim: int, resolution: int, img_channels: int,
                 conv_clamp: Optional[float]):
        super().__init__()
        self.resolution = resolution
        if resolution == 4:
            self.const = nn.Parameter(torch.randn(out_channels, 4, 4))
        else:
            self.conv0 = ModulatedLayer(in_channels=in_channels, out_channels=out_channels, w_dim=w_dim,
                                        resolution=resolution, up=True, conv_clamp=conv_clamp)
        self.conv1 = ModulatedLayer(in_channels=out_channels, out_channels=out_channels, w_dim=w_dim,
                                    resolution=resolution, conv_clamp=conv_clamp)
        self.torgb = ModulatedLayer(in_channels=out_channels, out_channels=img_channels, w_dim=w_dim,
                                    resolution=resolution, kernel_size=1, is_torgb=True, conv_clamp=conv_clamp)

    @property
    def conv_names(self) -> list[str]:
        return ["conv1"] if self.resolution == 4 else ["conv0", "conv1"]


class SynthesisNetwork(nn.Module):
    """W+ → image (``G.synthesis(ws, tokens=...)``): blocks ``b4`` … ``b{resolution}``, each ``conv0`` (upsampling;
    none in ``b4``, which starts from ``const``), ``conv1`` and ``torgb``, with the RGB outputs summed on the way up."""

    def __init__(self, *, w_dim: int, resolution: int, channels: Sequence[int], img_channels: int,
                 conv_clamp: Optional[float]):
        super().__init__()
        self.w_dim = w_dim
        self.resolutions = [2**i for i in range(2, int(math.log2(resolution)) + 1)]
        for idx, res in enumerate(self.resolutions):
            in_ch = channels[idx - 1] if idx > 0 else channels[0]
            setattr(self, f"b{res}", SynthesisBlock(in_channels=in_ch, out_channels=channels[idx], w_dim=w_dim,
                                                    resolution=res, img_channels=img_channels, conv_clamp=conv_clamp))
        self.register_buffer("resample_filter", fir_filter_2d(), persistent=False)
        # A plain list (not registered): the modules are registered once, in their blocks.
        self._layers: list[tuple[str, ModulatedLayer, int]] = []
        w_idx = 0
        for res in self.resolutions:
            block = getattr(self, f"b{res}")
            for conv in block.conv_names:
                self._layers.append((f"b{res}.{conv}", getattr(block, conv), w_idx))
                w_idx += 1
            self._layers.append((f"b{res}.torgb", block.torgb, w_idx))  # shares its w with the next conv0
        self.num_ws = self._layers[-1][2] + 1

    def layers(self) -> list[tuple[str, ModulatedLayer, int]]:
        """Every modulated layer in forward order with its index into ``ws``."""
        return list(self._layers)

    @property
    def layer_names(self) -> list[str]:
        return [name for name, _, _ in self._layers]

    def layer(self, name: str) -> ModulatedLayer:
        for n, layer, _ in self._layers:
            if n == name:
                return layer
        raise KeyError(f"no layer {name!r}; layers are {self.layer_names}")

    def layer_w_index(self, name: str) -> int:
        for n, _, idx in self._layers:
            if n == name:
                return idx
        raise KeyError(f"no layer {name!r}")

    def check_tokens(self, tokens: TokenSet, *, batch_size: int | None = None) -> None:
        """Raise a clear error when a token set does not fit these layers (or the batch)."""
        if not isinstance(tokens, TokenSet):
            raise TypeError(f"tokens must be a TokenSet, got {type(tokens).__name__}")
        ref = self.b4.const
        for name, t in tokens.layers.items():
            try:
                layer = self.layer(name)
            except KeyError:
                raise ValueError(f"token set refines layer {name!r}, which this generator does not have "
                                 f"(its layers: {self.layer_names}); was it made for another generator?") from None
            o, i, k = layer.out_channels, layer.in_channels, layer.kernel_size
            lead = [batch_size] if t.per_image else []
            if t.per_image and batch_size is not None and t.p.shape[0] != batch_size:
                raise ValueError(f"per-image tokens for {name!r} have batch {t.p.shape[0]} but ws has batch {batch_size}")
            kk = t.p.shape[-2]
            _check_tensor(f"tokens[{name!r}].p", t.p, dims=lead + [kk, o], like=ref)
            q_dims = ([t.p.shape[0]] if t.per_image else []) + [kk, i * k * k]
            _check_tensor(f"tokens[{name!r}].q", t.q, dims=q_dims, like=ref)
            if t.gain.dim() > 1 or (t.gain.dim() == 1 and (not t.per_image or t.gain.shape[0] != t.p.shape[0])):
                raise ValueError(f"tokens[{name!r}].gain must be a scalar (or [N] for per-image tokens), got {list(t.gain.shape)}")
            _check_tensor(f"tokens[{name!r}].gain", t.gain, dims=list(t.gain.shape), like=ref)

    def forward(
        self,
        ws: torch.Tensor,
        *,
        tokens=None,
        noise_mode: str = "const",
        noise_generator: torch.Generator | None = None,
        path: str = "auto",
        max_resolution: int | None = None,
    ) -> torch.Tensor:
        """W+ ``[N, num_ws, w_dim]`` (or w ``[N, w_dim]``) → images ``[N, C, R, R]`` (about [-1, 1], not clamped).

        Args:
            ws: latents.
            tokens: None, a ``TokenSet``, or a list of ``TokenSet`` / ``(TokenSet, weight)`` whose residuals add up.
            noise_mode: ``"const"`` (stored noise buffers), ``"none"`` (zero noise), ``"random"``.
            noise_generator: RNG for ``noise_mode="random"``.
            path: ``"auto"``, ``"materialized"`` or ``"lowrank"`` (see ``refinement.choose_path``).
            max_resolution: stop after block ``b{max_resolution}`` and return the RGB image summed so far,
                ``[N, C, max_resolution, max_resolution]``. In the skip architecture no block feeds a lower one, so
                this is exactly what a generator of that resolution with the same lower blocks draws, at the cost
                of the blocks up to it only (adaptation guides read it: a CLIP sees 224 px anyway).
        """
        ref = self.b4.const
        if isinstance(ws, torch.Tensor) and ws.dim() == 2:
            _check_tensor("ws", ws, dims=[None, self.w_dim], like=ref)
            ws = ws[:, None, :].expand(-1, self.num_ws, -1)
        _check_tensor("ws", ws, dims=[None, self.num_ws, self.w_dim], like=ref)
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        if path not in PATHS:
            raise ValueError(f"path must be one of {PATHS}, got {path!r}")
        n = ws.shape[0]
        sources = normalize_sources(tokens)
        for token_set, _ in sources:
            self.check_tokens(token_set, batch_size=n)
        last = self.resolutions[-1] if max_resolution is None else max_resolution
        if last not in self.resolutions:
            raise ValueError(f"max_resolution must be None or one of this generator's resolutions {self.resolutions}, "
                             f"got {max_resolution!r}")

        x = self.b4.const[None].expand(n, -1, -1, -1)  # [N, C, 4, 4]
        img = None
        for name, layer, w_idx in self._layers:
            if layer.resolution > last:
                break
            y = layer(
                x, ws[:, w_idx], residual=combine_residuals(sources, name, n) if sources else None,
                noise_mode=noise_mode, noise_generator=noise_generator, resample_filter=self.resample_filter, path=path,
            )
            if layer.is_torgb:
                img = y if img is None else upsample2x(img, self.resample_filter) + y  # [N, C, R, R]
            else:
                x = y
        return img


class StyleGAN2Generator(HubModelMixin, ModelMixin, ConfigMixin):
    r"""StyleGAN2 generator (config-f, skip architecture) with RefineStyle dynamic-kernel refinement.

    A drop-in, pure-PyTorch StyleGAN2 with NVlabs' module tree: ``G.mapping`` (z → W+ with truncation toward
    ``G.mapping.w_avg``) and ``G.synthesis`` (W+ → image, optionally with low-rank kernel residuals from token sets)
    are the submodules that do the work, and ``G.synthesis.b64.conv1`` is that layer, as its state-dict key says.

    Args:
        z_dim: latent z size.
        w_dim: intermediate latent w size.
        resolution: output resolution, a power of two from 8 to 1024.
        channel_base: StyleGAN2's channel budget; channels at resolution r are ``min(channel_base // r, channel_max)``.
        channel_max: the cap on channels.
        channels: explicit channels per block resolution 4, 8, ..., ``resolution`` (overrides base/max).
        mapping_layers: number of FC layers in the mapping network.
        mapping_lr_multiplier: equalized-lr multiplier of the mapping network (0.01 in official StyleGAN2).
        mapping_hidden_dim: width of the mapping's hidden layers; None: ``w_dim``, as official StyleGAN2 (NVlabs'
            ``layer_features``). ``with_wider_mapping`` widens a trained generator without changing its output.
        img_channels: output image channels.
        conv_clamp: clamp activations to ±``conv_clamp`` after each layer (NVlabs' ADA configs use 256).
        num_tokens: K, the default rank of token sets (tokens per layer) made for this generator.
        refine_torgb: whether token sets also refine the toRGB layers by default.
        normalize_z: StyleGAN2's 2nd-moment normalisation of z. Turn it off when z carries information in its
            norm (SynthFaces: z is the Gaussianised renderer parameter vector, every coordinate matters).
        z_bins: ``[[z index, [edges, ...]], ...]``: coordinates of z that pick a category by bins (sorted edges
            in z units); the mapping also sees each one's bin as a one-hot (see ``MappingNetwork``). Empty for
            official checkpoints.
        mapping_per_layer: give each synthesis layer its own linear map of w (``MappingNetwork``'s ``per_layer``:
            a W+ mapping, zero at start). Off for official checkpoints; the synthesis is unaffected, so encoders and
            domains made on a synthesis still fit a generator whose mapping alone gained it.

    Examples:
        ```py
        >>> import torch
        >>> from refinestyle import StyleGAN2Generator
        >>> G = StyleGAN2Generator(z_dim=32, w_dim=32, resolution=16, channel_base=256, channel_max=32, mapping_layers=2)
        >>> ws = G.mapping(torch.randn(2, 32), truncation_psi=0.7)
        >>> G.synthesis(ws, noise_mode="const").shape
        torch.Size([2, 3, 16, 16])
        ```
    """

    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        z_dim: int = 512,
        w_dim: int = 512,
        resolution: int = 1024,
        channel_base: int = 32768,
        channel_max: int = 512,
        channels: Optional[list] = None,
        mapping_layers: int = 8,
        mapping_lr_multiplier: float = 0.01,
        img_channels: int = 3,
        conv_clamp: Optional[float] = None,
        num_tokens: int = 8,
        refine_torgb: bool = False,
        normalize_z: bool = True,
        z_bins: Optional[list] = None,
        mapping_hidden_dim: Optional[int] = None,
        mapping_per_layer: bool = False,
    ):
        super().__init__()
        if not isinstance(resolution, int) or resolution < 8 or resolution > 1024 or resolution & (resolution - 1):
            raise ValueError(f"resolution must be a power of two from 8 to 1024, got {resolution!r}")
        for name, value in (("z_dim", z_dim), ("w_dim", w_dim), ("mapping_layers", mapping_layers),
                            ("img_channels", img_channels), ("num_tokens", num_tokens)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if mapping_hidden_dim is not None and (not isinstance(mapping_hidden_dim, int) or mapping_hidden_dim < 1):
            raise ValueError(f"mapping_hidden_dim must be a positive integer or None (= w_dim), got {mapping_hidden_dim!r}")
        if not isinstance(mapping_per_layer, bool):
            raise ValueError(f"mapping_per_layer must be true or false, got {mapping_per_layer!r}")
        num_res = int(math.log2(resolution)) - 1
        chans = list(channels) if channels is not None else default_channels(resolution, channel_base, channel_max)
        if len(chans) != num_res or any(not isinstance(c, int) or c < 1 for c in chans):
            got = channels if channels is not None else f"{chans} from channel_base={channel_base}, channel_max={channel_max}"
            raise ValueError(f"channels must list {num_res} positive ints (resolutions 4..{resolution}), got {got}")
        self.channels = chans
        # The NVlabs module tree (and state-dict keys): G.mapping (z → W+) and G.synthesis (W+ → image) do the work.
        self.synthesis = SynthesisNetwork(w_dim=w_dim, resolution=resolution, channels=chans,
                                          img_channels=img_channels, conv_clamp=conv_clamp)
        self.num_ws = self.synthesis.num_ws
        mapping = dict(z_dim=z_dim, w_dim=w_dim, num_ws=self.num_ws, num_layers=mapping_layers,
                       lr_multiplier=mapping_lr_multiplier, normalize_z=normalize_z, hidden_dim=mapping_hidden_dim)
        if z_bins or mapping_per_layer:  # SynthFaces' mapping; official checkpoints never get here
            from .synthfaces_mapping import SynthFacesMappingNetwork, check_z_bins

            self.mapping = SynthFacesMappingNetwork(**mapping, z_bins=check_z_bins(z_bins, z_dim=z_dim),
                                                    per_layer_maps=mapping_per_layer)
        else:
            self.mapping = MappingNetwork(**mapping)

    # ----------------------------------------------------------------------------------------------
    # Structure

    @property
    def layer_names(self) -> list[str]:
        return self.synthesis.layer_names

    def layer(self, name: str) -> ModulatedLayer:
        return self.synthesis.layer(name)

    def refinable_layers(self, *, include_torgb: bool | None = None) -> dict[str, tuple[int, int, int]]:
        """Layers token sets refine by default → ``(out_channels, in_channels, kernel_size)``."""
        torgb = self.config.refine_torgb if include_torgb is None else include_torgb
        return {
            name: (layer.out_channels, layer.in_channels, layer.kernel_size)
            for name, layer, _ in self.synthesis.layers()
            if torgb or not layer.is_torgb
        }

    def layer_w_index(self, name: str) -> int:
        return self.synthesis.layer_w_index(name)

    def signature(self) -> dict:
        """What a token set must match: every layer's shape, w_dim, resolution."""
        return {
            "resolution": self.config.resolution,
            "w_dim": self.config.w_dim,
            "layers": {name: [l.out_channels, l.in_channels, l.kernel_size] for name, l, _ in self.synthesis.layers()},
        }

    @torch.no_grad()
    def synthesis_digest(self) -> str:
        """A short hash of the synthesis weights (as float16, on the CPU): the same for the same synthesis loaded in
        any float dtype it was saved in or on any device, different when any synthesis weight changes; the mapping
        is not part of it. Encoders record it, so a generator whose mapping alone was retrained still fits them."""
        import hashlib

        state = sorted(self.synthesis.state_dict().items())
        # Encoders check on every forward: hash again only when a tensor was replaced or changed in place.
        key = tuple((t.data_ptr(), t._version) for _, t in state)
        cached = getattr(self, "_synthesis_digest_cache", None)
        if cached is not None and cached[0] == key:
            return cached[1]
        digest = hashlib.sha256()
        for name, tensor in state:
            digest.update(name.encode())
            digest.update(tensor.detach().to("cpu", torch.float16).contiguous().numpy().tobytes())
        self._synthesis_digest_cache = (key, digest.hexdigest()[:16])
        return self._synthesis_digest_cache[1]

    def with_wider_mapping(self, hidden_dim: int, *, seed: int = 0) -> "StyleGAN2Generator":
        """A copy whose mapping has ``hidden_dim`` hidden units and draws exactly the same images (SynthFaces'
        training widens its mapping this way; ``synthfaces_mapping.widen_mapping``)."""
        from .synthfaces_mapping import widen_mapping

        return widen_mapping(self, hidden_dim, seed=seed)

    @torch.no_grad()
    def kernel_scale(self, name: str) -> float:
        """RMS of ``s̄ ⊙ W0`` for the layer at the average style: the natural unit for its residual."""
        layer = self.layer(name)
        s = layer.styles(self.mean_ws()[None, self.layer_w_index(name)].to(layer.weight.dtype))  # [1, I]
        return float((layer.weight * s[0, None, :, None, None]).square().mean().sqrt())

    def init_tokens(
        self,
        *,
        batch_size: int | None = None,
        num_tokens: int | None = None,
        layers: Sequence[str] | None = None,
        generator: torch.Generator | None = None,
        q_std: float = 1.0,
    ) -> TokenSet:
        """A zero residual, ready to optimise: ``P = 0``, ``Q ~ N(0, q_std²)``, ``gain`` = the layer's kernel scale.

        With P at zero, ``ΔW = 0`` (the output is the plain generator's) while gradients reach P at once.
        The gain normalises each layer's residual to its kernel scale, so one learning rate fits all widths.
        """
        k = num_tokens or self.config.num_tokens
        names = list(layers) if layers is not None else list(self.refinable_layers())
        ref = self.mapping.w_avg
        out = {}
        for name in names:
            layer = self.layer(name)
            o, i, ks = layer.out_channels, layer.in_channels, layer.kernel_size
            lead = [] if batch_size is None else [batch_size]
            q = torch.randn(*lead, k, i * ks * ks, generator=generator, dtype=ref.dtype) * q_std
            gain = torch.full(lead, self.kernel_scale(name), dtype=ref.dtype)
            out[name] = LayerTokens(torch.zeros(*lead, k, o, dtype=ref.dtype, device=ref.device), q.to(ref.device), gain.to(ref.device))
        return TokenSet(out)

    # ----------------------------------------------------------------------------------------------
    # Forward

    def mean_ws(self) -> torch.Tensor:
        """W+ ``[num_ws, w_dim]`` of ``w_avg``: each layer's mean latent (where inversion starts)."""
        return self.mapping.mean_ws()

    @property
    def mapping_network_weight(self) -> torch.Tensor:
        return self.mapping.fc0.weight

    def forward(self, z: torch.Tensor, *, truncation_psi: float = 1.0, truncation_cutoff: int | None = None,
                tokens=None, noise_mode: str = "const") -> torch.Tensor:
        ws = self.mapping(z, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, tokens=tokens, noise_mode=noise_mode)

    def check_tokens(self, tokens: TokenSet, *, batch_size: int | None = None) -> None:
        """Raise a clear error when a token set does not fit this generator (or the batch)."""
        self.synthesis.check_tokens(tokens, batch_size=batch_size)
