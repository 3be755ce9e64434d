"""Where a domain's pixels differ from the renderer's, and what the CLIPs ask for.

For each style: a RefineStyle domain (``--domains NAME=FOLDER``, else ``model.adapt`` with its defaults from
``style_prompt(style)``, ``--steps`` and ``--seed``, as ``bench/adaptation.py`` makes them) on the 64 held-out faces of
``bench/adaptation.py`` (z seed 4242) against ``render(z_to_params(z), style)``:

1. the image MSE split by the renderer's part masks (each part's mask-weighted share of the whole-image MSE), for the
   unadapted generator and the domain, and the PSNR of the domain's foreground pasted over the unadapted background;
2. what the guiding CLIPs reward: the NADA direction ``cos(E(x) - E(photo), T(style) - T(photo))`` and the global
   similarity ``cos(E(x), T(style))`` of the renderer's own style images, of the same with a darker background,
   and with the photo's background.

    python bench/domain_diagnostics.py --styles pixelart popart
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F


from refinestyle import DomainTokens, RefineStyleModel
from refinestyle.data.synthfaces import STYLES, render, style_prompt, z_to_params
from refinestyle.evaluation import psnr

ROOT = Path(__file__).resolve().parents[1]

PARTS = ("face", "hair", "eyes", "brows", "mouth", "glasses", "background")


def part_shares(fake: torch.Tensor, truth: torch.Tensor, masks: dict[str, torch.Tensor]) -> dict[str, float]:
    err = (fake.clamp(-1, 1) - truth).square().mean(1, keepdim=True)  # [N, 1, H, W]
    out = {"image": err.mean().item()}
    for part in PARTS:
        out[part] = (err * masks[part]).sum().item() / err.numel()  # the part's share of the image MSE
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "hub" / "refinestyle-synthfaces"))
    parser.add_argument("--styles", nargs="+", default=["pixelart", "popart"], choices=[s for s in STYLES if s != "photo"])
    parser.add_argument("--domains", nargs="*", default=[], metavar="STYLE=FOLDER", help="use saved domains instead of adapting")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    saved = dict(item.split("=", 1) for item in args.domains)
    model = RefineStyleModel.from_pretrained(args.model)
    G = model.generator
    z = torch.randn(64, G.config.z_dim, generator=torch.Generator().manual_seed(4242))  # bench/adaptation.py's faces
    params = z_to_params(z)
    photo = render(params, style="photo", resolution=G.config.resolution)
    with torch.no_grad():
        ws = G.mapping(z)
        unadapted = G.synthesis(ws).clamp(-1, 1)

    print("Image MSE split by the renderer's part masks (mask-weighted share of the image MSE), 64 held-out faces\n")
    print("| style | images | PSNR (dB) | image MSE | " + " | ".join(PARTS) + " |")
    print("|---|---|---|---|" + "---|" * len(PARTS))
    for style in args.styles:
        truth, masks = render(params, style=style, resolution=G.config.resolution, return_masks=True)
        masks = {k: v if v.dim() == 4 else v[:, None] for k, v in masks.items()}  # [N, 1, H, W]
        if style in saved:
            domain = DomainTokens.from_pretrained(saved[style])
        else:
            domain = model.adapt(style_prompt("photo"), style_prompt(style), steps=args.steps, seed=args.seed, progress=True)
        with torch.no_grad():
            adapted = G.synthesis(ws, tokens=domain.token_set()).clamp(-1, 1)
        background = masks["background"]
        pasted = adapted * (1 - background) + unadapted * background  # the domain's foreground, the photo background
        for label, images in (("unadapted", unadapted), ("domain", adapted), ("domain over unadapted background", pasted)):
            shares = part_shares(images, truth, masks)
            print(f"| {style} | {label} | {psnr(images, truth).mean().item():.2f} | {shares['image']:.4f} | "
                  + " | ".join(f"{shares[p]:.4f}" for p in PARTS) + " |", flush=True)

    print("\nWhat the CLIPs reward: NADA direction / global similarity of the renderer's own style images\n")
    print("| style | CLIP | renderer's images | darker background (×0.5) | photo's background |")
    print("|---|---|---|---|---|")
    for style in args.styles:
        truth, masks = render(params, style=style, resolution=G.config.resolution, return_masks=True)
        background = masks["background"] if masks["background"].dim() == 4 else masks["background"][:, None]
        variants = [truth, truth * (1 - background) + ((truth + 1) * 0.5 - 1) * background,
                    truth * (1 - background) + photo * background]
        for clip in model.clips:
            with torch.no_grad():
                text = clip.encode_text([style_prompt(style), style_prompt("photo")])  # [2, D] unit rows
                direction = F.normalize(text[0] - text[1], dim=0)  # [D]
                photo_emb = clip.encode_image(photo)  # [N, D]
                cells = []
                for images in variants:
                    emb = clip.encode_image(images.clamp(-1, 1))  # [N, D]
                    along = F.cosine_similarity(emb - photo_emb, direction[None], dim=1).mean().item()
                    cells.append(f"{along:.3f} / {(emb @ text[0]).mean().item():.3f}")
            print(f"| {style} | {clip.name} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
