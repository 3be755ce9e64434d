"""SynthFaces' mapping network: official StyleGAN2's plus two extras, and the widening its training uses.

Kept apart from ``stylegan2.py`` so the official-parity model stays what people port code against; a generator
builds this mapping only when its config asks for the extras (``z_bins`` or ``mapping_per_layer``), and its
state-dict keys stay under ``mapping.``.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .stylegan2 import MappingNetwork


class SynthFacesMappingNetwork(MappingNetwork):
    """``MappingNetwork`` with categorical bins of z and per-layer maps of w.

    ``z_bins`` lists ``(z index, edges)`` for coordinates of z that encode a categorical choice by bins
    (SynthFaces' eye colour: three bins of one Gaussian coordinate). Each such coordinate also enters the
    first layer as a one-hot of its bin, through ``fc0_bins`` (zero at initialisation: a no-op, bit for bit),
    so the network can jump between categories where the data does instead of gliding through them.

    ``per_layer_maps`` adds a linear map per synthesis layer, ``ws[:, i] = w + A_i w + b_i`` (``per_layer``),
    zero at initialisation (a no-op, bit for bit): each layer's style becomes its own linear function of w,
    a W+ output with no extra depth. Being linear in w, truncating w toward ``w_avg`` truncates every layer's
    latent toward that layer's mean exactly.
    """

    def __init__(self, *, z_dim: int, w_dim: int, num_ws: int, num_layers: int, lr_multiplier: float,
                 normalize_z: bool = True, hidden_dim: Optional[int] = None,
                 z_bins: Sequence[tuple[int, Sequence[float]]] = (), per_layer_maps: bool = False):
        super().__init__(z_dim=z_dim, w_dim=w_dim, num_ws=num_ws, num_layers=num_layers, lr_multiplier=lr_multiplier,
                         normalize_z=normalize_z, hidden_dim=hidden_dim)
        self.z_bins = list(z_bins)  # validated by check_z_bins
        if self.z_bins:
            num_features = sum(len(edges) + 1 for _, edges in self.z_bins)
            # Stored / lr_mul like EqualLinear; one feature per group is on, so the gain divides by √groups.
            self.fc0_bins = nn.Parameter(torch.zeros(self.fc0.weight.shape[0], num_features))
            self.bins_gain = lr_multiplier / math.sqrt(len(self.z_bins))
            for index, edges in self.z_bins:
                self.register_buffer(f"bin_edges_{index}", torch.tensor(edges), persistent=False)
        self.per_layer_maps = per_layer_maps
        if per_layer_maps:
            # Stored / lr_mul and run with gain lr_mul / √w_dim, like EqualLinear.
            self.layer_maps = nn.Parameter(torch.zeros(num_ws, w_dim, w_dim))
            self.layer_biases = nn.Parameter(torch.zeros(num_ws, w_dim))
            self.layer_maps_gain = lr_multiplier / math.sqrt(w_dim)
            self.layer_biases_gain = lr_multiplier

    def bin_features(self, z: torch.Tensor) -> torch.Tensor:
        """One-hot bin of each binned coordinate of the raw z, concatenated: ``[N, Σ (edges + 1)]``."""
        groups = []
        for index, _ in self.z_bins:
            edges = getattr(self, f"bin_edges_{index}").to(z.dtype)
            bin_index = (z[:, index, None] >= edges).sum(dim=1)  # [N]: edges at or below the value
            groups.append(F.one_hot(bin_index, len(edges) + 1).to(z.dtype))  # [N, edges + 1]
        return torch.cat(groups, dim=1)  # [N, num_features]

    def first_layer_extra(self, z: torch.Tensor) -> Optional[torch.Tensor]:
        if not self.z_bins:
            return None
        return self.bin_features(z) @ (self.fc0_bins * self.bins_gain).t()  # [N, hidden_dim]

    def per_layer(self, w: torch.Tensor) -> torch.Tensor:
        """w ``[N, w_dim]`` → W+ ``[N, num_ws, w_dim]``: w repeated, plus each layer's map where there are maps."""
        ws = super().per_layer(w)  # [N, num_ws, w_dim]
        if self.per_layer_maps:
            maps = self.layer_maps * self.layer_maps_gain  # [num_ws, w_dim, w_dim]
            ws = ws + torch.einsum("nd,lod->nlo", w, maps) + self.layer_biases * self.layer_biases_gain  # [N, num_ws, w_dim]
        return ws


def check_z_bins(z_bins: Optional[list], *, z_dim: int) -> list[tuple[int, list[float]]]:
    if z_bins is None:
        return []
    fix = "give [[z index, [edges, ...]], ...] with distinct indices below z_dim and sorted finite edges"
    if not isinstance(z_bins, (list, tuple)):
        raise ValueError(f"z_bins must be a list, got {type(z_bins).__name__}; {fix}")
    out, seen = [], set()
    for item in z_bins:
        if not (isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], int)
                and isinstance(item[1], (list, tuple)) and item[1]):
            raise ValueError(f"z_bins entry {item!r} is not [z index, [edges, ...]]; {fix}")
        index, edges = item
        if not 0 <= index < z_dim or index in seen:
            raise ValueError(f"z_bins index {index} is out of range or repeated (z_dim {z_dim}); {fix}")
        if not all(isinstance(e, (int, float)) and math.isfinite(e) for e in edges) or list(edges) != sorted(edges):
            raise ValueError(f"z_bins edges {list(edges)!r} for index {index} must be sorted finite numbers; {fix}")
        seen.add(index)
        out.append((index, [float(e) for e in edges]))
    return out


