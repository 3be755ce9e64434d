"""Domain adaptation: optimise a shared token set (generator frozen) with CLIP guidance.

Losses (StyleGAN-NADA's formulation for the direction):

* directional: ``1 - cos(E_I(G_d(w)) - E_I(G(w)), E_T(target) - E_T(source))`` averaged over the
  batch (and over CLIP models when several are given);
* global (weight 0.5 by default): ``1 - cos(E_I(G_d(w)), E_T(target))``;
* content (optional, off by default): L2 between heavily downsampled refined and frozen luminance;
* regularisation: mean squared token values (``P`` relative to its scale).

The directional loss fixes where the images move, not how far: every SynthFaces domain goes on past the point
where its CLIP direction stops improving, and further from the renderer's ground truth (README, strength table).
``suggest_strength`` measures that point after the run, with the CLIPs alone: the smallest strength whose
directional similarity is within 1% of its best. ``adapt_tokens`` records it as the domain's
``suggested_strength``; ``strength=1`` stays the tokens as optimised.

A small CLIP is easy to fool: gradients through one fixed view find pixel patterns that move the
embedding without changing the style. ``augment_views`` adds random affine views (scale, shift, flip),
the same view for the refined and the frozen image, so only changes that survive them are rewarded.

Several CLIPs (``clips``; ``model.clip`` plus ``model.extra_clips``) average their losses, as StyleGAN-NADA does:
a pattern that fools one small CLIP rarely fools another.

The optimiser is Adam on the unit-norm gradient (see ``normalise_gradient``) with a cosine learning-rate decay.

``target_images`` replace the target text by their mean CLIP embedding.

Above 256 px the guides read the generator's 256 px skip image (``guide_resolution``; the CLIPs see 224 px
anyway, and a guide taking larger images reads a larger one): in the skip architecture that image is exactly what
the blocks up to 256 px draw, so a step synthesises and back-propagates those blocks only, and the domain refines
those layers only (the higher ones never reach the guide).

``optimise`` is the loop itself, over any parameters: ``bench/adaptation.py`` trains its baselines (full
fine-tuning, per-channel kernel scaling) with it, so they differ from RefineStyle only in what is trained.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from .loops import StopSignal, check_stop
from .clip import CLIPGuide, check_prompts
from .images import random_affine
from .models.domain import DomainTokens, check_token_count
from .models.stylegan2 import StyleGAN2Generator
from .options import LAYER_MODES, LR_SCHEDULES

MAX_STEPS = 5000
# The automatic token settings: the recipe of the shipped SynthFaces domains (see README, Domain adaptation).
MIN_TORGB_TOKENS = 3
AUTO_WARMUP_TOKENS = 8
AUTO_WARMUP_FRACTION = 0.4
# The automatic learning rate (lr=None): AUTO_LR_TRAVEL / steps within [AUTO_LR_MIN, AUTO_LR_MAX]. Each Adam step on
# the unit-norm gradient moves a token by about the learning rate, so steps × lr is how far a run can travel: a short
# run needs the larger rate to reach a style at all, and a long one at that rate travels past it into drift that
# depends on the seed, so the rate falls as the steps grow (bench/adaptation_sweep.py measures recipes over seeds).
AUTO_LR_TRAVEL = 0.75
AUTO_LR_MIN, AUTO_LR_MAX = 0.005, 0.01
# Strength suggestion: held-out faces of a seed that no training batch or benchmark uses, the strength grid, and
# how close to the best directional similarity is close enough.
SUGGEST_SEED = 777
SUGGEST_FACES = 32
SUGGEST_STEP = 0.05
SUGGEST_MAX_STRENGTH = 2.0
SUGGEST_TOLERANCE = 0.01
# The guide's image: generators above this resolution are read at their skip image of this size (every CLIP here
# sees at most 224 px), so a step synthesises and back-propagates only the blocks up to it (see guide_resolution).
GUIDE_MAX_RESOLUTION = 256
MIN_GUIDE_RESOLUTION = 16
REFERENCE_IMAGES_TARGET = "<reference images>"  # what an image-guided domain records as its target


@dataclass
class AdaptConfig:
    r"""Settings of one adaptation run (``model.adapt``'s keywords); ``None`` fields are resolved per generator.

    Examples:
        ```py
        >>> from refinestyle.adaptation import AdaptConfig
        >>> AdaptConfig(steps=200).token_plan(8)  # K, toRGB K, warm-up tokens, warm-up steps: the shipped recipe
        (1, 3, 8, 80)
        >>> AdaptConfig(num_tokens=None).token_plan(8)  # the generator's K everywhere: no warm-up needed
        (8, 8, None, 0)
        >>> AdaptConfig(steps=60).learning_rate(), AdaptConfig(steps=150).learning_rate()  # lr=None: by the steps
        (0.01, 0.005)
        ```
    """

    steps: int = 300
    # None: automatic, by the number of steps (learning_rate(): 0.01 up to 75 steps, 0.005 from 150).
    lr: Optional[float] = None
    lr_schedule: str = "cosine"
    batch: int = 8
    seed: int = 0
    # K per layer (None: the generator's). One token per convolution keeps a domain at a few KB (13 KB for SynthFaces: about 2% of its synthesis).
    num_tokens: Optional[int] = 1
    # K of the toRGB layers (None: max(num_tokens, 3)). Their residual [3, I] has rank ≤ 3, and 3 tokens there let
    # a K = 1 domain re-colour freely: styles that change the colours (a sketch's grey) otherwise stall at rank 1.
    torgb_tokens: Optional[int] = None
    # Rank warm-up: the first warmup_steps optimise warmup_tokens tokens on every layer, then each layer's residual
    # is truncated (SVD) to its final K and optimised further. Many tokens find the style quickly, the truncation
    # keeps the file small, and the rest of the steps repair what the truncation lost.
    # None: 8 tokens when some layer ends below 8 (none otherwise), for 40% of the steps; warmup_steps=0: no warm-up.
    warmup_tokens: Optional[int] = None
    warmup_steps: Optional[int] = None
    layers: str | Sequence[str] = "all"
    adaptive_k: int = 4
    truncation_psi: float = 0.7
    direction_weight: float = 1.0
    # Pulls each image toward the target text too: the directional loss alone fixes only the direction of the
    # change, and this term keeps the images in the target's class once they get there.
    global_weight: float = 0.5
    # The luminance-layout term fights styles that re-light the whole face (a sketch's white paper), so it
    # is off by default; the directional loss and the low rank keep the content.
    content_weight: float = 0.0
    content_size: int = 8
    reg_weight: float = 1e-3
    augment_views: int = 4
    # Measure the domain's suggested strength after the run (suggest_strength; a few seconds).
    suggest_strength: bool = True
    # Unknown prompt words are an error (each would be read as one 'unknown' token, silently); True: a warning.
    allow_unknown_words: bool = False
    # The resolution of the image the guide reads (None: the generator's, at most GUIDE_MAX_RESOLUTION or the guides'
    # own input size; see resolution_for). Below the generator's, each step stops at that block's skip image
    # (G.synthesis(..., max_resolution=...)), and the domain refines only the layers up to it: the higher ones never
    # reach the guide. At 1024 px with ViT-B/32 + B/16 a step is 2.4× cheaper (bench/full_size.py).
    guide_resolution: Optional[int] = None

    def validate(self) -> None:
        if not isinstance(self.steps, int) or not 1 <= self.steps <= MAX_STEPS:
            raise ValueError(f"steps must be an integer from 1 to {MAX_STEPS}, got {self.steps!r}")
        if not isinstance(self.batch, int) or not 1 <= self.batch <= 64:
            raise ValueError(f"batch must be an integer from 1 to 64, got {self.batch!r}")
        if self.lr is not None and (not isinstance(self.lr, (int, float)) or isinstance(self.lr, bool)
                                    or not math.isfinite(self.lr) or not 0 < self.lr <= 1):
            raise ValueError(f"lr must be None (automatic, by the number of steps) or a number in (0, 1], got {self.lr!r}")
        if not isinstance(self.augment_views, int) or not 0 <= self.augment_views <= 16:
            raise ValueError(f"augment_views must be an integer from 0 to 16, got {self.augment_views!r}")
        for name in ("num_tokens", "torgb_tokens", "warmup_tokens"):
            if getattr(self, name) is not None:  # None: automatic (see token_plan)
                check_token_count(name, getattr(self, name))
        if self.warmup_steps is not None and (not isinstance(self.warmup_steps, int) or isinstance(self.warmup_steps, bool)
                                              or not 0 <= self.warmup_steps < self.steps):
            raise ValueError(f"warmup_steps must be None (automatic) or an integer from 0 to steps - 1 ({self.steps - 1}), "
                             f"got {self.warmup_steps!r}")
        if self.warmup_tokens is not None and self.warmup_steps == 0:
            raise ValueError(f"warmup_tokens={self.warmup_tokens} with warmup_steps=0: give the warm-up steps (or None for "
                             f"{AUTO_WARMUP_FRACTION:.0%} of the steps), or leave warmup_tokens None for no warm-up")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if isinstance(self.layers, str) and self.layers not in LAYER_MODES:
            raise ValueError(f"layers must be one of {LAYER_MODES} or a list of layer names, got {self.layers!r}")
        if self.guide_resolution is not None and (
                not isinstance(self.guide_resolution, int) or isinstance(self.guide_resolution, bool)
                or self.guide_resolution < MIN_GUIDE_RESOLUTION or self.guide_resolution & (self.guide_resolution - 1)):
            raise ValueError(f"guide_resolution must be None (the generator's, at most {GUIDE_MAX_RESOLUTION}) or a power of "
                             f"two from {MIN_GUIDE_RESOLUTION}, got {self.guide_resolution!r}")
        for name in ("direction_weight", "global_weight", "content_weight", "reg_weight", "truncation_psi"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"{name} must be a finite non-negative number, got {v!r}")

    def learning_rate(self) -> float:
        """The peak learning rate: ``lr``, or for ``lr=None`` ``0.75 / steps`` clamped to [0.005, 0.01]."""
        if self.lr is not None:
            return float(self.lr)
        return min(AUTO_LR_MAX, max(AUTO_LR_MIN, AUTO_LR_TRAVEL / self.steps))

    def resolution_for(self, generator_resolution: int, guide_image_size: int = 0) -> int:
        """The resolution the guide reads for a generator of ``generator_resolution`` px and guides that take
        ``guide_image_size`` px images. Automatically, never fewer pixels than the guides take: on SynthFaces (64 px,
        64 px guides) reading the 32 px skip image costs every style, zombie's ground-truth PSNR falling from 17.4 to
        7.9 dB (docs/benchmarks.md), since the guide sees a blurred image and the last block stays unadapted."""
        if self.guide_resolution is None:
            floor = 2 ** math.ceil(math.log2(max(guide_image_size, GUIDE_MAX_RESOLUTION)))
            return min(generator_resolution, floor)
        if self.guide_resolution > generator_resolution:
            raise ValueError(f"guide_resolution {self.guide_resolution} is above the generator's {generator_resolution} px; "
                             f"use at most {generator_resolution} (or None)")
        return self.guide_resolution

    def token_plan(self, generator_tokens: int) -> tuple[int, int, Optional[int], int]:
        """The concrete ``(num_tokens, torgb_tokens, warmup_tokens, warmup_steps)`` for a generator whose default K
        is ``generator_tokens``; ``warmup_tokens`` is None (and ``warmup_steps`` 0) when there is no warm-up."""
        k = self.num_tokens if self.num_tokens is not None else generator_tokens
        torgb = self.torgb_tokens if self.torgb_tokens is not None else max(k, MIN_TORGB_TOKENS)
        warm_steps = self.warmup_steps if self.warmup_steps is not None else int(self.steps * AUTO_WARMUP_FRACTION)
        warm_tokens = self.warmup_tokens
        if warm_tokens is None and min(k, torgb) < AUTO_WARMUP_TOKENS and max(k, torgb) <= AUTO_WARMUP_TOKENS:
            warm_tokens = AUTO_WARMUP_TOKENS
        if warm_tokens is None and self.warmup_steps:
            raise ValueError(f"warmup_steps={self.warmup_steps} needs warmup_tokens: the automatic warm-up ({AUTO_WARMUP_TOKENS} "
                             f"tokens) only applies when some layer ends below {AUTO_WARMUP_TOKENS} and none above")
        if warm_tokens is None or warm_steps == 0:
            return k, torgb, None, 0
        if warm_tokens < max(k, torgb):
            raise ValueError(f"warmup_tokens ({warm_tokens}) must be at least num_tokens ({k}) and torgb_tokens ({torgb}): "
                             "the warm-up is truncated down to them")
        return k, torgb, warm_tokens, warm_steps


@dataclass
class AdaptState:
    """What the callback sees after each step."""

    step: int
    total: int
    loss: float
    lr: float  # the learning rate this step used
    direction_loss: float
    content_loss: float
    seconds: float
    preview: Optional[torch.Tensor] = None  # refined images of the fixed preview latents, every few steps
    preview_before: Optional[torch.Tensor] = None  # the frozen generator's images of the same latents, beside it
    synthesize: Optional[Callable[[torch.Tensor], torch.Tensor]] = None  # ws → images with the current parameters


@dataclass
class AdaptHistory:
    states: list[dict] = field(default_factory=list)
    stopped_early: Optional[str] = None


@dataclass
class StrengthSuggestion:
    """``suggest_strength``'s answer and the curve it read it from."""

    strength: Optional[float]  # smallest strength within ``tolerance`` of the best similarity (None: no such point)
    strengths: list[float]  # the strengths measured, in order
    directional: list[float]  # mean cos(E_I(G_s) - E_I(G_0), text direction) at each, averaged over the CLIPs
    tolerance: float


def text_directions(clips: Sequence[CLIPGuide], source: str, target: Optional[str],
                    target_images: Optional[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per CLIP: (unit direction target - source, target embedding)."""
    out = []
    for clip in clips:
        src = clip.encode_text([source])[0]
        if target_images is not None:
            tgt = F.normalize(clip.encode_image(target_images).mean(0), dim=-1)
        else:
            tgt = clip.encode_text([target])[0]
        direction = tgt - src
        if direction.norm() < 1e-6:
            raise ValueError("source and target give the same CLIP embedding; describe a different target")
        out.append((F.normalize(direction, dim=-1), tgt))
    return out


# An embedding change at most this fraction of the embedding's norm is rounding, not an edit (see clip_losses).
ZERO_DELTA = 1e-5


def clip_losses(clips: Sequence[CLIPGuide], directions, refined: torch.Tensor, frozen_emb: list[torch.Tensor]):
    """Directional and global CLIP losses, averaged over the CLIP models."""
    d_loss = refined.new_zeros(())
    g_loss = refined.new_zeros(())
    for clip, (direction, tgt), base in zip(clips, directions, frozen_emb):
        emb = clip.encode_image(refined)  # [N, D]
        diff = emb - base  # [N, D]
        # At the zero-residual start the refined images are the frozen ones, so diff should be exactly 0, where
        # F.normalize's gradient (I / eps) pulls along the text direction. But the CLIP's grad and no-grad passes
        # may round differently (~1e-7, on CPUs and GPUs alike); normalised, that noise would enter the loss and
        # turn the first gradient, whose sign Adam's first step follows at full size. Rows that small count as
        # exactly 0 (same value, same gradient), so every device and thread count starts alike.
        tiny = diff.detach().norm(dim=-1, keepdim=True) <= ZERO_DELTA * emb.detach().norm(dim=-1, keepdim=True)  # [N, 1]
        delta = F.normalize(torch.where(tiny, emb - emb.detach(), diff), dim=-1)  # [N, D]
        d_loss = d_loss + (1 - delta @ direction).mean()
        g_loss = g_loss + (1 - emb @ tgt).mean()
    return d_loss / len(clips), g_loss / len(clips)


def paired_views(refined: torch.Tensor, frozen: torch.Tensor, views: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The originals plus ``views`` random affine views of each image, the same view for both tensors."""
    if views == 0:
        return refined, frozen

    def with_views(x: torch.Tensor) -> torch.Tensor:
        tiled = x.repeat(views, 1, 1, 1)  # [V·N, 3, H, W]
        return torch.cat([x, random_affine(tiled, generator=torch.Generator().manual_seed(seed))])

    return with_views(refined), with_views(frozen)


def content_loss(refined: torch.Tensor, frozen: torch.Tensor, size: int) -> torch.Tensor:
    lo_r = F.adaptive_avg_pool2d(refined.mean(1, keepdim=True), size)  # [N, 1, s, s] luminance layout
    lo_f = F.adaptive_avg_pool2d(frozen.mean(1, keepdim=True), size)
    return F.mse_loss(lo_r, lo_f)


@torch.no_grad()
def _latents(G: StyleGAN2Generator, step: int, *, batch: int, seed: int, psi: float) -> torch.Tensor:
    z = torch.randn(batch, G.config.z_dim, generator=torch.Generator().manual_seed(seed * 7919 + step)).to(G.mapping.w_avg.device)
    return G.mapping(z, truncation_psi=psi)


def adaptive_layers(G: StyleGAN2Generator, clips, directions, *, k: int, seed: int, psi: float,
                    resolution: Optional[int] = None) -> list[str]:
    """NADA's adaptive choice: the layers whose w moves most when W+ is pushed toward the target (the guide reading
    the image at ``resolution``, None: the generator's; layers above it are never chosen)."""
    ws0 = _latents(G, 10**6, batch=4, seed=seed, psi=psi)
    with torch.no_grad():
        frozen = G.synthesis(ws0, max_resolution=resolution)
        base = [c.encode_image(frozen) for c in clips]
    ws = ws0.clone().requires_grad_(True)
    opt = torch.optim.Adam([ws], lr=0.01)
    for _ in range(5):
        d, _ = clip_losses(clips, directions, G.synthesis(ws, max_resolution=resolution), base)
        opt.zero_grad()
        d.backward()
        opt.step()
    moved = (ws.detach() - ws0).norm(dim=-1).mean(0)  # [num_ws]
    candidates = guided_layers(G, G.refinable_layers(include_torgb=True), resolution)
    usable = sorted({G.layer_w_index(name) for name in candidates})  # the w entries those layers read
    top = {usable[j] for j in moved[usable].topk(min(k, len(usable))).indices.tolist()}
    layers = [name for name in candidates if G.layer_w_index(name) in top]
    return layers or candidates


def guide_image_size(clips: Sequence[CLIPGuide]) -> int:
    """The largest image any of the guides takes (px; 0 without guides)."""
    return max((clip.image_size for clip in clips), default=0)


def guide_resolution_for(config: AdaptConfig, G: StyleGAN2Generator, clips: Sequence[CLIPGuide]) -> int:
    """The resolution the ``clips`` read ``G``'s images at under ``config`` (``AdaptConfig.resolution_for``)."""
    return config.resolution_for(G.config.resolution, guide_image_size(clips))


def guided_layers(G: StyleGAN2Generator, layers, resolution: Optional[int]) -> list[str]:
    """The ``layers`` at or below ``resolution`` (None: all): those whose change reaches the guide's image."""
    return [name for name in layers if resolution is None or G.layer(name).resolution <= resolution]


def normalise_gradient(params: Sequence[torch.nn.Parameter]) -> float:
    """Scale the gradients of ``params`` to unit global norm (in place); returns the norm before.

    The directional loss is scale-free in the embedding change, so its gradient grows as ``1/|Δ|``: at the
    zero-residual start ``Δ = 0`` and the gradient is ~1e12. Adam would remember that magnitude in its second
    moment for hundreds of steps and scale every later update down to nothing (the run "stalls", moving only
    along the first step's sign). Adam on the unit-norm gradient keeps the first direction and drops the scale.
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    norm = torch.sqrt(sum(g.square().sum() for g in grads))
    if torch.isfinite(norm) and norm > 0:
        for g in grads:
            g.div_(norm)
    return float(norm)


def optimise(
    *,
    G: StyleGAN2Generator,
    clips: Sequence[CLIPGuide],
    synth: Callable[[torch.Tensor], torch.Tensor],
    params: Sequence[torch.nn.Parameter],
    regulariser: Callable[[], torch.Tensor],
    snapshot: Callable[[], object],
    restore: Callable[[object], None],
    source: str,
    target: Optional[str],
    target_images: Optional[torch.Tensor],
    config: AdaptConfig,
    callback: Optional[Callable[[int, int, AdaptState], None]] = None,
    preview_every: int = 0,
    progress: bool = False,
    steps: Optional[range] = None,
    history: Optional[AdaptHistory] = None,
    start_time: Optional[float] = None,
    stop: Optional[StopSignal] = None,
) -> AdaptHistory:
    """The shared loop: ``synth(ws, max_resolution=r)`` renders with the trainable ``params`` (``r`` None: full size);
    the frozen ``G`` is the reference. The guide reads both at ``config.resolution_for`` the generator and guides.

    ``steps`` (default: all of ``config.steps``) is the part of the run this call does; a later part continues
    ``history`` and the clock from ``start_time``, so the callback sees one run.
    """
    steps = range(config.steps) if steps is None else steps
    guide_res = guide_resolution_for(config, G, clips)
    directions = text_directions(clips, source, target, target_images)
    opt = torch.optim.Adam(params, lr=config.learning_rate(), betas=(0.9, 0.99))
    # Cosine decay settles the tokens at the end instead of letting them wander along the flat directional loss.
    # "cosine": one decay over the whole run, which the part after the rank warm-up's truncation continues: a fresh
    # full learning rate there can throw a run that has found the style back out of it.
    # "cosine-restart": a fresh decay per part (kept so that domains made that way can be reproduced).
    schedule = None
    if config.lr_schedule == "cosine":
        schedule = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda i: 0.5 * (1 + math.cos(math.pi * (steps.start + i) / config.steps)))
    elif config.lr_schedule == "cosine-restart":
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=len(steps))
    history = AdaptHistory() if history is None else history
    preview_ws = _latents(G, -1, batch=4, seed=config.seed, psi=config.truncation_psi)
    preview_before = None
    if preview_every:
        with torch.no_grad():
            preview_before = G.synthesis(preview_ws, max_resolution=guide_res)
    last_good = snapshot()
    t0 = time.perf_counter() if start_time is None else start_time
    from tqdm import tqdm

    bar = tqdm(steps, desc="adapt", disable=not progress, total=config.steps, initial=steps.start)
    for step in bar:
        check_stop(stop, what="adaptation", step=step, total=config.steps)
        ws = _latents(G, step, batch=config.batch, seed=config.seed, psi=config.truncation_psi)
        with torch.no_grad():
            frozen = G.synthesis(ws, max_resolution=guide_res)  # [N, 3, r, r]
        refined = synth(ws, max_resolution=guide_res)  # [N, 3, r, r]
        if refined.shape != frozen.shape:
            raise ValueError(f"synth(ws, max_resolution={guide_res}) drew {list(refined.shape)}, the frozen generator "
                             f"{list(frozen.shape)}: synth must stop at max_resolution as G.synthesis does")
        refined_views, frozen_views = paired_views(refined, frozen, config.augment_views, config.seed * 7919 + step)
        with torch.no_grad():
            base = [c.encode_image(frozen_views) for c in clips]
        d_loss, g_loss = clip_losses(clips, directions, refined_views, base)
        c_loss = content_loss(refined, frozen, config.content_size)
        loss = config.direction_weight * d_loss + config.global_weight * g_loss + config.content_weight * c_loss \
            + config.reg_weight * regulariser()
        if not torch.isfinite(loss):
            restore(last_good)
            history.stopped_early = f"the loss became {loss.item()} at step {step + 1}; kept the tokens of step {step}"
            warnings.warn(f"adaptation stopped: {history.stopped_early}. Try a lower learning rate", stacklevel=3)
            break
        lr = opt.param_groups[0]["lr"]  # this step's
        opt.zero_grad(set_to_none=True)
        loss.backward()
        normalise_gradient(params)
        opt.step()
        if schedule is not None:
            schedule.step()
        if not all(torch.isfinite(p).all() for p in params):
            restore(last_good)
            history.stopped_early = f"parameters became non-finite at step {step + 1}; kept the tokens of step {step}"
            warnings.warn(f"adaptation stopped: {history.stopped_early}. Try a lower learning rate", stacklevel=3)
            break
        last_good = snapshot()
        state = AdaptState(step=step + 1, total=config.steps, loss=loss.item(), lr=lr, direction_loss=d_loss.item(),
                           content_loss=c_loss.item(), seconds=time.perf_counter() - t0,
                           synthesize=lambda w: synth(w, max_resolution=None))
        if preview_every and ((step + 1) % preview_every == 0 or step + 1 == config.steps):
            with torch.no_grad():
                state.preview, state.preview_before = synth(preview_ws, max_resolution=guide_res).detach(), preview_before
        history.states.append({k: v for k, v in state.__dict__.items() if k not in ("preview", "preview_before", "synthesize")})
        bar.set_postfix(loss=f"{state.loss:.4f}", dir=f"{state.direction_loss:.4f}")
        if callback is not None:
            callback(step + 1, config.steps, state)
    return history


def adapt_tokens(
    G: StyleGAN2Generator,
    clips: Sequence[CLIPGuide],
    *,
    source: str,
    target: Optional[str],
    target_images: Optional[torch.Tensor] = None,
    config: AdaptConfig,
    callback: Optional[Callable[[int, int, AdaptState], None]] = None,
    preview_every: int = 0,
    progress: bool = False,
    stop: Optional[StopSignal] = None,
) -> DomainTokens:
    """RefineStyle: optimise a shared token set; returns the domain (its ``history`` attribute has the curve).

    ``stop`` (e.g. a ``threading.Event``): when set, the run raises ``Cancelled`` before its next step.
    """
    config.validate()
    source, target = _check_prompts(source, target, target_images)
    check_guide_words(clips, [p for p in (source, target) if p], allow_unknown=config.allow_unknown_words)
    if not clips:
        raise ValueError("domain adaptation needs at least one CLIP model (model.clip is None); load a repo with clip/")
    G = G.eval().requires_grad_(False)
    k, torgb, warm_tokens, warm_steps = config.token_plan(G.config.num_tokens)
    guide_res = guide_resolution_for(config, G, clips)
    if guide_res not in G.synthesis.resolutions:
        raise ValueError(f"guide_resolution {guide_res} is not one of the generator's block resolutions {G.synthesis.resolutions}")
    if isinstance(config.layers, str) and config.layers == "adaptive":
        layers = adaptive_layers(G, clips, text_directions(clips, source, target, target_images), k=config.adaptive_k,
                                 seed=config.seed, psi=config.truncation_psi, resolution=guide_res)
    elif isinstance(config.layers, str):
        # toRGB tokens re-colour cheaply (3 outputs per layer): what styles change most.
        layers = guided_layers(G, G.refinable_layers(include_torgb=config.layers == "all"), guide_res)
    else:
        layers = list(config.layers)
        above = [name for name in layers if name in G.layer_names and name not in guided_layers(G, [name], guide_res)]
        if above:
            raise ValueError(f"layers {above} are above the guide's resolution ({guide_res} px), so the guide would never "
                             f"see them change; drop them or pass guide_resolution={G.config.resolution}")
    made = dict(layers=layers, seed=config.seed, source=source, target=target or REFERENCE_IMAGES_TARGET)
    run = dict(G=G, clips=clips, source=source, target=target, target_images=target_images, config=config,
               callback=callback, preview_every=preview_every, progress=progress, stop=stop)
    if warm_tokens is None:
        domain = DomainTokens.from_generator(G, num_tokens=k, torgb_tokens=torgb, **made)
        history = _optimise_domain(domain, **run)
    else:
        start = time.perf_counter()
        warm = DomainTokens.from_generator(G, num_tokens=warm_tokens, **made)
        history = _optimise_domain(warm, steps=range(warm_steps), start_time=start, **run)
        domain = warm.truncated(k, torgb_rank=torgb)
        if history.stopped_early is None:
            _optimise_domain(domain, steps=range(warm_steps, config.steps), history=history, start_time=start, **run)
    domain.eval().requires_grad_(False)
    domain.history = history
    domain.strength_suggestion = None
    if config.suggest_strength:
        check_stop(stop, what="adaptation", step=config.steps, total=config.steps)
        domain.strength_suggestion = suggest_strength(G, clips, domain, source=source, target=target,
                                                      target_images=target_images, resolution=guide_res)
        if domain.strength_suggestion.strength is not None:
            domain.register_to_config(suggested_strength=domain.strength_suggestion.strength)
    return domain


@torch.no_grad()
def suggest_strength(
    G: StyleGAN2Generator,
    clips: Sequence[CLIPGuide],
    edit: DomainTokens | Callable[[torch.Tensor, float], torch.Tensor],
    *,
    source: str,
    target: Optional[str],
    target_images: Optional[torch.Tensor] = None,
    faces: int = SUGGEST_FACES,
    seed: int = SUGGEST_SEED,
    step: float = SUGGEST_STEP,
    max_strength: float = SUGGEST_MAX_STRENGTH,
    tolerance: float = SUGGEST_TOLERANCE,
    resolution: Optional[int] = None,
) -> StrengthSuggestion:
    """The smallest strength at which ``edit`` moves held-out faces as far along the CLIP text direction as it can.

    The directional loss rewards the direction of the change, not its size, so an optimised edit usually goes on
    past the point where the direction stops improving; the extra magnitude only exaggerates the style (on
    SynthFaces it lowers the ground-truth PSNR of every style). ``edit`` is a domain (its residual times the
    strength) or any ``synthesize(ws, s)`` that renders an edit of ``G`` at strength ``s`` (0: the frozen ``G``),
    e.g. fine-tuned weights ``W0 + s·ΔW``.

    On ``faces`` latents of ``seed`` (untruncated) it measures the mean
    ``cos(E_I(G_s(w)) - E_I(G(w)), E_T(target) - E_T(source))`` at strengths ``step``, ``2·step``, … up to
    ``max_strength`` (averaged over the CLIPs, as the loss is), and returns the smallest strength within
    ``tolerance`` (relative) of the best. ``strength`` is None when no strength moves the images along the
    direction at all (best similarity ≤ 0) or a CLIP returns non-finite values. Only the CLIPs are consulted,
    never a ground truth. ``resolution``: the CLIPs read the images at this block's skip image (as
    ``AdaptConfig.guide_resolution``; None: full size); a ``synthesize`` callable must draw that size too.
    """
    if not isinstance(faces, int) or isinstance(faces, bool) or not 1 <= faces <= 256:
        raise ValueError(f"faces must be an integer from 1 to 256, got {faces!r}")
    if not (isinstance(step, (int, float)) and isinstance(max_strength, (int, float)) and 0 < step <= max_strength <= 10):
        raise ValueError(f"need 0 < step <= max_strength <= 10, got step={step!r}, max_strength={max_strength!r}")
    if not isinstance(tolerance, (int, float)) or not 0 <= tolerance < 0.5:
        raise ValueError(f"tolerance must be in [0, 0.5), got {tolerance!r}")
    if isinstance(edit, DomainTokens):
        edit.check_compatible(G)
        tokens = edit.token_set()

        def synthesize(ws: torch.Tensor, strength: float) -> torch.Tensor:
            return G.synthesis(ws, tokens=[(tokens, strength)], max_resolution=resolution)
    elif callable(edit):
        synthesize = edit
    else:
        raise TypeError(f"edit must be a DomainTokens or a synthesize(ws, strength) callable, got {type(edit).__name__}")
    directions = text_directions(clips, source, target, target_images)
    device = G.mapping.w_avg.device
    z = torch.randn(faces, G.config.z_dim, generator=torch.Generator().manual_seed(seed)).to(device)  # [N, z_dim]
    ws = G.mapping(z)  # [N, num_ws, w_dim]
    frozen = G.synthesis(ws, max_resolution=resolution)  # [N, 3, R, R]
    frozen_emb = [clip.encode_image(frozen) for clip in clips]  # each [N, D]
    strengths, similarity = [], []
    for i in range(1, int(round(max_strength / step)) + 1):
        strength = round(i * step, 6)
        edited = synthesize(ws, strength)  # [N, 3, R, R]
        if edited.shape != frozen.shape:
            raise ValueError(f"synthesize(ws, {strength}) drew {list(edited.shape)}, the frozen generator {list(frozen.shape)}")
        cosines = [(F.normalize(clip.encode_image(edited) - base, dim=-1) @ direction).mean().item()  # [N] → mean
                   for clip, (direction, _), base in zip(clips, directions, frozen_emb)]
        strengths.append(strength)
        similarity.append(sum(cosines) / len(cosines))
        if not math.isfinite(similarity[-1]):
            break  # a CLIP gave NaN/inf: no suggestion from this curve
        if similarity[-1] < (1 - 2 * tolerance) * max(similarity):
            break  # 2 × tolerance below the best so far: past the peak (no measured curve climbed back)
    best = max(similarity)
    chosen = None
    if all(math.isfinite(v) for v in similarity) and best > 0:
        chosen = next(s for s, v in zip(strengths, similarity) if v >= (1 - tolerance) * best)
    return StrengthSuggestion(strength=chosen, strengths=strengths, directional=similarity, tolerance=float(tolerance))


def _optimise_domain(domain: DomainTokens, **run) -> AdaptHistory:
    """``optimise`` over a domain's tokens (``run``: the other arguments of ``optimise``)."""
    domain.train().requires_grad_(True)
    G = run["G"]

    def synth(ws, *, max_resolution=None):
        return G.synthesis(ws, tokens=domain.token_set(), max_resolution=max_resolution)

    def regulariser():
        return sum(p.square().mean() for p in domain.p.values()) / len(domain.p)

    def snapshot():
        return {k: v.detach().clone() for k, v in domain.state_dict().items()}

    history = optimise(synth=synth, params=list(domain.parameters()), regulariser=regulariser, snapshot=snapshot,
                       restore=domain.load_state_dict, **run)
    domain.eval().requires_grad_(False)
    return history


def check_guide_words(clips: Sequence[CLIPGuide], prompts: Sequence[str], *, allow_unknown: bool = False) -> None:
    """Every word of every prompt must be known to every guide (a closed-vocabulary guide reads the others as one
    'unknown' token, so "a charcoal drawing" would silently mean "a <unknown> drawing")."""
    for clip in clips:
        for prompt in prompts:
            unknown = clip.unknown_words(prompt)
            if not unknown:
                continue
            styles = clip.style_words()
            message = (f"the guide {clip.name} does not know the words {unknown} in {prompt!r}"
                       + (f"; the words it knows for styles: {', '.join(styles)}" if styles else "")
                       + ". Rephrase the prompt" + ("" if allow_unknown else
                                                    ", or pass allow_unknown_words=True to go on with them unread"))
            if not allow_unknown:
                raise ValueError(message)
            warnings.warn(message, stacklevel=3)


def _check_prompts(source, target, target_images):
    (source,) = check_prompts([source])
    if target_images is None:
        if target is None:
            raise ValueError("give a target prompt or target_images")
        (target,) = check_prompts([target])
    else:
        if not isinstance(target_images, torch.Tensor) or target_images.dim() != 4 or target_images.shape[1] != 3:
            raise ValueError("target_images must be a [N, 3, H, W] tensor in [-1, 1] (or use model.adapt with PIL images)")
        if not torch.isfinite(target_images).all():
            raise ValueError("target_images contain NaN or infinite values")
    return source, target
