"""``RefineStyleEncoder``: image → W+ latents and per-image token sets (RefineStyle inversion).

Architecture (DESIGN.md section 1, Inversion):

* **Multi-scale backbone.** ``"cnn"``: a stem at the input resolution, then stride-2 residual stages
  (GroupNorm, leaky ReLU) down to 8x8, or three stages for inputs under 64 px; the last three stage
  outputs are the fine, medium and coarse feature maps (32, 16, 8 px for a 64 px input).
  ``"resnet18"`` / ``"resnet34"``: torchvision ResNets (``layer2``/``layer3``/``layer4``, strides
  8/16/32), GroupNorm when trained from scratch, frozen BatchNorm with ImageNet weights
  (``pretrained_backbone=True``, downloaded once by ``load_imagenet_backbone``; never required).
* **W+ heads** (pSp/e4e style). Each ``w`` index reads the feature scale of the generator block it
  drives (coarse ``w`` from coarse features, ...): a 1x1 conv, average pooling to 4x4, and a per-index
  two-layer MLP predict ``Δw``; ``ws = w_mean + Δw``, where ``w_mean`` is the mean of the generator's
  mapping outputs, measured when the encoder is made (equal to ``w_avg`` for a generator that tracks
  it; some checkpoints leave ``w_avg`` at zero). The last MLP layer starts at zero, so an untrained
  encoder outputs ``w_mean``.
* **Grouped transformer blocks.** The generator's block resolutions ``4 .. R`` are split into three
  contiguous groups of near-equal length, extra levels going to the coarser groups (64 px:
  coarse 4-8, medium 16-32, fine 64; 1024 px: 4-16, 32-128, 256-1024). Per group, ``K`` learned
  queries per refined layer attend to the group's feature scale (cross-attention over the flattened
  map with a 2D sine-cosine position code) and to each other (self-attention), ``num_blocks`` pre-norm
  blocks. Linear heads turn each layer's ``K`` outputs into ``P [K, O]`` and ``Q [K, I·k·k]``. The P
  head starts at zero (an untrained token branch is an exact no-op) and the Q head at unit scale
  (as ``StyleGAN2Generator.init_tokens``), so ``ΔW = gain/√K · PᵀQ`` starts from zero while its
  gradients reach P at once.
* **One-stage / two-stage.** ``token_input="image"``: the token branch shares the backbone with the W+
  heads (one-stage). ``token_input="image+reconstruction"``: the token branch has its own backbone
  that sees the image concatenated with the stage-one reconstruction ``G.synthesis(ws)`` (6 channels);
  ``forward`` then needs the generator, and the W+ part is trained first and frozen (two-stage).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from ..hub import HubError, HubModelMixin
from .refinement import LayerTokens, TokenSet
from .stylegan2 import StyleGAN2Generator

BACKBONES = ("cnn", "resnet18", "resnet34")
TOKEN_INPUTS = ("image", "image+reconstruction")
GROUPS = ("coarse", "medium", "fine")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LRELU_SLOPE = 0.2
# Feature scale index (in the backbone's [fine, medium, coarse] list) each group reads.
GROUP_SCALE = {"fine": 0, "medium": 1, "coarse": 2}


def _module_key(layer: str) -> str:
    return layer.replace(".", "_")


def _log2_int(value: int, what: str) -> int:
    if not isinstance(value, int) or value < 1 or value & (value - 1):
        raise ValueError(f"{what} must be a power of two, got {value!r}")
    return int(math.log2(value))


def resolution_groups(resolution: int) -> dict[int, str]:
    """Block resolution → ``"coarse"`` / ``"medium"`` / ``"fine"`` for a generator of ``resolution`` px.

    The levels ``4, 8, ..., resolution`` are cut into three contiguous runs of near-equal length, the
    extra levels going to the coarser groups: 16 px → 4 | 8 | 16; 64 px → 4-8 | 16-32 | 64;
    256 px → 4-16 | 32-64 | 128-256; 1024 px → 4-16 | 32-128 | 256-1024. An 8 px generator has no fine group.
    """
    levels = list(range(2, _log2_int(resolution, "resolution") + 1))
    sizes = [len(levels) // 3 + (1 if g < len(levels) % 3 else 0) for g in range(3)]
    out, start = {}, 0
    for group, size in zip(GROUPS, sizes):
        for level in levels[start:start + size]:
            out[2**level] = group
        start += size
    return out


def w_index_resolution(index: int, resolution: int) -> int:
    """The block resolution whose layers read ``ws[:, index]`` (the last index drives the final toRGB)."""
    return min(resolution, 4 * 2 ** ((index + 1) // 2))


def sincos_position_code(height: int, width: int, dim: int, *, device, dtype) -> torch.Tensor:
    """Fixed 2D sine-cosine position code ``[H*W, dim]`` (``dim // 4`` frequencies per axis and function)."""
    quarter = dim // 4
    freqs = 1.0 / (10000.0 ** (torch.arange(quarter, device=device, dtype=torch.float32) / max(quarter, 1)))  # [dim/4]
    ys = torch.arange(height, device=device, dtype=torch.float32)[:, None] * freqs  # [H, dim/4]
    xs = torch.arange(width, device=device, dtype=torch.float32)[:, None] * freqs  # [W, dim/4]
    code = torch.cat([
        ys.sin()[:, None].expand(-1, width, -1), ys.cos()[:, None].expand(-1, width, -1),
        xs.sin()[None].expand(height, -1, -1), xs.cos()[None].expand(height, -1, -1),
    ], dim=-1)  # [H, W, dim]
    return code.reshape(height * width, dim).to(dtype)


@torch.no_grad()
def mapping_mean(generator: StyleGAN2Generator, *, seed: int = 0, samples: int = 4096) -> torch.Tensor:
    """Mean ``[w_dim]`` of ``generator.mapping(z)`` over ``samples`` draws of ``z ~ N(0, I)`` (truncation 1)."""
    z = torch.randn(samples, generator.config.z_dim, generator=torch.Generator().manual_seed(seed))  # [S, z_dim]
    ref = generator.mapping_network_weight
    return generator.mapping(z.to(ref.device, ref.dtype))[:, 0].mean(0)  # [w_dim]


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(8, channels), channels)