@torch.no_grad()
def widen_mapping(G, hidden_dim: int, *, seed: int = 0):
    """A copy of the generator ``G`` whose mapping has ``hidden_dim`` hidden units and draws exactly the same images.

    More mapping capacity without touching the synthesis, so the encoders and domains made on it still hold.
    The new units get random input weights (from ``seed``) and zero output weights, so they change nothing
    until trained; the old units' weights into the next layer are rescaled for its larger fan-in (the
    equalized learning rate divides by √in). Checked on random z: the copy's ``mapping`` equals this one's.
    """
    mapping = G.mapping
    if mapping.num_layers < 2:
        raise ValueError("a one-layer mapping has no hidden layer to widen")
    if not isinstance(hidden_dim, int) or hidden_dim < mapping.hidden_dim:
        raise ValueError(f"hidden_dim must be an integer of at least the current width {mapping.hidden_dim}, got {hidden_dim!r}")
    config = {k: v for k, v in G.config.items() if not k.startswith("_")}
    ref = G.mapping_network_weight
    wide = type(G)(**{**config, "mapping_hidden_dim": hidden_dim}).to(ref.device)
    if ref.dtype != torch.float32:
        wide = wide.to(dtype=ref.dtype)
    g = torch.Generator().manual_seed(seed)
    state = G.state_dict()
    for idx in range(mapping.num_layers):
        old, new = getattr(mapping, f"fc{idx}"), getattr(wide.mapping, f"fc{idx}")
        (o_old, i_old), (o_new, i_new) = old.weight.shape, new.weight.shape
        lr_mul = old.bias_gain
        weight = torch.randn(o_new, i_new, generator=g).to(ref) / lr_mul  # [O', I']: new units hear all, as at init
        weight[:o_old] = 0  # the old units hear nothing from the new ones ...
        weight[:o_old, :i_old] = old.weight * math.sqrt(i_new / i_old)  # ... and keep their run-time weights
        state[f"mapping.fc{idx}.weight"] = weight
        state[f"mapping.fc{idx}.bias"] = torch.cat([old.bias, old.bias.new_zeros(o_new - o_old)])  # [O']
    if getattr(mapping, "z_bins", None):
        bins = mapping.fc0_bins  # [hidden, features]
        state["mapping.fc0_bins"] = torch.cat([bins, bins.new_zeros(hidden_dim - bins.shape[0], bins.shape[1])])
    wide.load_state_dict(state, strict=True)
    z = torch.randn(64, G.config.z_dim, generator=g).to(ref)
    before, after = G.mapping.w(z), wide.mapping.w(z)  # [64, w_dim]
    if not torch.allclose(before, after, rtol=1e-4, atol=1e-4 * float(before.abs().max())):
        raise RuntimeError(f"widened mapping differs by {float((before - after).abs().max()):.3g}: please report this")
    return wide.train(G.training)
