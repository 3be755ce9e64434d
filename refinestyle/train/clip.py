"""Train the SynthFaces CLIP contrastively on renderer images in every style with their captions.

Each batch draws faces, a style per face and a caption per face (from ``caption``); half the faces come
with a twin whose smile or glasses are flipped (hard negatives), and half the pairs get attribute-focused
captions, so that the small mouth and the glasses must be seen. With ``--style-negatives`` every
out-of-domain face also brings a partial-style image of itself (half-way to the photo, or the style's
luminance with the photo's colours) that its caption must rank below the real render: a CLIP that guides
domain adaptation must not call a coloured, half-done sketch a sketch. With ``--attribute-weight W`` a
linear probe on the image embedding also learns the glasses and smile labels (logistic loss, weight W;
the probe is not exported): contrastive training alone stays at the symmetric point where neither tower
tells a smile from a neutral mouth (image and text embeddings of the twins agree almost exactly, so each tower's
gradient towards separating them is near zero), and the probe's labels break that symmetry.
With ``--decouple-backgrounds`` the shortcuts a small CLIP takes are made not to pay: half the styled faces get
their background (and clothing) shifted to a random brightness and saturation at the caption's hue (grey for a
sketch), keeping the style's texture, so that a paper-white or dark background no longer names a style; and every
face in a style that colour alone does not define brings a shortcut image of itself, its photo with the style's
background and the style's colour statistics (``shortcut_images``), which the style's caption must rank below the
real render. With ``--no-texture-augment`` the augmentation keeps to zoom, shift and flip (no blur, no pixel noise),
so fine texture reaches the CLIP as drawn. Zero-shot accuracy (style, glasses, smile) and the share of shortcut images
rejected are logged.

    python -m refinestyle.train.clip --out runs/synthfaces-clip --minutes 30
    python -m refinestyle.train.clip --out runs/clip-ft --init-from hub/refinestyle-synthfaces/clip --style-negatives
    python -m refinestyle.train.clip --out runs/clip-smile --init-from hub/refinestyle-synthfaces/clip --attribute-weight 2
    python -m refinestyle.train.clip --out runs/clip-decoupled --init-from hub/refinestyle-synthfaces/clip --decouple-backgrounds
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from ..clip import SYNTHFACES_CLIP_CONFIGS, CLIPGuide, WordTokenizer
from ..images import luminance, random_affine
from ..data.synthfaces import (GLASSES_THRESHOLD, STYLES, FaceParams, attribute_labels, caption, decode, render, sample_params,
                               style_prompt)
from ..data.synthfaces._render import hsv_to_rgb


ATTRIBUTE_PROBE_LABELS = ("glasses", "smile")
COLOUR_DEFINED_STYLES = ("photo", "zombie")
"""Styles a colour transfer of the photo reproduces (zombie: the skin mixed towards green, then tinted), so a
shortcut image of them is not a negative."""


def build_vocabulary(*, samples: int = 4000, seed: int = 0) -> list[str]:
    """Every word the caption generator and the zero-shot prompts use (sorted, deterministic)."""
    words: set[str] = set()
    for i, style in enumerate(STYLES):
        params = sample_params(samples // len(STYLES), seed=seed + i, out_of_domain=bool(i % 2))
        for text in caption(params, style, seed=seed + i) + [style_prompt(style)] + zero_shot_prompts(style):
            words.update(WordTokenizer.split(text))
    return sorted(words)


def zero_shot_prompts(style: str) -> list[str]:
    base = style_prompt(style)
    return [f"{base} with glasses", f"{base} without glasses", f"{base} of a smiling person", f"{base} with a neutral expression"]


def attribute_caption(labels: dict[str, torch.Tensor], idx: int, pair: int, style: str) -> str:
    """The style prompt plus the attribute that ``flipped_twins`` flips for pair ``pair``."""
    base = style_prompt(style)
    glasses = "with glasses" if labels["glasses"][idx] else "without glasses"
    smile = "of a smiling person" if labels["smile"][idx] else "with a neutral expression"
    return f"{base} {glasses}" if pair % 2 else f"{base} {smile}"


def flipped_twins(params: FaceParams) -> FaceParams:
    """The same faces with one label flipped: the smile on even rows, the glasses on odd rows."""
    smile, glasses = params.get("smile"), params.get("glasses")
    even = torch.arange(params.n) % 2 == 0
    # Half a turn of the smile CDF value always crosses its 0.5 threshold.
    new_smile = torch.where(even, (smile + 0.5) % 1.0, smile)
    # Glasses on (u > 0.6) → u - 0.5 (off); off → a value above the threshold.
    flipped_glasses = torch.where(glasses > GLASSES_THRESHOLD, glasses - 0.5, 0.61 + 0.39 * glasses / GLASSES_THRESHOLD)
    new_glasses = torch.where(even, glasses, flipped_glasses)
    return params.replace(smile=new_smile, glasses=new_glasses)


def augment(images: torch.Tensor, generator: torch.Generator, *, texture: bool = True) -> torch.Tensor:
    """Small zoom/shift/flip, and with ``texture`` a random amount of blur and pixel noise: the CLIP must then read
    the same caption from generator outputs (softer than renders) and its gradients reward visible changes more
    than pixel patterns. ``texture=False`` keeps the fine texture that defines some styles (paper grain, hatching,
    halftone dots, pixel blocks) as the renderer drew it, so that the CLIP can learn to see it."""
    x = random_affine(images, generator=generator, scale=(0.9, 1.05), shift=0.06)
    if not texture:
        return x.clamp(-1, 1)
    blurred = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)  # [N, 3, H, W] box blur
    amount = torch.rand(x.shape[0], 1, 1, 1, generator=generator) * (torch.rand(x.shape[0], 1, 1, 1, generator=generator) < 0.5)
    x = x + amount * (blurred - x)  # half the images get a random fraction of the blur
    noise = torch.randn(x.shape, generator=generator) * torch.rand(x.shape[0], 1, 1, 1, generator=generator) * 0.06
    return (x + noise).clamp(-1, 1)


def partial_styles(styled: torch.Tensor, photo: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Images part-way between a face's photo and its render in another style (hard negatives for the style).

    Even rows: a blend ``photo + a · (styled - photo)`` with ``a ~ U(0.3, 0.7)``, the washed-out look of a
    half-adapted generator. Odd rows: the style's luminance with the photo's colours
    (``lum(styled) + photo - lum(photo)``), e.g. a sketch that kept the skin and hair colours.
    """
    a = 0.3 + 0.4 * torch.rand(styled.shape[0], 1, 1, 1, generator=generator)
    blend = photo + a * (styled - photo)  # [N, 3, H, W]
    recoloured = luminance(styled) + photo - luminance(photo)  # [N, 3, H, W]
    odd = (torch.arange(styled.shape[0]) % 2 == 1).view(-1, 1, 1, 1)
    return torch.where(odd, recoloured, blend).clamp(-1, 1)


