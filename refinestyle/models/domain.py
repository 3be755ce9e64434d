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

    Its config records the generator it was made for (``generator_signature``: resolution, w_dim and
    every layer's shape), so applying it to another generator fails with a clear error.

    Args:
        generator_signature: ``StyleGAN2Generator.signature()`` of the generator it fits.
        layers: the refined layer names.
        num_tokens: K, tokens per layer.
        source: the source prompt it was adapted from (metadata).
        target: the target prompt (metadata).
        description: free text for the model card.

    Examples:
        ```py
        >>> from refinestyle import StyleGAN2Generator, DomainTokens
        >>> G = StyleGAN2Generator(z_dim=32, w_dim=32, resolution=16, channel_base=256, channel_max=32, mapping_layers=2)
        >>> dom = DomainTokens.from_generator(G, num_tokens=4, seed=0)
        >>> dom.check_compatible(G); dom.num_parameters() > 0
        True
        ```
    """

    @register_to_config
    def __init__(
        self,
        generator_signature: Optional[dict] = None,
        layers: Optional[list] = None,
        num_tokens: int = 8,
        source: str = "",
        target: str = "",
        description: str = "",
    ):
        super().__init__()
        if not generator_signature or not layers:
            raise ValueError("DomainTokens needs generator_signature and layers; build one with DomainTokens.from_generator(G)")
        shapes = generator_signature["layers"]
        unknown = [name for name in layers if name not in shapes]
        if unknown:
            raise ValueError(f"layers {unknown} are not in the generator signature")
        self.p = nn.ParameterDict()
        self.q = nn.ParameterDict()
        self.gain = nn.ParameterDict()
        for name in layers:
            o, i, k = shapes[name]
            self.p[_param_name(name)] = nn.Parameter(torch.zeros(num_tokens, o))
            self.q[_param_name(name)] = nn.Parameter(torch.zeros(num_tokens, i * k * k))
            self.gain[_param_name(name)] = nn.Parameter(torch.ones([]))

    @classmethod
    def from_generator(cls, generator, *, num_tokens: int | None = None, layers: Sequence[str] | None = None,
                       seed: int | torch.Generator = 0, q_std: float = 1.0, source: str = "", target: str = "") -> "DomainTokens":
        """A zero-residual domain for ``generator`` (``P = 0``, random ``Q``, gain = each layer's kernel scale)."""
        rng = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(int(seed))
        init = generator.init_tokens(num_tokens=num_tokens, layers=layers, generator=rng, q_std=q_std)
        dom = cls(generator_signature=generator.signature(), layers=list(init.layers), num_tokens=init.rank,
                  source=source, target=target)
        with torch.no_grad():
            for name, t in init.layers.items():
                dom.p[_param_name(name)].copy_(t.p)
                dom.q[_param_name(name)].copy_(t.q)
                dom.gain[_param_name(name)].copy_(t.gain)
        return dom.to(generator.mapping_module.w_avg.device)

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