class ResidualDownBlock(nn.Module):
    """Stride-2 residual stage: two 3x3 convs with GroupNorm and leaky ReLU, 1x1 stride-2 skip."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv0 = nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1)
        self.norm0 = _group_norm(out_channels)
        self.conv1 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.norm1 = _group_norm(out_channels)
        self.skip = nn.Conv2d(in_channels, out_channels, 1, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(self.norm0(self.conv0(x)), LRELU_SLOPE)  # [N, C, H/2, W/2]
        h = self.norm1(self.conv1(h))  # [N, C, H/2, W/2]
        return F.leaky_relu(h + self.skip(x), LRELU_SLOPE)


class ConvBackbone(nn.Module):
    """Small CNN trained from scratch: stem + stride-2 stages; returns ``[fine, medium, coarse]`` maps."""

    def __init__(self, *, in_channels: int, input_resolution: int, base_channels: int):
        super().__init__()
        num_stages = max(3, _log2_int(input_resolution, "input_resolution") - 3)
        max_channels = base_channels * 8
        self.stem = nn.Sequential(nn.Conv2d(in_channels, base_channels, 3, padding=1), _group_norm(base_channels),
                                  nn.LeakyReLU(LRELU_SLOPE))
        chans = [base_channels] + [min(base_channels * 2 ** (s + 1), max_channels) for s in range(num_stages)]
        self.stages = nn.ModuleList(ResidualDownBlock(chans[s], chans[s + 1]) for s in range(num_stages))
        self.out_channels = chans[-3:]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)  # [N, C0, R, R]
        maps = []
        for stage in self.stages:
            x = stage(x)  # [N, Cs, R/2^s, R/2^s]
            maps.append(x)
        return maps[-3:]


class ResNetBackbone(nn.Module):
    """torchvision ResNet-18/34 (``layer2``/``layer3``/``layer4`` → fine/medium/coarse).

    GroupNorm when trained from scratch; frozen BatchNorm (ImageNet statistics) with ImageNet weights.
    Inputs in [-1, 1] are mapped to ImageNet normalisation; a 6-channel input (image + reconstruction)
    normalises both halves and gets a 6-channel first conv.
    """

    def __init__(self, *, depth: int, in_channels: int, pretrained: bool):
        super().__init__()
        import torchvision
        from torchvision.ops import FrozenBatchNorm2d

        norm = FrozenBatchNorm2d if pretrained else (lambda c: nn.GroupNorm(32, c))
        builder = {18: torchvision.models.resnet18, 34: torchvision.models.resnet34}[depth]
        net = builder(weights=None, norm_layer=norm)
        self.depth = depth
        self.conv1 = net.conv1 if in_channels == 3 else nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1, self.layer1, self.layer2, self.layer3, self.layer4 = net.bn1, net.layer1, net.layer2, net.layer3, net.layer4
        reps = in_channels // 3
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN * reps).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD * reps).view(1, -1, 1, 1), persistent=False)
        self.out_channels = [128, 256, 512]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = ((x + 1) / 2 - self.mean) / self.std  # [N, C, R, R]
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, stride=2, padding=1)  # [N, 64, R/4, R/4]
        x = self.layer1(x)  # [N, 64, R/4, R/4]
        fine = self.layer2(x)  # [N, 128, R/8, R/8]
        medium = self.layer3(fine)  # [N, 256, R/16, R/16]
        coarse = self.layer4(medium)  # [N, 512, R/32, R/32]
        return [fine, medium, coarse]

    def load_imagenet_weights(self) -> None:
        """Copy torchvision's ImageNet weights in (the first conv's extra input channels start at zero)."""
        import torchvision

        weights = {18: torchvision.models.ResNet18_Weights, 34: torchvision.models.ResNet34_Weights}[self.depth].IMAGENET1K_V1
        try:
            state = weights.get_state_dict(progress=False)
        except Exception as err:  # no network, proxy errors, corrupt cache: all mean "not available here"
            raise HubError(
                f"could not load the ImageNet weights of resnet{self.depth} ({type(err).__name__}: {err}); they are "
                "optional: use pretrained_backbone=False (the default, trained from scratch), or put the file "
                f"{weights.url.rsplit('/', 1)[-1]} into the torch hub cache ($TORCH_HOME/hub/checkpoints)"
            ) from None
        own = self.state_dict()
        conv1 = state["conv1.weight"]  # [64, 3, 7, 7]
        if own["conv1.weight"].shape[1] != conv1.shape[1]:
            padded = torch.zeros_like(own["conv1.weight"])  # [64, C, 7, 7]
            padded[:, : conv1.shape[1]] = conv1
            state["conv1.weight"] = padded
        self.load_state_dict({k: v for k, v in state.items() if k in own}, strict=True)


class PerIndexMLP(nn.Module):
    """``count`` independent two-layer MLPs applied as batched matmuls; the output layer starts at zero."""

    def __init__(self, *, count: int, in_features: int, hidden: int, out_features: int):
        super().__init__()
        self.weight0 = nn.Parameter(torch.randn(count, in_features, hidden) / math.sqrt(in_features))
        self.bias0 = nn.Parameter(torch.zeros(count, hidden))
        self.weight1 = nn.Parameter(torch.zeros(count, hidden, out_features))
        self.bias1 = nn.Parameter(torch.zeros(count, out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.baddbmm(self.bias0[:, None], x.transpose(0, 1), self.weight0)  # [count, N, hidden]
        h = F.leaky_relu(h, LRELU_SLOPE)
        return torch.baddbmm(self.bias1[:, None], h, self.weight1).transpose(0, 1)  # [N, count, out]


class WPlusHeads(nn.Module):
    """pSp-style map-to-style heads: each ``w`` index from its block's feature scale, pooled to 4x4."""

    def __init__(self, *, scale_channels: Sequence[int], index_scales: Sequence[int], head_channels: int, w_dim: int):
        super().__init__()
        self.index_scales = list(index_scales)
        self.reduce = nn.ModuleList(nn.Conv2d(c, head_channels, 1) for c in scale_channels)
        self.mlps = nn.ModuleDict()
        for scale in sorted(set(self.index_scales)):
            count = self.index_scales.count(scale)
            self.mlps[str(scale)] = PerIndexMLP(count=count, in_features=head_channels * 16, hidden=w_dim, out_features=w_dim)

    def forward(self, maps: Sequence[torch.Tensor]) -> torch.Tensor:
        n = maps[0].shape[0]
        deltas: list[Optional[torch.Tensor]] = [None] * len(self.index_scales)
        for key, mlp in self.mlps.items():
            scale = int(key)
            pooled = F.adaptive_avg_pool2d(F.leaky_relu(self.reduce[scale](maps[scale]), LRELU_SLOPE), 4)  # [N, Ch, 4, 4]
            indices = [i for i, s in enumerate(self.index_scales) if s == scale]
            out = mlp(pooled.reshape(n, 1, -1).expand(-1, len(indices), -1))  # [N, count, w_dim]
            for j, idx in enumerate(indices):
                deltas[idx] = out[:, j]
        return torch.stack(deltas, dim=1)  # [N, num_heads, w_dim]


