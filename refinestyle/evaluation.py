"""Metrics against the SynthFaces renderer's exact ground truth.

* ``evaluate_generator``: PSNR / SSIM of ``G(z)`` against ``render(z_to_params(z), "photo")`` on
  held-out z, PSNR inside the eye and mouth masks, and attribute agreement read by an independent
  classifier trained on renders (``AttributeClassifier``).
* ``AttributeClassifier``: a small CNN trained on renderer images (never on generator output) to
  read glasses, smile and eye colour; also a style head for the adaptation benchmark.
* ``calibrate_domain_check``: the threshold of an inversion score (``domain_threshold``) under which an image is
  outside the model's domain, from held-out in-domain images; ``model.invert(...).in_domain`` reads it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from . import look_checks
from .data.synthfaces import EYE_COLORS, STYLES, attribute_labels, render, sample_params, z_to_params

HEADS = {"glasses": 2, "smile": 2, "eye_color": len(EYE_COLORS), "style": len(STYLES)}


def psnr(a: torch.Tensor, b: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per-image PSNR of [-1, 1] images (data range 2), optionally inside a soft mask ``[N, 1, H, W]``."""
    sq = (a.clamp(-1, 1) - b.clamp(-1, 1)).square().mean(dim=1, keepdim=True)  # [N, 1, H, W]
    if mask is None:
        mse = sq.flatten(1).mean(1)
    else:
        mse = (sq * mask).flatten(1).sum(1) / mask.flatten(1).sum(1).clamp_min(1e-6)
    return 10 * torch.log10(4.0 / mse.clamp_min(1e-10))


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM (pytorch_msssim, 7x7 window for 64 px images)."""
    from pytorch_msssim import ssim as _ssim

    return _ssim((a.clamp(-1, 1) + 1) / 2, (b.clamp(-1, 1) + 1) / 2, data_range=1.0, size_average=False, win_size=7)


class AttributeClassifier(nn.Module):
    """A small CNN with one head per attribute (glasses, smile, eye colour, style)."""

    def __init__(self, resolution: int = 64):
        super().__init__()
        layers, ch = [], 3
        for out in (32, 64, 96, 128):
            layers += [nn.Conv2d(ch, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU(), nn.MaxPool2d(2)]
            ch = out
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.heads = nn.ModuleDict({k: nn.Linear(ch * 4, n) for k, n in HEADS.items()})
        self.resolution = resolution

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.shape[-1] != self.resolution:
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear", align_corners=False, antialias=True)
        f = self.features(x)
        return {k: head(f) for k, head in self.heads.items()}

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch: int = 250) -> dict[str, torch.Tensor]:
        self.eval()
        outs = [self(x[i:i + batch]) for i in range(0, len(x), batch)]
        return {k: torch.cat([o[k] for o in outs]).argmax(1) for k in HEADS}


def train_attribute_classifier(*, steps: int = 600, batch: int = 64, seed: int = 0, resolution: int = 64,
                               progress: bool = False) -> AttributeClassifier:
    """Train on renders in every style (fixed seed); the generator's output is never seen."""
    torch.manual_seed(seed)
    model = AttributeClassifier(resolution)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    from tqdm import tqdm

    for step in tqdm(range(steps), desc="attribute classifier", disable=not progress):
        g = torch.Generator().manual_seed(seed * 100_003 + step)
        params = sample_params(batch, seed=g)
        styles = torch.randint(len(STYLES), (batch,), generator=g)
        x = torch.empty(batch, 3, resolution, resolution)
        for s_idx, style in enumerate(STYLES):
            rows = (styles == s_idx).nonzero().flatten()
            if rows.numel():
                x[rows] = render(params[rows], style=style, resolution=resolution)
        # Small photometric jitter so the classifier does not key on exact renderer pixels.
        x = (x + 0.03 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
        labels = {**attribute_labels(params), "style": styles}
        out = model.train()(x)
        loss = sum(F.cross_entropy(out[k], labels[k].long()) for k in HEADS)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def attribute_classifier_path(folder, *, steps: int = 600, seed: int = 0, resolution: int = 64) -> Path:
    """Where ``cached_attribute_classifier`` keeps the classifier of (steps, seed, resolution) in ``folder``."""
    return Path(folder) / f"attribute-classifier-{resolution}px-{steps}steps-seed{seed}.safetensors"


def load_attribute_classifier(path, *, resolution: int = 64) -> AttributeClassifier:
    """A saved ``AttributeClassifier`` (safetensors; weights only, strict: missing or unexpected keys are named)."""
    from .hub import load_safetensors, strict_load

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no attribute classifier at {path}; train one with cached_attribute_classifier(folder)")
    model = AttributeClassifier(resolution)
    strict_load(model, load_safetensors(path), source=str(path))
    return model.eval()


def cached_attribute_classifier(cache_dir, *, steps: int = 600, seed: int = 0, resolution: int = 64) -> AttributeClassifier:
    """``train_attribute_classifier`` once per (steps, seed, resolution); later calls load its weights
    (safetensors) from ``cache_dir``, so benchmarks that share the classifier do not train it twice.

    Training is deterministic on one machine but not across CPUs (float reductions differ by thread count and
    instruction set): the repo ships the copy its published numbers were read with (``bench/assets``)."""
    from safetensors.torch import save_file

    path = attribute_classifier_path(cache_dir, steps=steps, seed=seed, resolution=resolution)
    if path.exists():
        return load_attribute_classifier(path, resolution=resolution)
    model = train_attribute_classifier(steps=steps, seed=seed, resolution=resolution)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return model


@dataclass
class GeneratorMetrics:
    psnr: float
    ssim: float
    psnr_eyes: float
    psnr_mouth: float
    agree_glasses: float
    agree_smile: float
    agree_eye_color: float
    agree_all: float
    classifier_on_renders: float
    n: int
    # [true][read]: faces of each eye colour (EYE_COLORS order) by the colour the classifier reads from G(z)
    eye_color_confusion: list[list[int]] = field(default_factory=list)


@torch.no_grad()
def evaluate_generator(G, classifier: AttributeClassifier, *, n: int = 1000, seed: int = 12345, batch: int = 100) -> GeneratorMetrics:
    """Compare ``G(z)`` with the renderer on ``n`` held-out z (seed different from training)."""
    res = G.config.resolution
    z_all = torch.randn(n, G.config.z_dim, generator=torch.Generator().manual_seed(seed))
    fakes, reals, ps, ss, pe, pm = [], [], [], [], [], []
    for i in range(0, n, batch):
        z = z_all[i:i + batch]
        real, masks = render(z_to_params(z), style="photo", resolution=res, return_masks=True)
        fake = G.synthesis(G.mapping(z), noise_mode="const").clamp(-1, 1)
        ps.append(psnr(fake, real))
        ss.append(ssim(fake, real))
        pe.append(psnr(fake, real, masks["eyes"]))
        pm.append(psnr(fake, real, masks["mouth"]))
        fakes.append(fake)
        reals.append(real)
    fake, real = torch.cat(fakes), torch.cat(reals)
    labels = attribute_labels(z_to_params(z_all))
    pred_fake = classifier.predict(fake)
    pred_real = classifier.predict(real)
    agree = {k: (pred_fake[k] == labels[k]).float() for k in ("glasses", "smile", "eye_color")}
    on_renders = torch.stack([(pred_real[k] == labels[k]).float() for k in agree]).mean().item()
    mean = lambda xs: torch.cat(xs).mean().item()  # noqa: E731
    return GeneratorMetrics(
        psnr=mean(ps), ssim=mean(ss), psnr_eyes=mean(pe), psnr_mouth=mean(pm),
        agree_glasses=agree["glasses"].mean().item(), agree_smile=agree["smile"].mean().item(),
        agree_eye_color=agree["eye_color"].mean().item(),
        agree_all=torch.stack(list(agree.values())).prod(0).mean().item(), classifier_on_renders=on_renders, n=n,
        eye_color_confusion=[[int(((labels["eye_color"] == t) & (pred_fake["eye_color"] == r)).sum()) for r in range(len(EYE_COLORS))]
                             for t in range(len(EYE_COLORS))])


@torch.no_grad()
def validity_scores(G, classifier: AttributeClassifier, *, n: int = 200, seed: int = 777, psi: float = 0.7) -> dict[str, float]:
    """Classifier confidence (mean max probability over heads) on plain, truncated and style-mixed samples."""
    g = torch.Generator().manual_seed(seed)
    z1, z2 = torch.randn(n, G.config.z_dim, generator=g), torch.randn(n, G.config.z_dim, generator=g)
    ws1, ws2 = G.mapping(z1), G.mapping(z2)
    mixed = ws1.clone()
    mixed[:, G.num_ws // 2:] = ws2[:, G.num_ws // 2:]
    sets = {"plain": ws1, f"truncated (psi {psi})": G.mapping(z1, truncation_psi=psi), "style-mixed": mixed}
    out = {}
    for name, ws in sets.items():
        logits = classifier.eval()(G.synthesis(ws).clamp(-1, 1))
        conf = torch.stack([logits[k].softmax(1).max(1).values for k in ("glasses", "smile", "eye_color")]).mean()
        out[name] = conf.item()
    renders = render(z_to_params(z1), style="photo", resolution=G.config.resolution)
    logits = classifier(renders)
    out["renders (reference)"] = torch.stack([logits[k].softmax(1).max(1).values for k in ("glasses", "smile", "eye_color")]).mean().item()
    return out


@torch.no_grad()
def domain_quality(synthesize, G, classifier: AttributeClassifier, style: str, *, n: int = 64, seed: int = 4242) -> dict[str, float]:
    """A domain against the renderer's exact ground truth: ``synthesize(ws)`` (the adapted generator) on
    held-out z vs ``render(z_to_params(z), style)``: PSNR, SSIM, the classifier's style accuracy, and content
    (glasses / smile / eye colour read by the classifier agree with the face's parameters), and for the styles
    with a look check (``refinestyle.look_checks``) ``look``, the share of faces that pass it."""
    z = torch.randn(n, G.config.z_dim, generator=torch.Generator().manual_seed(seed))
    params = z_to_params(z)
    truth = render(params, style=style, resolution=G.config.resolution)
    # The generator may sit on a GPU; the renderer's truth and the classifier stay on the CPU.
    fake = synthesize(G.mapping(z.to(G.mapping.w_avg.device))).clamp(-1, 1).float().cpu()
    pred = classifier.predict(fake)
    labels = attribute_labels(params)
    content = torch.stack([(pred[k] == labels[k]).float() for k in ("glasses", "smile", "eye_color")]).mean().item()
    quality = {"psnr": psnr(fake, truth).mean().item(), "ssim": ssim(fake, truth).mean().item(),
               "style_acc": (pred["style"] == STYLES.index(style)).float().mean().item(), "content": content}
    if style in look_checks.CHECKS:  # what a person sees: the share of faces with the style's defining look
        quality["look"] = look_checks.check(style, fake)[0].float().mean().item()
    return quality


# ----------------------------------------------------------------------------------------------------------------
# In or out of the model's domain


@torch.no_grad()
def inversion_scores(model, images, *, method: str = "encoder", align: str = "none", batch: int = 64) -> dict[str, torch.Tensor]:
    """Every ``refinestyle.inversion.DOMAIN_SCORES`` entry of ``model.invert(images, method=method, align=align)``,
    one value per image (``[N]`` each), inverted ``batch`` images at a time. ``images``: ``[N, 3, H, W]`` in
    [-1, 1] or a list of image inputs."""
    found: dict[str, list[torch.Tensor]] = {}
    for i in range(0, len(images), batch):
        out = model.invert(images[i:i + batch], method=method, align=align)
        for name, values in out.scores.items():
            found.setdefault(name, []).append(values.float().cpu())
    return {name: torch.cat(values) for name, values in found.items()}


def domain_threshold(scores: torch.Tensor, *, quantile: float = 0.05, confidence: float = 0.9) -> float:
    """The threshold below which an image is called out of domain, from the scores of held-out in-domain images.

    Aims at flagging at least ``1 - quantile`` of in-domain images in: it is the score's ``quantile`` read
    conservatively, the k-th smallest score with the largest k for which, with probability ``confidence`` over the
    draw of the calibration images, at most ``quantile`` of all in-domain images score below it (k-1 scores lie below
    the true ``quantile`` with the binomial probability). ``confidence=0.5`` is the plain order statistic; the default
    0.9 costs little with a few hundred images (256: the 8th smallest instead of the 13th) and keeps the share flagged
    in on fresh images above ``1 - quantile`` in most draws instead of about half of them.

    Examples:
        ```py
        >>> import torch
        >>> from refinestyle.evaluation import domain_threshold
        >>> scores = torch.arange(1, 257, dtype=torch.float32)  # 256 in-domain scores: 1, 2, ..., 256
        >>> domain_threshold(scores), domain_threshold(scores, confidence=0.5)
        (8.0, 13.0)
        ```
    """
    from math import exp, lgamma, log

    if not 0 < quantile < 1 or not 0 < confidence < 1:
        raise ValueError(f"quantile and confidence must lie in (0, 1), got {quantile!r} and {confidence!r}")
    values = torch.as_tensor(scores, dtype=torch.float64).flatten()
    if not torch.isfinite(values).all():
        raise ValueError("the calibration scores hold NaN or infinite values")
    n = values.numel()
    # P(j of the n scores lie below the true quantile): binomial, in logs so that large n does not overflow.
    below = [exp(lgamma(n + 1) - lgamma(j + 1) - lgamma(n - j + 1) + j * log(quantile) + (n - j) * log(1 - quantile))
             for j in range(n + 1)]
    # P(at least k below) >= confidence  <=>  the k-th smallest lies under the true quantile with that probability.
    k, at_least = 0, 1.0
    while k < n and at_least - below[k] >= confidence:
        at_least -= below[k]
        k += 1
    if k == 0:
        raise ValueError(f"{n} calibration images are too few to bound the {quantile:g} quantile with confidence "
                         f"{confidence:g}; give more (at least {int(log(1 - confidence) / log(1 - quantile)) + 1})")
    return float(values.sort().values[k - 1])


def calibrate_domain_check(model, in_domain_images, *, method: str = "encoder", score: str = "refined_psnr",
                           quantile: float = 0.05, confidence: float = 0.9, align: str = "none", batch: int = 64):
    """A ``refinestyle.inversion.DomainCheck`` for ``model``, calibrated on held-out images of its domain.

    Inverts ``in_domain_images`` (never seen in training; a ``[N, 3, H, W]`` tensor in [-1, 1] or a list of image
    inputs) by ``method`` and sets the threshold of ``score`` with ``domain_threshold(scores, quantile=quantile,
    confidence=confidence)``: about ``1 - quantile`` of in-domain images, or more, score above it and are flagged in.
    Set the result as ``model.domain_check``; ``model.write_model_index(folder)`` stores it in ``model_index.json``,
    and ``model.invert(..., method=method).in_domain`` then reads it. Measure on other images (in-domain ones and
    out-of-domain ones) how it does: the calibration images say nothing about that.

    ``score``: ``"refined_psnr"`` (default; PSNR of the refined reconstruction) or ``"w_psnr"`` (of the W+-only
    one). On the SynthFaces model both separate the other renderer styles and real photos completely;
    ``refined_psnr`` also flags far more faces with attributes the generator never drew (hats, face paint) at the
    same in-domain rate (docs/benchmarks.md).
    """
    from .inversion import DOMAIN_SCORES, INVERSION_METHODS, DomainCheck

    if score not in DOMAIN_SCORES:
        raise ValueError(f"score must be one of {DOMAIN_SCORES}, got {score!r}")
    if method not in INVERSION_METHODS:
        raise ValueError(f"method must be one of {INVERSION_METHODS}, got {method!r}")
    values = inversion_scores(model, in_domain_images, method=method, align=align, batch=batch)[score]
    threshold = domain_threshold(values, quantile=quantile, confidence=confidence)
    # Four decimals for model_index.json, rounded down so that every image at the threshold stays in.
    return DomainCheck(score=score, threshold=math.floor(threshold * 1e4) / 1e4, method=method)