def recolour_backgrounds(images: torch.Tensor, background: torch.Tensor, params: FaceParams, styles: torch.Tensor,
                         generator: torch.Generator, *, share: float = 0.5) -> torch.Tensor:
    """Shift the background of a random ``share`` of the faces to a random colour, keeping its texture.

    The new mean colour has the face's ``background_hue`` (so captions naming the background stay true), a
    random saturation in [0.15, 0.9] (0 for a sketch, which has no colour) and a random value in [0.3, 1]; the
    shift is added to the background pixels (``background``: the renderer's soft mask ``[N, 1, H, W]``), so
    dots, paper grain and gradients stay. Images are ``[N, 3, H, W]`` in [-1, 1].
    """
    n = images.shape[0]
    picked = torch.rand(n, generator=generator) < share
    saturation = 0.15 + 0.75 * torch.rand(n, generator=generator, dtype=torch.float64)
    saturation = torch.where(styles == STYLES.index("sketch"), torch.zeros_like(saturation), saturation)
    value = 0.3 + 0.7 * torch.rand(n, generator=generator, dtype=torch.float64)
    target = hsv_to_rgb(decode(params)["background_hue"], saturation, value).float() * 2 - 1  # [N, 3]
    weight = background.sum((2, 3)).clamp(min=1.0)  # [N, 1]
    mean = (images * background).sum((2, 3)) / weight  # [N, 3] mean background colour
    shift = (target - mean) * picked.float().unsqueeze(1)  # [N, 3], zero on faces left as drawn
    return (images + background * shift.view(n, 3, 1, 1)).clamp(-1, 1)  # [N, 3, H, W]


