"""Train the SynthFaces CLIP contrastively on renderer images in every style with their captions.

Each batch draws faces, a style per face and a caption per face (from ``caption``); half the captions
are replaced by attribute-focused ones so that glasses and smiles are named often. Zero-shot
accuracy (style, glasses, smile) on held-out renders is logged.

    python -m refinestyle.train.clip --out runs/synthfaces-clip --minutes 30
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

from ..clip import CLIPGuide, WordTokenizer
from ..data.synthfaces import STYLES, attribute_labels, caption, render, sample_params, style_prompt


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


def attribute_caption(labels: dict[str, torch.Tensor], idx: int, style: str) -> str:
    base = style_prompt(style)
    glasses = "with glasses" if labels["glasses"][idx] else "without glasses"
    smile = "of a smiling person" if labels["smile"][idx] else "with a neutral expression"
    return f"{base} {glasses}" if idx % 2 else f"{base} {smile}"


def make_batch(step: int, *, batch: int, seed: int, resolution: int) -> tuple[torch.Tensor, list[str], dict]:
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    params = sample_params(batch, seed=g, out_of_domain=step % 4 == 0)
    styles = torch.randint(len(STYLES), (batch,), generator=g)
    images = torch.empty(batch, 3, resolution, resolution)
    texts = [""] * batch
    labels = attribute_labels(params)
    use_attr = torch.rand(batch, generator=g) < 0.5
    for s_idx, style in enumerate(STYLES):
        rows = (styles == s_idx).nonzero().flatten()
        if rows.numel() == 0:
            continue
        images[rows] = render(params[rows], style=style, resolution=resolution)
        caps = caption(params[rows], style, seed=seed + step)
        for j, r in enumerate(rows.tolist()):
            texts[r] = attribute_caption(labels, r, style) if use_attr[r] else caps[j]
    return images, texts, {"styles": styles, **labels}


@torch.no_grad()
def zero_shot_eval(clip: CLIPGuide, *, n_per_style: int = 100, seed: int = 999, resolution: int = 64) -> dict[str, float]:
    """Zero-shot accuracy on held-out renders: style (with style_prompt), glasses yes/no, smile yes/no."""
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
    return {k: v / total for k, v in correct.items()}


def train(*, out: Path, steps: int, minutes: float, batch: int = 128, lr: float = 1e-3, seed: int = 0, resolution: int = 64,
          resume: bool = False, checkpoint_every: int = 100, eval_every: int = 200,
          callback: Optional[Callable[[int, int, dict], None]] = None, progress: bool = True) -> CLIPGuide:
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    vocab_path = out / "vocab.json"
    if resume and vocab_path.exists():
        vocab = json.loads(vocab_path.read_text())
    else:
        vocab = build_vocabulary(seed=seed)
        vocab_path.write_text(json.dumps(vocab))
    clip = CLIPGuide.create_synthfaces(vocabulary=vocab)
    model = clip.model.train().requires_grad_(True)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.05)
    start, elapsed = 0, 0.0
    ckpt_path = out / "checkpoint.pt"
    if resume and ckpt_path.exists():
        ckpt = torch.load(ckpt_path, weights_only=True)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["opt"])
        start, elapsed = int(ckpt["step"]), float(ckpt["elapsed"])
        print(f"resumed from step {start}")
    log = open(out / "log.jsonl", "a")

    def save(step: int) -> None:
        tmp = out / "checkpoint.tmp"
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "elapsed": elapsed}, tmp)
        tmp.replace(ckpt_path)

    from tqdm import tqdm

    bar = tqdm(total=steps, initial=start, desc="train clip", disable=not progress)
    t0 = time.perf_counter() - elapsed
    step = start
    while step < steps and time.perf_counter() - t0 < minutes * 60:
        images, texts, _ = make_batch(step, batch=batch, seed=seed, resolution=resolution)
        cur_lr = lr * min(1.0, (step + 1) / 100) * 0.5 * (1 + math.cos(math.pi * min(1.0, step / steps)))
        for group in opt.param_groups:
            group["lr"] = cur_lr
        img_emb = F.normalize(model.encode_image(clip.preprocess(images)), dim=-1)
        txt_emb = F.normalize(model.encode_text(clip.tokenizer(texts)), dim=-1)
        logits = model.logit_scale.exp().clamp(max=100) * img_emb @ txt_emb.t()  # [B, B]
        # Identical captions are true positives too: use soft targets over equal texts.
        same = torch.tensor([[a == b for b in texts] for a in texts], dtype=torch.float32)
        target = same / same.sum(1, keepdim=True)
        loss = 0.5 * (torch.sum(-target * logits.log_softmax(1), 1).mean() + torch.sum(-target * logits.t().log_softmax(1), 1).mean())
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
            bar.set_postfix({k: f"{v:.3f}" for k, v in record.items() if k in ("loss", "style", "glasses", "smile")})
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
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--export", type=Path, default=None, help="save the CLIP here (fp16 safetensors)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    clip = train(out=args.out, steps=args.steps, minutes=args.minutes, batch=args.batch, lr=args.lr, seed=args.seed, resume=args.resume)
    print(json.dumps(zero_shot_eval(clip, n_per_style=200)))
    if args.export is not None:
        clip.save_pretrained(args.export, dtype=torch.float16)
        print(f"exported CLIP to {args.export}")


if __name__ == "__main__":
    main()
