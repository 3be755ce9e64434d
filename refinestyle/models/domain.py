"""``DomainTokens``: a shared token set (a domain) as a small Hub model of its own."""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from ..hub import HubModelMixin
from .refinement import LayerTokens, TokenSet


def _param_name(layer: str) -> str:
    return layer.replace(".", "_")


class DomainTokens(HubModelMixin, ModelMixin, ConfigMixin):
    r"""A shared token set: per refined layer ``P [K, O]``, ``Q [K, I·k·k]`` and a gain, for every image.

    ``K`` may differ per layer (``layer_tokens``): a toRGB residual ``[3, I]`` has rank at most 3, and giving
    those cheap layers all three (K = 1 elsewhere) lets a domain re-colour freely for ~0.5% of the file.

    Its config records the generator it was made for (``generator_signature``: resolution, w_dim and
    every layer's shape), so applying it to another generator fails with a clear error.

    Args:
        generator_signature: ``StyleGAN2Generator.signature()`` of the generator it fits.
        layers: the refined layer names.
        num_tokens: K, tokens per layer.
        layer_tokens: layer name → K for the layers whose K differs from ``num_tokens``.
        source: the source prompt it was adapted from (metadata).
        target: the target prompt (metadata).
        description: free text for the model card.
        suggested_strength: the strength at which the CLIPs saw the style reached (``adaptation.suggest_strength``;
            ``model.adapt`` records it); None when not measured. ``strength=1`` is the tokens as optimised.

    Examples:
        ```py
        >>> from refinestyle import StyleGAN2Generator, DomainTokens
        >>> G = StyleGAN2Generator(z_dim=32, w_dim=32, resolution=16, channel_base=256, channel_max=32, mapping_layers=2)
        >>> dom = DomainTokens.from_generator(G, num_tokens=4, seed=0)
        >>> dom.check_compatible(G); dom.num_parameters() > 0
        True
        >>> layers = list(G.refinable_layers(include_torgb=True))  # the default leaves toRGB out
        >>> mixed = DomainTokens.from_generator(G, num_tokens=1, torgb_tokens=3, layers=layers, seed=0)
        >>> mixed.tokens_per_layer()["b16.torgb"], mixed.tokens_per_layer()["b16.conv1"]
        (3, 1)
        ```
    """

    @register_to_config
    def __init__(
        self,
        generator_signature: Optional[dict] = None,
        layers: Optional[list] = None,
        num_tokens: int = 8,
        layer_tokens: Optional[dict] = None,
        source: str = "",
        target: str = "",
        description: str = "",
        suggested_strength: Optional[float] = None,
    ):
        super().__init__()
        if suggested_strength is not None and (isinstance(suggested_strength, bool) or not isinstance(suggested_strength, (int, float))
                                               or not 0 < suggested_strength <= 10):
            raise ValueError(f"suggested_strength must be None or a number in (0, 10], got {suggested_strength!r}")
        if not generator_signature or not layers:
            raise ValueError("DomainTokens needs generator_signature and layers; build one with DomainTokens.from_generator(G)")
        shapes = generator_signature["layers"]
        unknown = [name for name in layers if name not in shapes]
        if unknown:
            raise ValueError(f"layers {unknown} are not in the generator signature")
        check_token_count("num_tokens", num_tokens)
        layer_tokens = dict(layer_tokens or {})
        stray = [name for name in layer_tokens if name not in layers]
        if stray:
            raise ValueError(f"layer_tokens names layers {stray} that this domain does not refine (its layers: {list(layers)})")
        for name, k in layer_tokens.items():
            check_token_count(f"layer_tokens[{name!r}]", k)
        self.p = nn.ParameterDict()
        self.q = nn.ParameterDict()
        self.gain = nn.ParameterDict()
        for name in layers:
            o, i, k = shapes[name]
            rank = layer_tokens.get(name, num_tokens)
            self.p[_param_name(name)] = nn.Parameter(torch.zeros(rank, o))
            self.q[_param_name(name)] = nn.Parameter(torch.zeros(rank, i * k * k))
            self.gain[_param_name(name)] = nn.Parameter(torch.ones([]))

    @classmethod
    def from_generator(cls, generator, *, num_tokens: int | None = None, torgb_tokens: int | None = None,
                       layers: Sequence[str] | None = None, seed: int | torch.Generator = 0, q_std: float = 1.0,
                       source: str = "", target: str = "") -> "DomainTokens":
        """A zero-residual domain for ``generator`` (``P = 0``, random ``Q``, gain = each layer's kernel scale).

        ``torgb_tokens`` gives the toRGB layers their own K (at most the image channels are useful: the
        residual of a 1×1 ``[C, I]`` layer has rank ≤ C).
        """
        rng = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(int(seed))
        k = num_tokens or generator.config.num_tokens
        names = list(layers) if layers is not None else list(generator.refinable_layers())
        if torgb_tokens is not None:
            check_token_count("torgb_tokens", torgb_tokens)
        per_layer = {name: torgb_tokens if torgb_tokens is not None and name.endswith(".torgb") else k for name in names}
        # One layer at a time from the same stream: with one K for all, the draws equal a single init_tokens call.
        init = {name: generator.init_tokens(num_tokens=per_layer[name], layers=[name], generator=rng, q_std=q_std).layers[name]
                for name in names}
        dom = cls(generator_signature=generator.signature(), layers=names, num_tokens=k,
                  layer_tokens={name: r for name, r in per_layer.items() if r != k} or None, source=source, target=target)
        with torch.no_grad():
            for name, t in init.items():
                dom.p[_param_name(name)].copy_(t.p)
                dom.q[_param_name(name)].copy_(t.q)
                dom.gain[_param_name(name)].copy_(t.gain)
        return dom.to(generator.mapping.w_avg.device)

    def tokens_per_layer(self) -> dict[str, int]:
        """K of each refined layer."""
        return {name: self.p[_param_name(name)].shape[0] for name in self.config.layers}

    def token_set(self) -> TokenSet:
        """The tokens as a ``TokenSet`` (differentiable views of the parameters)."""
        return TokenSet({name: LayerTokens(self.p[_param_name(name)], self.q[_param_name(name)], self.gain[_param_name(name)])
                         for name in self.config.layers})

    def check_compatible(self, generator) -> None:
        """Raise a clear error if this domain was made for a generator with other layer shapes."""
        mine, theirs = self.config.generator_signature, generator.signature()
        if mine["resolution"] != theirs["resolution"] or mine["w_dim"] != theirs["w_dim"]:
            raise ValueError(f"this domain was made for a {mine['resolution']} px generator with w_dim {mine['w_dim']}, "
                             f"not this {theirs['resolution']} px one with w_dim {theirs['w_dim']}; adapt a new domain for it")
        diff = [f"{n}: {mine['layers'].get(n)} vs {theirs['layers'].get(n)}" for n in self.config.layers
                if list(mine["layers"].get(n, [])) != list(theirs["layers"].get(n, []))]
        if diff:
            raise ValueError(f"this domain does not fit the generator (layer shapes differ: {diff[:4]}); adapt a new domain for it")

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @torch.no_grad()
    def truncated(self, rank: int, *, torgb_rank: int | None = None) -> "DomainTokens":
        """The best approximation of each layer's residual of rank at most ``rank`` (truncated SVD), as a new domain.

        Each layer's ``ΔW = gain/√K · PᵀQ`` (``[O, I·k·k]``) keeps its ``min(rank, K)`` largest singular values
        (Eckart–Young: no residual of that rank is closer in the Frobenius norm); layers whose residual has
        lower rank are padded with zero tokens. The file shrinks by about ``rank / K``; a domain adapted with
        many tokens for speed can be stored with few. Layers with fewer tokens than ``rank`` keep theirs.
        ``torgb_rank`` caps the toRGB layers instead (their residual has rank ≤ the image channels).
        """
        for name, value in (("rank", rank), ("torgb_rank", torgb_rank if torgb_rank is not None else 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")

        def cap(name: str) -> int:
            return torgb_rank if torgb_rank is not None and name.endswith(".torgb") else rank

        ranks = {name: min(cap(name), k) for name, k in self.tokens_per_layer().items()}
        default = min(rank, self.config.num_tokens)
        out = DomainTokens(generator_signature=self.config.generator_signature, layers=list(self.config.layers),
                           num_tokens=default, layer_tokens={n: r for n, r in ranks.items() if r != default} or None,
                           source=self.config.source, target=self.config.target,
                           description=(self.config.description + f" (rank-{rank}{f', toRGB rank-{torgb_rank}' if torgb_rank else ''} "
                                        f"SVD truncation of K = {self.config.num_tokens})").strip())
        for name in self.config.layers:
            key = _param_name(name)
            p, q, gain = self.p[key].double(), self.q[key].double(), self.gain[key].double()
            delta = (gain / p.shape[0] ** 0.5) * p.T @ q  # [O, I*k*k]
            u, sv, vh = torch.linalg.svd(delta, full_matrices=False)  # [O, r0], [r0], [r0, I*k*k]
            layer_rank = ranks[name]
            kept = min(layer_rank, sv.numel())
            root = sv[:kept].sqrt()  # split each singular value evenly between P and Q
            new_p = torch.zeros(layer_rank, p.shape[1], dtype=torch.float64)  # [rank, O]
            new_q = torch.zeros(layer_rank, q.shape[1], dtype=torch.float64)  # [rank, I*k*k]
            if gain != 0:  # a zero gain means a zero residual: all-zero tokens represent it
                new_p[:kept] = (layer_rank ** 0.5 / gain) * (u[:, :kept] * root).T  # [kept, O]
                new_q[:kept] = root[:, None] * vh[:kept]  # [kept, I*k*k]
            out.p[key].copy_(new_p)
            out.q[key].copy_(new_q)
            out.gain[key].copy_(self.gain[key])
        return out.to(self.p[_param_name(self.config.layers[0])].device)


def check_token_count(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 256:
        raise ValueError(f"{name} must be an integer from 1 to 256 (tokens per layer), got {value!r}")