class QueryBlock(nn.Module):
    """Pre-norm transformer block: queries cross-attend to features, then self-attend, then an MLP."""

    def __init__(self, *, d_model: int, num_heads: int):
        super().__init__()
        self.norm_query = nn.LayerNorm(d_model)
        self.norm_features = nn.LayerNorm(d_model)
        self.cross_attention = nn.MultiheadAttention(d_model, num_heads, batch_first=True)
        self.norm_self = nn.LayerNorm(d_model)
        self.self_attention = nn.MultiheadAttention(d_model, num_heads, batch_first=True)
        self.norm_mlp = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model))

    def forward(self, queries: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        kv = self.norm_features(features)  # [N, HW, D]
        h = self.norm_query(queries)  # [N, T, D]
        queries = queries + self.cross_attention(h, kv, kv, need_weights=False)[0]  # [N, T, D]
        h = self.norm_self(queries)
        queries = queries + self.self_attention(h, h, h, need_weights=False)[0]  # [N, T, D]
        return queries + self.mlp(self.norm_mlp(queries))  # [N, T, D]


class TokenGroup(nn.Module):
    """One group (coarse/medium/fine): ``K`` learned queries per layer, transformer blocks, P and Q heads."""

    def __init__(self, *, layers: Sequence[str], shapes: dict, num_tokens: int, d_model: int, num_heads: int, num_blocks: int):
        super().__init__()
        self.layers = list(layers)
        self.num_tokens = num_tokens
        self.queries = nn.Parameter(torch.randn(len(self.layers) * num_tokens, d_model))
        self.blocks = nn.ModuleList(QueryBlock(d_model=d_model, num_heads=num_heads) for _ in range(num_blocks))
        self.norm_out = nn.LayerNorm(d_model)
        self.p_heads = nn.ModuleDict()
        self.q_heads = nn.ModuleDict()
        for name in self.layers:
            o, i, k = shapes[name]
            p_head = nn.Linear(d_model, o)
            nn.init.zeros_(p_head.weight)
            nn.init.zeros_(p_head.bias)
            q_head = nn.Linear(d_model, i * k * k)
            nn.init.normal_(q_head.weight, std=1.0 / math.sqrt(d_model))  # Q entries start at about unit scale
            nn.init.zeros_(q_head.bias)
            self.p_heads[_module_key(name)] = p_head
            self.q_heads[_module_key(name)] = q_head

    def forward(self, features: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        n = features.shape[0]
        x = self.queries[None].expand(n, -1, -1)  # [N, L*K, D]
        for block in self.blocks:
            x = block(x, features)  # [N, L*K, D]
        x = self.norm_out(x)
        out = {}
        for j, name in enumerate(self.layers):
            h = x[:, j * self.num_tokens:(j + 1) * self.num_tokens]  # [N, K, D]
            out[name] = (self.p_heads[_module_key(name)](h), self.q_heads[_module_key(name)](h))  # [N, K, O], [N, K, I*k*k]
        return out


@dataclass
class EncoderOutput:
    """What ``RefineStyleEncoder`` returns.

    ws: W+ latents ``[N, num_ws, w_dim]``; tokens: per-image ``TokenSet`` (P ``[N, K, O]``, Q ``[N, K, I·k·k]``,
    scalar gains), None without a token branch; reconstruction: the stage-one image ``G.synthesis(ws)``
    ``[N, 3, R, R]`` that a two-stage token branch saw, else None.
    """

    ws: torch.Tensor
    tokens: Optional[TokenSet]
    reconstruction: Optional[torch.Tensor]


class RefineStyleEncoder(HubModelMixin, ModelMixin, ConfigMixin):
    r"""RefineStyle inversion encoder: image → W+ (``w_mean + Δw``) and per-image token sets for the refined layers.

    Build one for a generator with ``RefineStyleEncoder.from_generator(G)``; the config records what it
    needs of the generator (resolution, W+ shape, each refined layer's shape, block resolution, ``w``
    index and token gain), so using it with another generator fails with a clear error.

    Args:
        resolution: the generator's output resolution (images are resized to ``input_resolution``).
        input_resolution: the backbone's input size (defaults to ``resolution``; e.g. 256 for a 1024 px generator).
        num_ws: number of W+ entries (defaults to ``2·log2(resolution) - 2``, StyleGAN2's count).
        w_dim: latent w size.
        layer_shapes: refined layer name → ``[O, I, k]`` (``G.refinable_layers()``); required with ``token_branch``.
        layer_resolutions: refined layer name → its block resolution.
        layer_w_index: refined layer name → its index into ``ws``.
        layer_gains: refined layer name → token gain (``G.kernel_scale(name)``).
        num_tokens: K, tokens per layer (the rank of each residual).
        backbone: ``"cnn"`` (small, from scratch), ``"resnet18"`` or ``"resnet34"`` (torchvision).
        pretrained_backbone: ResNet with frozen BatchNorm, meant to start from ImageNet weights
            (``load_imagenet_backbone``); otherwise GroupNorm from scratch.
        base_channels: channels of the CNN stem (stages double it up to 8x).
        d_model: width of the token transformer.
        num_heads: attention heads.
        num_blocks: transformer blocks per group.
        w_head_channels: channels of the W+ heads' 1x1 reduction (pooled to 4x4 per w index).
        token_branch: predict token sets (False: a W+-only, stage-one encoder).
        token_input: ``"image"`` (one-stage, shared backbone) or ``"image+reconstruction"`` (two-stage:
            a second backbone sees the image and ``G.synthesis(ws)``; ``forward`` needs ``generator=``).
        w_plus: predict one w per index (W+); False predicts a single w from the coarse features, repeated.
        description: free text (how it was trained), for the model card.
        synthesis_digest: ``StyleGAN2Generator.synthesis_digest()`` of the generator it was made for (set by
            ``from_generator``), so that generator still fits after its mapping alone is retrained.

    Examples:
        ```py
        >>> import torch
        >>> from refinestyle import StyleGAN2Generator
        >>> from refinestyle.models.encoder import RefineStyleEncoder
        >>> G = StyleGAN2Generator(z_dim=8, w_dim=16, resolution=16, channels=[16, 16, 8], mapping_layers=2, num_tokens=4)
        >>> enc = RefineStyleEncoder.from_generator(G, base_channels=8, d_model=16, num_heads=2, num_blocks=1)
        >>> out = enc(torch.rand(2, 3, 16, 16) * 2 - 1)
        >>> out.ws.shape, out.tokens.layers["b8.conv1"].p.shape
        (torch.Size([2, 6, 16]), torch.Size([2, 4, 16]))
        >>> ws, tokens = enc.invert(torch.zeros(1, 3, 16, 16), generator=G)
        >>> torch.equal(G.synthesis(ws, tokens=tokens), G.synthesis(ws))  # untrained token branch: a no-op
        True

        ```
    """

    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        resolution: int = 64,
        input_resolution: Optional[int] = None,
        num_ws: Optional[int] = None,
        w_dim: int = 512,
        layer_shapes: Optional[dict] = None,
        layer_resolutions: Optional[dict] = None,
        layer_w_index: Optional[dict] = None,
        layer_gains: Optional[dict] = None,
        num_tokens: int = 8,
        backbone: str = "cnn",
        pretrained_backbone: bool = False,
        base_channels: int = 32,
        d_model: int = 128,
        num_heads: int = 4,
        num_blocks: int = 2,
        w_head_channels: int = 64,
        token_branch: bool = True,
        token_input: str = "image",
        w_plus: bool = True,
        description: str = "",
        synthesis_digest: Optional[str] = None,
    ):
        super().__init__()
        log_res = _log2_int(resolution, "resolution")
        if resolution < 8:
            raise ValueError(f"resolution must be at least 8, got {resolution}")
        in_res = resolution if input_resolution is None else input_resolution
        _log2_int(in_res, "input_resolution")
        if backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {BACKBONES}, got {backbone!r}")
        min_input = 64 if backbone.startswith("resnet") else 8
        if in_res < min_input:
            raise ValueError(f"input_resolution must be at least {min_input} for backbone {backbone!r}, got {in_res}")
        if token_input not in TOKEN_INPUTS:
            raise ValueError(f"token_input must be one of {TOKEN_INPUTS}, got {token_input!r}")
        for name, value in (("w_dim", w_dim), ("num_tokens", num_tokens), ("base_channels", base_channels),
                            ("d_model", d_model), ("num_heads", num_heads), ("num_blocks", num_blocks),
                            ("w_head_channels", w_head_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if d_model % num_heads or d_model % 4:
            raise ValueError(f"d_model ({d_model}) must be a multiple of 4 and of num_heads ({num_heads})")
        self.num_ws = 2 * log_res - 2 if num_ws is None else int(num_ws)
        if self.num_ws < 1:
            raise ValueError(f"num_ws must be positive, got {num_ws!r}")
        self.input_resolution = in_res
        self.layers: list[str] = []
        if token_branch:
            if not layer_shapes:
                raise ValueError("a token branch needs layer_shapes (and layer_resolutions, layer_w_index, layer_gains); "
                                 "build the encoder with RefineStyleEncoder.from_generator(G)")
            for what, table in (("layer_resolutions", layer_resolutions), ("layer_w_index", layer_w_index),
                                ("layer_gains", layer_gains)):
                if not isinstance(table, dict) or set(table) != set(layer_shapes):
                    raise ValueError(f"{what} must give a value for exactly the layers of layer_shapes {sorted(layer_shapes)}")
            groups = resolution_groups(resolution)
            bad = {n: r for n, r in layer_resolutions.items() if r not in groups}
            if bad:
                raise ValueError(f"layer_resolutions {bad} are not block resolutions of a {resolution} px generator")
            # A canonical order (configs are saved with sorted keys): by w index, then name.
            self.layers = sorted(layer_shapes, key=lambda n: (int(layer_w_index[n]), n))

        # W+ part: backbone (shared with the token branch in one-stage mode) and heads.
        self.feature_backbone = self._make_backbone(in_channels=3)
        scale_by_group = {res: GROUP_SCALE[g] for res, g in resolution_groups(resolution).items()}
        if w_plus:
            index_scales = [scale_by_group[w_index_resolution(j, resolution)] for j in range(self.num_ws)]
        else:
            index_scales = [GROUP_SCALE["coarse"]]
        self.w_heads = WPlusHeads(scale_channels=self.feature_backbone.out_channels, index_scales=index_scales,
                                  head_channels=w_head_channels, w_dim=w_dim)
        self.register_buffer("w_avg", torch.zeros(w_dim))  # the generator's w_avg (to check it is the same generator)
        self.register_buffer("w_mean", torch.zeros(w_dim))  # mean of the generator's mapping outputs: the origin of ws

        # Token branch: optional own backbone (two-stage), feature projections, one transformer per group.
        self.token_backbone = self._make_backbone(in_channels=6) if token_branch and token_input == "image+reconstruction" else None
        if token_branch:
            token_channels = (self.token_backbone or self.feature_backbone).out_channels
            self.token_projections = nn.ModuleList(nn.Conv2d(c, d_model, 1) for c in token_channels)
            self.token_groups = nn.ModuleDict()
            for group in GROUPS:
                members = [n for n in self.layers if groups[layer_resolutions[n]] == group]
                if members:
                    self.token_groups[group] = TokenGroup(layers=members, shapes=layer_shapes, num_tokens=num_tokens,
                                                          d_model=d_model, num_heads=num_heads, num_blocks=num_blocks)
            self.register_buffer("token_gains", torch.tensor([float(layer_gains[n]) for n in self.layers]), persistent=False)
        else:
            self.token_projections = None
            self.token_groups = None

    def _make_backbone(self, *, in_channels: int) -> nn.Module:
        cfg = self.config
        if cfg.backbone == "cnn":
            return ConvBackbone(in_channels=in_channels, input_resolution=self.input_resolution, base_channels=cfg.base_channels)
        return ResNetBackbone(depth=int(cfg.backbone[len("resnet"):]), in_channels=in_channels, pretrained=cfg.pretrained_backbone)

    # ----------------------------------------------------------------------------------------------
    # Construction

    @classmethod
    def from_generator(
        cls,
        generator: StyleGAN2Generator,
        *,
        num_tokens: Optional[int] = None,
        layers: Optional[Sequence[str]] = None,
        backbone: str = "cnn",
        pretrained_backbone: bool = False,
        input_resolution: Optional[int] = None,
        base_channels: int = 32,
        d_model: int = 128,
        num_heads: int = 4,
        num_blocks: int = 2,
        w_head_channels: int = 64,
        token_branch: bool = True,
        token_input: str = "image",
        w_plus: bool = True,
        description: str = "",
        seed: int = 0,
    ) -> "RefineStyleEncoder":
        """An untrained encoder for ``generator``: layer info, ``w_avg`` and ``w_mean`` from it, weights from ``seed``.

        ``layers`` defaults to ``generator.refinable_layers()``. With ``pretrained_backbone=True`` the
        ResNet's ImageNet weights are loaded (downloaded once; a clear error when they cannot be).
        """
        if not isinstance(generator, StyleGAN2Generator):
            raise TypeError(f"generator must be a StyleGAN2Generator, got {type(generator).__name__}")
        refinable = generator.refinable_layers()
        names = list(refinable) if layers is None else list(layers)
        unknown = [n for n in names if n not in generator.layer_names]
        if unknown:
            raise ValueError(f"layers {unknown} are not layers of the generator ({generator.layer_names})")
        shapes = {n: [generator.layer(n).out_channels, generator.layer(n).in_channels, generator.layer(n).kernel_size] for n in names}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            encoder = cls(
                resolution=generator.config.resolution, input_resolution=input_resolution, num_ws=generator.num_ws,
                w_dim=generator.config.w_dim, layer_shapes=shapes if token_branch else None,
                layer_resolutions={n: generator.layer(n).resolution for n in names} if token_branch else None,
                layer_w_index={n: generator.layer_w_index(n) for n in names} if token_branch else None,
                layer_gains={n: generator.kernel_scale(n) for n in names} if token_branch else None,
                num_tokens=num_tokens or generator.config.num_tokens, backbone=backbone,
                pretrained_backbone=pretrained_backbone, base_channels=base_channels, d_model=d_model,
                num_heads=num_heads, num_blocks=num_blocks, w_head_channels=w_head_channels, token_branch=token_branch,
                token_input=token_input, w_plus=w_plus, description=description,
                synthesis_digest=generator.synthesis_digest(),
            )
        with torch.no_grad():
            encoder.w_avg.copy_(generator.mapping.w_avg.detach().cpu())
            encoder.w_mean.copy_(mapping_mean(generator, seed=seed).cpu())
        if pretrained_backbone:
            encoder.load_imagenet_backbone()
        return encoder.to(generator.mapping.w_avg.device)

    def load_imagenet_backbone(self) -> None:
        """Load torchvision's ImageNet weights into the ResNet backbone(s) (needs ``pretrained_backbone=True``)."""
        if not self.config.backbone.startswith("resnet") or not self.config.pretrained_backbone:
            raise ValueError("ImageNet weights need backbone='resnet18'/'resnet34' with pretrained_backbone=True")
        for net in (self.feature_backbone, self.token_backbone):
            if net is not None:
                net.load_imagenet_weights()

    # ----------------------------------------------------------------------------------------------
    # Parts (two-stage training freezes the W+ part)

    @property
    def kind(self) -> str:
        """``"two-stage"`` when the token branch also sees the stage-one reconstruction, else ``"one-stage"``."""
        return "two-stage" if self.config.token_input == "image+reconstruction" else "one-stage"

    def w_plus_modules(self) -> list[nn.Module]:
        """The modules that predict W+ (backbone and heads); the token branch is everything else."""
        return [self.feature_backbone, self.w_heads]

    def w_plus_state_dict(self) -> dict[str, torch.Tensor]:
        """Weights of the W+ part (``feature_backbone.*``, ``w_heads.*``, ``w_avg``, ``w_mean``), e.g. to start a two-stage encoder."""
        return {k: v for k, v in self.state_dict().items()
                if k in ("w_avg", "w_mean") or k.startswith(("feature_backbone.", "w_heads."))}

    def load_w_plus(self, stage_one: "RefineStyleEncoder") -> None:
        """Copy the W+ part of a (stage-one) encoder with the same W+ architecture into this one."""
        keys = ("resolution", "w_dim", "backbone", "pretrained_backbone", "base_channels", "w_head_channels", "w_plus")
        diff = {k: (stage_one.config[k], self.config[k]) for k in keys if stage_one.config[k] != self.config[k]}
        if stage_one.num_ws != self.num_ws or stage_one.input_resolution != self.input_resolution:
            diff["num_ws/input_resolution"] = ((stage_one.num_ws, stage_one.input_resolution), (self.num_ws, self.input_resolution))
        if diff:
            raise ValueError(f"the stage-one encoder's W+ part differs from this encoder's (theirs, ours): {diff}")
        own = self.state_dict()
        state = stage_one.w_plus_state_dict()
        self.load_state_dict({**own, **{k: v.to(own[k].dtype) for k, v in state.items()}}, strict=True)

    # ----------------------------------------------------------------------------------------------
    # Checks

    def check_generator(self, generator: StyleGAN2Generator) -> None:
        """Raise a clear error when ``generator`` is not the one this encoder was made for."""
        if not isinstance(generator, StyleGAN2Generator):
            raise TypeError(f"generator must be a StyleGAN2Generator, got {type(generator).__name__}")
        cfg, sig = self.config, generator.signature()
        problems = []
        if sig["resolution"] != cfg.resolution:
            problems.append(f"resolution {sig['resolution']} (encoder: {cfg.resolution})")
        if sig["w_dim"] != cfg.w_dim or generator.num_ws != self.num_ws:
            problems.append(f"W+ shape [{generator.num_ws}, {sig['w_dim']}] (encoder: [{self.num_ws}, {cfg.w_dim}])")
        for name in self.layers:
            theirs = sig["layers"].get(name)
            if theirs is None:
                problems.append(f"no layer {name!r}")
                continue
            if list(theirs) != list(cfg.layer_shapes[name]):
                problems.append(f"{name} shape {list(theirs)} (encoder: {list(cfg.layer_shapes[name])})")
            elif generator.layer_w_index(name) != cfg.layer_w_index[name] or generator.layer(name).resolution != cfg.layer_resolutions[name]:
                problems.append(f"{name} at another w index or resolution")
        if not problems:
            theirs = generator.mapping.w_avg.detach().float().cpu()
            mine = self.w_avg.detach().float().cpu()
            # w_avg within 1% (cheap; also accepts a copy cast to another dtype), or else the very synthesis the
            # encoder was trained with: a generator whose mapping alone was retrained moves w_avg, not the images.
            if (mine - theirs).norm() > 1e-2 * theirs.norm() + 1e-6 and (
                    cfg.synthesis_digest is None or generator.synthesis_digest() != cfg.synthesis_digest):
                problems.append("a different w_avg and synthesis (same architecture, other weights: the encoder was trained "
                                "for another generator)")
        if problems:
            raise ValueError("this encoder does not fit the generator: " + "; ".join(problems[:6]) +
                             ". Use the encoder trained with this generator, or train one: python -m refinestyle.train.encoder")

    def prepare_images(self, images: torch.Tensor) -> torch.Tensor:
        """Check ``[N, 3, H, H]`` float images in [-1, 1] on the encoder's device; resize to ``input_resolution``."""
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"images must be a float tensor [N, 3, H, W] in [-1, 1], got {type(images).__name__}; "
                            "convert PIL images or files with refinestyle.images.images_to_tensor")
        if images.dim() == 3:
            images = images[None]
        if images.dim() != 4 or images.shape[1] != 3 or images.shape[0] == 0:
            raise ValueError(f"images must have shape [N, 3, H, W] with N >= 1, got {list(images.shape)}")
        if not images.is_floating_point():
            raise TypeError(f"images must be a float tensor in [-1, 1], got {images.dtype}; map uint8 with x / 127.5 - 1")
        ref = self.w_avg
        if images.device != ref.device:
            raise ValueError(f"images are on {images.device} but the encoder is on {ref.device}; move one of them")
        if not torch.isfinite(images).all():
            raise ValueError("images contain NaN or infinite values")
        lo, hi = float(images.min()), float(images.max())
        if lo < -1.5 or hi > 1.5:
            raise ValueError(f"images must be in [-1, 1], got values in [{lo:.2f}, {hi:.2f}]; "
                             "map [0, 1] with x * 2 - 1 or [0, 255] with x / 127.5 - 1")
        h, w = images.shape[-2:]
        if h != w:
            raise ValueError(f"images must be square, got {h}x{w}; centre-crop them (refinestyle.images.images_to_tensor does)")
        images = images.to(ref.dtype)
        if h != self.input_resolution:
            images = F.interpolate(images, size=(self.input_resolution,) * 2, mode="bilinear", align_corners=False,
                                   antialias=True)  # [N, 3, Rin, Rin]
        return images

    # ----------------------------------------------------------------------------------------------
    # Forward

    def forward(self, images: torch.Tensor, *, generator: Optional[StyleGAN2Generator] = None) -> EncoderOutput:
        """Images ``[N, 3, H, H]`` in [-1, 1] → ``EncoderOutput`` (W+ and per-image tokens).

        ``generator`` is required by two-stage encoders (``token_input="image+reconstruction"``), which
        synthesise the stage-one reconstruction (without gradients) for the token branch; others check it fits.
        """
        x = self.prepare_images(images)  # [N, 3, Rin, Rin]
        if generator is not None:
            self.check_generator(generator)
        maps = self.feature_backbone(x)  # [fine, medium, coarse]
        delta = self.w_heads(maps)  # [N, num_ws or 1, w_dim]
        if delta.shape[1] != self.num_ws:
            delta = delta.expand(-1, self.num_ws, -1)  # [N, num_ws, w_dim]
        ws = self.w_mean + delta  # [N, num_ws, w_dim]
        if not self.config.token_branch:
            return EncoderOutput(ws=ws, tokens=None, reconstruction=None)

        reconstruction = None
        if self.token_backbone is not None:
            if generator is None:
                raise ValueError("this two-stage encoder feeds the token branch the stage-one reconstruction: "
                                 "call it with generator=G (the generator it was trained for)")
            with torch.no_grad():
                reconstruction = generator.synthesis(ws.detach(), noise_mode="const").clamp(-1, 1)  # [N, 3, R, R]
            rec_in = reconstruction
            if rec_in.shape[-1] != self.input_resolution:
                rec_in = F.interpolate(rec_in, size=(self.input_resolution,) * 2, mode="bilinear", align_corners=False,
                                       antialias=True)  # [N, 3, Rin, Rin]
            maps = self.token_backbone(torch.cat([x, rec_in.to(x.dtype)], dim=1))  # [fine, medium, coarse]

        flat = []
        for proj, fmap in zip(self.token_projections, maps):
            f = proj(fmap)  # [N, D, h, w]
            code = sincos_position_code(f.shape[2], f.shape[3], f.shape[1], device=f.device, dtype=f.dtype)  # [h*w, D]
            flat.append(f.flatten(2).transpose(1, 2) + code)  # [N, h*w, D]
        predicted: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for group, block in self.token_groups.items():
            predicted.update(block(flat[GROUP_SCALE[group]]))
        layers = {}
        for j, name in enumerate(self.layers):
            p, q = predicted[name]
            layers[name] = LayerTokens(p, q, self.token_gains[j])  # [N, K, O], [N, K, I*k*k], []
        return EncoderOutput(ws=ws, tokens=TokenSet(layers), reconstruction=reconstruction)

    @torch.no_grad()
    def invert(self, images: torch.Tensor, *, generator: Optional[StyleGAN2Generator] = None) -> tuple[torch.Tensor, TokenSet]:
        """``(ws [N, num_ws, w_dim], tokens)`` for images in [-1, 1]; a W+-only encoder gives an empty ``TokenSet``.

        Pass ``generator`` to check the encoder fits it (two-stage encoders require it).
        """
        out = self(images, generator=generator)
        return out.ws, out.tokens if out.tokens is not None else TokenSet({})