def shortcut_images(styled: torch.Tensor, photo: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """A face's photo dressed in a style's shortcuts only: the style render's background, and the photo's figure
    moved to the style's per-channel mean and spread over the figure (a pale, coloured face on white paper for a
    sketch; a paper-tinted sharp photo for a watercolor). All ``[N, 3, H, W]`` in [-1, 1]; ``background`` is the
    renderer's mask ``[N, 1, H, W]``."""
    figure = 1.0 - background  # [N, 1, H, W]
    weight = figure.sum((2, 3), keepdim=True).clamp(min=1.0)  # [N, 1, 1, 1]

    def moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = (x * figure).sum((2, 3), keepdim=True) / weight  # [N, 3, 1, 1]
        spread = (((x - mean).square() * figure).sum((2, 3), keepdim=True) / weight).sqrt()  # [N, 3, 1, 1]
        return mean, spread

    photo_mean, photo_spread = moments(photo)
    style_mean, style_spread = moments(styled)
    matched = (photo - photo_mean) / photo_spread.clamp(min=1e-3) * style_spread + style_mean  # [N, 3, H, W]
    return (figure * matched + background * styled).clamp(-1, 1)  # [N, 3, H, W]


def make_batch(step: int, *, batch: int, seed: int, resolution: int, style_negatives: bool = False,
               decouple_backgrounds: bool = False, texture_augment: bool = True) -> tuple[torch.Tensor, list[str], dict]:
    """Half the batch are faces, half their twins with the smile or the glasses flipped (same style, same
    wording where possible): hard negatives, so that the small mouth and glasses must be seen to tell the
    captions apart. Each pair uses attribute-focused captions (naming the flipped attribute) or free ones.

    With ``style_negatives`` the labels also hold ``"negatives"``: ``partial_styles`` of the faces (first
    half) whose style is not ``photo``, and ``"negative_rows"``: the batch row each one belongs to. With
    ``decouple_backgrounds`` half the faces get a random background colour (``recolour_backgrounds``) and the
    negatives also hold a ``shortcut_images`` of each face (first half) in a style not in
    ``COLOUR_DEFINED_STYLES``. ``texture_augment``: see ``augment``."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    half = batch // 2
    base = sample_params(batch - half, seed=g, out_of_domain=step % 4 == 0)
    params = FaceParams.cat([base, flipped_twins(base)[:half]])
    pair_styles = torch.randint(len(STYLES), (base.n,), generator=g)
    styles = torch.cat([pair_styles, pair_styles[:half]])
    pair = torch.cat([torch.arange(base.n), torch.arange(half)])  # index of each row's pair
    images = torch.empty(batch, 3, resolution, resolution)
    background = torch.empty(batch, 1, resolution, resolution)
    texts = [""] * batch
    labels = attribute_labels(params)
    use_attr = (torch.rand(base.n, generator=g) < 0.5)[pair]
    for s_idx, style in enumerate(STYLES):
        rows = (styles == s_idx).nonzero().flatten()
        if rows.numel() == 0:
            continue
        if decouple_backgrounds:
            images[rows], masks = render(params[rows], style=style, resolution=resolution, return_masks=True)
            background[rows] = masks["background"]
        else:
            images[rows] = render(params[rows], style=style, resolution=resolution)
        for part in (rows[rows < base.n], rows[rows >= base.n]):  # faces, then twins, with the same caption seed
            caps = caption(params[part], style, seed=seed + step) if part.numel() else []
            for j, r in enumerate(part.tolist()):
                texts[r] = attribute_caption(labels, r, int(pair[r]), style) if use_attr[r] else caps[j]
    extra: dict[str, torch.Tensor] = {}
    if style_negatives or decouple_backgrounds:
        rows = (styles[: base.n] != STYLES.index("photo")).nonzero().flatten()
        photo = render(params[rows], style="photo", resolution=resolution) if rows.numel() else images[:0]
        negatives, negative_rows = [], []
        if style_negatives:
            negatives.append(partial_styles(images[rows], photo, g))
            negative_rows.append(rows)
        if decouple_backgrounds:
            keep = torch.tensor([STYLES[int(styles[r])] not in COLOUR_DEFINED_STYLES for r in rows.tolist()],
                                dtype=torch.bool)
            negatives.append(shortcut_images(images[rows[keep]], photo[keep], background[rows[keep]]))
            negative_rows.append(rows[keep])
            images = recolour_backgrounds(images, background, params, styles, g)
        extra = {"negatives": augment(torch.cat(negatives), g, texture=texture_augment),
                 "negative_rows": torch.cat(negative_rows)}
    return augment(images, g, texture=texture_augment), texts, {"styles": styles, **labels, **extra}


@torch.no_grad()
def zero_shot_eval(clip: CLIPGuide, *, n_per_style: int = 100, seed: int = 999, resolution: int = 64) -> dict[str, float]:
    """Zero-shot accuracy on held-out renders: style (with style_prompt), glasses yes/no, smile yes/no; and on the
    same faces ``shortcut_eval``'s ``shortcut`` and ``shortcut_direction``."""
    params = sample_params(n_per_style, seed=seed)
    labels = attribute_labels(params)
    style_text = clip.encode_text([style_prompt(s) for s in STYLES])
    correct = {"style": 0, "glasses": 0, "smile": 0}
    for s_idx, style in enumerate(STYLES):
        emb = clip.encode_image(render(params, style=style, resolution=resolution))
        correct["style"] += int(((emb @ style_text.t()).argmax(1) == s_idx).sum())
        p = clip.encode_text(zero_shot_prompts(style))
        glasses_pred = (emb @ p[0]) > (emb @ p[1])
        smile_pred = (emb @ p[2]) > (emb @ p[3])
        correct["glasses"] += int((glasses_pred == labels["glasses"].bool()).sum())
        correct["smile"] += int((smile_pred == labels["smile"].bool()).sum())
    total = n_per_style * len(STYLES)
    return {**{k: v / total for k, v in correct.items()}, **shortcut_eval(clip, params=params, resolution=resolution)}


@torch.no_grad()
def shortcut_eval(clip: CLIPGuide, *, params: FaceParams, resolution: int = 64) -> dict[str, float]:
    """How the CLIP ranks each style's render against the same face's ``shortcut_images`` (styles not in
    ``COLOUR_DEFINED_STYLES``), on held-out faces.

    ``shortcut``: the share of faces whose style prompt is closer to the render than to the shortcut image.
    ``shortcut_direction``: the mean share of the guide's directional score (the image change from the photo,
    projected on the text direction from ``style_prompt("photo")`` to the style's prompt) that the shortcut
    image reaches against the real render: near 1, a generator can satisfy the guide with shortcuts alone."""
    photo, masks = render(params, style="photo", resolution=resolution, return_masks=True)
    photo_emb = clip.encode_image(photo)  # [N, D]
    photo_text = clip.encode_text([style_prompt("photo")])  # [1, D]
    rejected, shares, count = 0, [], 0
    for style in STYLES:
        if style in COLOUR_DEFINED_STYLES:
            continue
        styled = render(params, style=style, resolution=resolution)
        text = clip.encode_text([style_prompt(style)])  # [1, D]
        direction = F.normalize(text - photo_text, dim=-1)  # [1, D]
        real = clip.encode_image(styled)  # [N, D]
        fake = clip.encode_image(shortcut_images(styled, photo, masks["background"]))  # [N, D]
        rejected += int(((real @ text.t()) > (fake @ text.t())).sum())
        count += params.n
        real_score = ((real - photo_emb) @ direction.t()).mean()
        shares.append(float(((fake - photo_emb) @ direction.t()).mean() / real_score.clamp(min=1e-6)))
    return {"shortcut": rejected / count, "shortcut_direction": sum(shares) / len(shares)}


def contrastive_loss(clip: CLIPGuide, images: torch.Tensor, texts: list[str],
                     extra: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """CLIP's symmetric contrastive loss over a batch (soft targets over equal captions; ``extra["negatives"]``, when
    present, as extra image columns); returns the loss and the unit image embeddings ``[B, D]``."""
    model = clip.model
    img_emb = F.normalize(model.encode_image(clip.preprocess(images)), dim=-1)  # [B, D]
    txt_emb = F.normalize(model.encode_text(clip.tokenizer(texts)), dim=-1)  # [B, D]
    logits = model.logit_scale.exp().clamp(max=100) * img_emb @ txt_emb.t()  # [B, B]
    # Identical captions are true positives too: use soft targets over equal texts.
    same = torch.tensor([[a == b for b in texts] for a in texts], dtype=torch.float32)  # [B, B]
    target = same / same.sum(1, keepdim=True)  # [B, B]
    text_to_image = logits.t()  # [B texts, B images]
    if "negatives" in extra and len(extra["negatives"]):
        neg_emb = F.normalize(model.encode_image(clip.preprocess(extra["negatives"])), dim=-1)  # [M, D]
        # Extra image columns with no caption of their own: every text must rank them below its image.
        neg_logits = model.logit_scale.exp().clamp(max=100) * txt_emb @ neg_emb.t()  # [B, M]
        text_to_image = torch.cat([text_to_image, neg_logits], dim=1)  # [B, B + M]
    t2i_target = F.pad(target, (0, text_to_image.shape[1] - target.shape[1]))  # [B, B + M], zero on negatives
    loss = 0.5 * (torch.sum(-target * logits.log_softmax(1), 1).mean()
                  + torch.sum(-t2i_target * text_to_image.log_softmax(1), 1).mean())
    return loss, img_emb


def train(*, out: Path, steps: int, minutes: float, batch: int = 128, lr: float = 1e-3, seed: int = 0, resolution: int = 64,
          arch: str = "resnet", init_from: Optional[Path] = None, style_negatives: bool = False,
          decouple_backgrounds: bool = False, texture_augment: bool = True, attribute_weight: float = 0.0,
          resume: bool = False, checkpoint_every: int = 100, eval_every: int = 200,
          callback: Optional[Callable[[int, int, dict], None]] = None, progress: bool = True) -> CLIPGuide:
    if not attribute_weight >= 0:
        raise ValueError(f"attribute_weight must be 0 (off) or positive, got {attribute_weight}")
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    vocab_path = out / "vocab.json"
    if init_from is not None:
        # Fine-tune an exported CLIP: its towers, its vocabulary (the arch argument is not used).
        clip = CLIPGuide.from_pretrained(init_from)
        vocab_path.write_text(json.dumps(list(clip.tokenizer.words)))
    else:
        if resume and vocab_path.exists():
            vocab = json.loads(vocab_path.read_text())
        else:
            vocab = build_vocabulary(seed=seed)
            vocab_path.write_text(json.dumps(vocab))
        clip = CLIPGuide.create_synthfaces(vocabulary=vocab, arch=arch)
    model = clip.model.train().requires_grad_(True)
    # Logistic probe for the labels in ATTRIBUTE_PROBE_LABELS, read from the unit image embedding (training only).
    probe = torch.nn.Linear(model.text_projection.shape[1], len(ATTRIBUTE_PROBE_LABELS))
    params = list(model.parameters()) + (list(probe.parameters()) if attribute_weight > 0 else [])
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.98), weight_decay=0.05)
    start, elapsed = 0, 0.0
    ckpt_path = out / "checkpoint.pt"
    if resume and ckpt_path.exists():
        ckpt = torch.load(ckpt_path, weights_only=True)
        model.load_state_dict(ckpt["model"])
        if attribute_weight > 0:
            if "probe" not in ckpt:
                raise ValueError(f"{ckpt_path} was trained without --attribute-weight; resume it without that option "
                                 "or start a new --out folder")
            probe.load_state_dict(ckpt["probe"])
        opt.load_state_dict(ckpt["opt"])
        start, elapsed = int(ckpt["step"]), float(ckpt["elapsed"])
        print(f"resumed from step {start}")
    log = open(out / "log.jsonl", "a")

    def save(step: int) -> None:
        tmp = out / "checkpoint.tmp"
        state = {"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "elapsed": elapsed}
        if attribute_weight > 0:
            state["probe"] = probe.state_dict()
        torch.save(state, tmp)
        tmp.replace(ckpt_path)

    from tqdm import tqdm

    bar = tqdm(total=steps, initial=start, desc="train clip", disable=not progress)
    t0 = time.perf_counter() - elapsed
    step = start
    while step < steps and time.perf_counter() - t0 < minutes * 60:
        images, texts, extra = make_batch(step, batch=batch, seed=seed, resolution=resolution, style_negatives=style_negatives,
                                          decouple_backgrounds=decouple_backgrounds, texture_augment=texture_augment)
        cur_lr = lr * min(1.0, (step + 1) / 100) * 0.5 * (1 + math.cos(math.pi * min(1.0, step / steps)))
        for group in opt.param_groups:
            group["lr"] = cur_lr
        loss, img_emb = contrastive_loss(clip, images, texts, extra)
        if attribute_weight > 0:
            labels = torch.stack([extra[name] for name in ATTRIBUTE_PROBE_LABELS], dim=1).float()  # [B, A]
            # Unit embeddings scaled to unit-variance entries, so that the probe's logits start and learn at O(1).
            probe_logits = probe(img_emb * img_emb.shape[1] ** 0.5)  # [B, A]
            loss = loss + attribute_weight * F.binary_cross_entropy_with_logits(probe_logits, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        elapsed = time.perf_counter() - t0
        record = {"step": step, "loss": loss.item(), "minutes": elapsed / 60}
        if step % eval_every == 0:
            model.eval()
            record.update(zero_shot_eval(clip, n_per_style=50))
            model.train()
            bar.set_postfix({k: f"{v:.3f}" for k, v in record.items() if k in ("loss", "style", "glasses", "smile", "shortcut")})
        if step % 10 == 0 or len(record) > 3:
            log.write(json.dumps(record) + "\n")
            log.flush()
        if callback is not None:
            callback(step, steps, record)
        if step % checkpoint_every == 0:
            save(step)
        bar.update(1)
    bar.close()
    save(step)
    log.close()
    clip.model.eval().requires_grad_(False)
    return clip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/synthfaces-clip"))
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--arch", choices=sorted(SYNTHFACES_CLIP_CONFIGS), default="resnet",
                        help="image tower: open_clip ModifiedResNet (the main guide) or ViT (the second opinion)")
    parser.add_argument("--init-from", type=Path, default=None,
                        help="fine-tune an exported CLIP folder (its towers and vocabulary) instead of starting from scratch")
    parser.add_argument("--style-negatives", action="store_true",
                        help="add partial-style renders of each out-of-domain face as hard negatives for its caption")
    parser.add_argument("--decouple-backgrounds", action="store_true",
                        help="random background colours for half the faces, and shortcut images (the photo with a style's "
                             "background and colours) as negatives for the style's caption")
    parser.add_argument("--no-texture-augment", dest="texture_augment", action="store_false",
                        help="no blur or pixel noise in the augmentation: the CLIP sees fine texture as the renderer drew it")
    parser.add_argument("--attribute-weight", type=float, default=0.0,
                        help="weight of a logistic probe that reads glasses and smile from the image embedding (0: off)")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--export", type=Path, default=None, help="save the CLIP here (fp16 safetensors)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    clip = train(out=args.out, steps=args.steps, minutes=args.minutes, batch=args.batch, lr=args.lr, seed=args.seed, arch=args.arch,
                 init_from=args.init_from, style_negatives=args.style_negatives,
                 decouple_backgrounds=args.decouple_backgrounds, texture_augment=args.texture_augment,
                 attribute_weight=args.attribute_weight, resume=args.resume)
    print(json.dumps(zero_shot_eval(clip, n_per_style=200)))
    if args.export is not None:
        clip.save_pretrained(args.export, dtype=torch.float16)
        print(f"exported CLIP to {args.export}")


if __name__ == "__main__":
    main()
