"""Inversion by optimisation: W+ first, then per-image tokens (works with any StyleGAN2, no encoder).

Loss: L2 + (1 - SSIM) (pytorch_msssim) + a small token-norm regulariser. Starts from ``w_avg`` or
from given ``ws``/``tokens`` (e.g. an encoder's output, to refine it further).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from .loops import StopSignal, check_stop
from .models.refinement import LayerTokens, TokenSet
from .models.stylegan2 import StyleGAN2Generator


ALIGNMENTS = ("none", "ffhq")
DOMAIN_SCORES = ("w_psnr", "refined_psnr")
INVERSION_METHODS = ("encoder", "optimize", "encoder+optimize")  # what model.invert runs ("auto" picks one of them)


@dataclass(frozen=True)
class DomainCheck:
    """How a model tells whether an image lies in its domain: one score of the inversion (``w_psnr``: PSNR of the
    W+-only reconstruction; ``refined_psnr``: of the refined one) against a threshold calibrated on held-out
    in-domain images, for inversions by ``method``. Stored in ``model_index.json`` as ``"domain_check"``."""

    score: str
    threshold: float
    method: str

    @classmethod
    def from_dict(cls, data: dict, *, source: str) -> "DomainCheck":
        threshold = data.get("threshold") if isinstance(data, dict) else None
        if not isinstance(data, dict) or set(data) != {"score", "threshold", "method"} or data["score"] not in DOMAIN_SCORES \
                or isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold) \
                or data["method"] not in INVERSION_METHODS:
            raise ValueError(f"{source}: domain_check must be {{'score': one of {DOMAIN_SCORES}, 'threshold': a finite number, "
                             f"'method': one of {INVERSION_METHODS}}}, got {data!r}")
        return cls(score=data["score"], threshold=float(data["threshold"]), method=data["method"])

    def to_dict(self) -> dict:
        return {"score": self.score, "threshold": self.threshold, "method": self.method}


@dataclass
class InversionOutput:
    """Result of ``RefineStyleModel.invert``.

    images: refined reconstructions ``[N, 3, R, R]`` in [-1, 1]; ws: W+ ``[N, num_ws, w_dim]``;
    tokens: per-image ``TokenSet``; w_images: W+-only reconstructions; targets: the preprocessed inputs (the
    aligned crops when aligned); seconds: wall time of the inversion; method: ``"encoder"`` or ``"optimize"``;
    aligned: one ``refinestyle.faces.AlignedFace`` per image when faces were aligned (``faces.paste_back`` puts an
    edit back into the photo), else None; scores: every ``DOMAIN_SCORES`` entry, one value per image;
    domain_score / in_domain: the score the model's ``domain_check`` reads and its verdict per image (None when
    the model has no calibrated check for this method).
    """

    images: torch.Tensor
    ws: torch.Tensor
    tokens: TokenSet
    w_images: torch.Tensor
    targets: torch.Tensor
    seconds: float
    method: str
    aligned: Optional[list] = None
    scores: Optional[dict[str, torch.Tensor]] = None
    domain_score: Optional[torch.Tensor] = None
    in_domain: Optional[list[bool]] = None


def domain_scores(*, images: torch.Tensor, w_images: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each of ``DOMAIN_SCORES`` per image ``[N]``: how well the generator redraws the inputs."""
    from .evaluation import psnr

    return {"w_psnr": psnr(w_images, targets), "refined_psnr": psnr(images, targets)}


@dataclass
class InversionState:
    step: int
    total: int
    stage: str  # "w" or "tokens"
    loss: float


def reconstruction_loss(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    from pytorch_msssim import ssim

    l2 = F.mse_loss(fake, real)
    s = ssim((fake.clamp(-1, 1) + 1) / 2, (real + 1) / 2, data_range=1.0, size_average=True, win_size=7)
    return l2 + (1 - s)


def invert_optimize(
    G: StyleGAN2Generator,
    targets: torch.Tensor,
    *,
    w_steps: int = 200,
    token_steps: int = 100,
    w_lr: float = 0.03,
    token_lr: float = 0.02,
    num_tokens: Optional[int] = None,
    token_reg: float = 1e-3,
    seed: int = 0,
    init_ws: Optional[torch.Tensor] = None,
    init_tokens: Optional[TokenSet] = None,
    callback: Optional[Callable[[int, int, InversionState], None]] = None,
    stop: Optional[StopSignal] = None,
) -> tuple[torch.Tensor, TokenSet]:
    """Optimise W+ (``w_steps``) then per-image tokens (``token_steps``) to reconstruct ``targets``.

    ``stop`` (e.g. a ``threading.Event``): when set, the loop raises ``Cancelled`` before its next step.
    """
    for name, v in (("w_steps", w_steps), ("token_steps", token_steps)):
        if not isinstance(v, int) or not 0 <= v <= 5000:
            raise ValueError(f"{name} must be an integer from 0 to 5000, got {v!r}")
    G = G.eval().requires_grad_(False)
    n = targets.shape[0]
    total = w_steps + token_steps
    if init_ws is None:
        init_ws = G.mean_ws()[None].expand(n, -1, -1)
    ws = init_ws.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([ws], lr=w_lr, betas=(0.9, 0.999))
    for step in range(w_steps):
        check_stop(stop, what="inversion", step=step, total=total)
        loss = reconstruction_loss(G.synthesis(ws), targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if callback is not None:
            callback(step + 1, total, InversionState(step + 1, total, "w", loss.item()))
    ws = ws.detach()
    if init_tokens is None:
        tokens = G.init_tokens(batch_size=n, num_tokens=num_tokens, generator=torch.Generator().manual_seed(seed))
    else:
        tokens = init_tokens.detach()
    leaves = {name: (t.p.clone().requires_grad_(True), t.q.clone().requires_grad_(True), t.gain) for name, t in tokens.layers.items()}
    params = [x for p, q, _ in leaves.values() for x in (p, q)]
    if token_steps and params:
        opt = torch.optim.Adam(params, lr=token_lr, betas=(0.9, 0.999))
        for step in range(token_steps):
            check_stop(stop, what="inversion", step=w_steps + step, total=total)
            current = TokenSet({k: LayerTokens(p, q, g) for k, (p, q, g) in leaves.items()})
            loss = reconstruction_loss(G.synthesis(ws, tokens=current), targets)
            loss = loss + token_reg * sum(p.square().mean() for p, _, _ in leaves.values()) / len(leaves)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if callback is not None:
                callback(w_steps + step + 1, total, InversionState(w_steps + step + 1, total, "tokens", loss.item()))
    final = TokenSet({k: LayerTokens(p.detach(), q.detach(), g) for k, (p, q, g) in leaves.items()})
    return ws, final

