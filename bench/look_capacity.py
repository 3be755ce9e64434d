"""What the tokens can draw when shown the answer: a supervised upper bound for text-driven adaptation.

For each style, a domain (K tokens per convolution, 3 per toRGB layer, every layer, as ``model.adapt`` makes them)
is fitted to the renderer's ground truth directly: Adam on the mean squared error between ``G_domain(z)`` and
``render(z_to_params(z), style)`` over fresh z each step. No CLIP is involved, so what this domain cannot draw, no
guide can make the same tokens draw. Scored like ``bench/adaptation.py`` on the same 64 held-out faces: GT PSNR and
the share passing the style's look check (``refinestyle.look_checks``, evaluation only), beside the unadapted
generator. A grid (renderer photo | renderer style | fitted domain per K) goes to ``--grid``.

    python bench/look_capacity.py [--steps 300] [--ks 1 8] [--styles sketch popart pixelart zombie watercolor]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from refinestyle import RefineStyleModel
from refinestyle.data.synthfaces import render, z_to_params
from refinestyle.evaluation import cached_attribute_classifier, domain_quality
from refinestyle.images import labelled_rows
from refinestyle.look_checks import margins
from refinestyle.models.domain import DomainTokens

ROOT = Path(__file__).resolve().parents[1]
GRID_FACES = 4


def fit(G, style: str, *, k: int, steps: int, batch: int, lr: float, seed: int) -> DomainTokens:
    """Tokens fitted to the renderer's images of ``style`` (MSE, Adam with one cosine decay)."""
    domain = DomainTokens.from_generator(G, num_tokens=k, torgb_tokens=max(k, 3), seed=seed).train().requires_grad_(True)
    params = list(domain.parameters())
    opt = torch.optim.Adam(params, lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    draws = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        z = torch.randn(batch, G.config.z_dim, generator=draws)
        truth = render(z_to_params(z), style=style, resolution=G.config.resolution)  # [B, 3, R, R]
        fake = G.synthesis(G.mapping(z), tokens=domain.token_set())  # [B, 3, R, R]
        loss = F.mse_loss(fake, truth)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        schedule.step()
    return domain.eval().requires_grad_(False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "hub" / "refinestyle-synthfaces"))
    parser.add_argument("--styles", nargs="+", default=["sketch", "popart", "pixelart", "zombie", "watercolor"])
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 8], help="tokens per convolution (toRGB: at least 3)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--grid", default=str(ROOT / "docs" / "look-capacity.png"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = RefineStyleModel.from_pretrained(args.model)
    G = model.generator.eval().requires_grad_(False)
    classifier = cached_attribute_classifier(ROOT / "bench" / "assets", steps=600)
    held_out = torch.randn(64, G.config.z_dim, generator=torch.Generator().manual_seed(4242))  # domain_quality's faces
    z = held_out[:GRID_FACES]
    params = z_to_params(z)
    photo = render(params, style="photo", resolution=G.config.resolution)
    print(f"tokens fitted to the renderer (MSE), {args.steps} steps, batch {args.batch}, lr {args.lr}, {args.threads} threads; "
          "64 held-out faces (z seed 4242)\n")
    print("| style | unadapted: GT PSNR / look | " + " | ".join(f"K = {k}: GT PSNR / look" for k in args.ks)
          + f" | median margin per condition at K = {args.ks[-1]} (>= 1 holds) | seconds per fit |")
    print("|---|---|" + "---|" * len(args.ks) + "---|---|")
    rows = []
    for style in args.styles:
        base = domain_quality(lambda ws: G.synthesis(ws), G, classifier, style)
        cells, seconds, faces = [], [], []
        for k in args.ks:
            t0 = time.perf_counter()
            domain = fit(G, style, k=k, steps=args.steps, batch=args.batch, lr=args.lr, seed=args.seed)
            seconds.append(time.perf_counter() - t0)
            with torch.no_grad():
                q = domain_quality(lambda ws: G.synthesis(ws, tokens=domain.token_set()), G, classifier, style)
                faces.append((f"K = {k}", G.synthesis(G.mapping(z), tokens=domain.token_set()).clamp(-1, 1)))
            cells.append(f"{q['psnr']:.2f} / {q['look']:.0%}")
        with torch.no_grad():  # the held-out faces, drawn by the last fit
            drawn = G.synthesis(G.mapping(held_out), tokens=domain.token_set()).clamp(-1, 1)
        margin = ", ".join(f"{name} {float(m.median()):.2f}" for name, m in margins(style, drawn).items())
        print(f"| {style} | {base['psnr']:.2f} / {base['look']:.0%} | " + " | ".join(cells) + f" | {margin} | "
              + " / ".join(f"{s:.0f}" for s in seconds) + " |", flush=True)
        truth = render(params, style=style, resolution=G.config.resolution)
        rows.append((f"{style}\nphoto, render,\n" + ", ".join(name for name, _ in faces),
                     torch.cat([photo, truth, *[f for _, f in faces]])))
    Path(args.grid).parent.mkdir(parents=True, exist_ok=True)
    labelled_rows(rows).save(args.grid)
    print(f"\ngrid: {args.grid} (per row: {GRID_FACES} renderer photos | the renderer's style | the fitted domain for each K)")


if __name__ == "__main__":
    main()
