"""What a person sees: the hand-written look checks of ``refinestyle.look_checks`` on the renderer and on the shipped
domains (evaluation only; never a loss, never used to choose among runs).

1. The confusion table on held-out renders: for every check (rows), the share of renderer images of each style
   (columns) that pass it; the faces are ``sample_params(100, seed=s)`` for ``--render-seeds`` (none of
   ``TRAIN_SEEDS``, which set the thresholds).
2. For each shipped domain of ``--model``: the share of 64 generated faces (z from ``torch.Generator().manual_seed(
   --z-seed)``, ``truncation_psi=0.7``) that pass their style's check at strength 1 and at ``strength="suggested"``,
   next to the unadapted generator's share on the same z.
3. ``docs/look-checks.png``: per style a row of renderer photo | renderer style | domain (strength 1) | domain
   (suggested) for a few faces, each tile marked with its check's verdict.

    python bench/look_checks.py [--render-seeds 1000 1001 1002] [--z-seed 4242] [--calibrate]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from refinestyle import RefineStyleModel
from refinestyle.data.synthfaces import STYLES, render, sample_params, z_to_params
from refinestyle.look_checks import CHECKS, CONDITIONS, LOOKS, TRAIN_SEEDS, check, check_all, features, margins

ROOT = Path(__file__).resolve().parents[1]


def renders(seeds: list[int]) -> dict[str, torch.Tensor]:
    return {s: torch.cat([render(sample_params(100, seed=sd), style=s, resolution=64) for sd in seeds]) for s in STYLES}


def calibration_table() -> None:
    """The training distributions behind the thresholds (min / 1% / median / 99% / max per style)."""
    imgs = renders(list(TRAIN_SEEDS))
    feats = {s: features(x) for s, x in imgs.items()}
    q = torch.tensor([0.0, 0.01, 0.5, 0.99, 1.0], dtype=torch.float64)
    print(f"### Training distributions (seeds {list(TRAIN_SEEDS)}, {len(imgs['photo'])} faces per style)\n")
    print("| feature | " + " | ".join(STYLES) + " |")
    print("|---|" + "---|" * len(STYLES))
    for name in feats["photo"]:
        cells = []
        for s in STYLES:
            v = torch.quantile(feats[s][name], q).tolist()
            cells.append(f"{v[0]:.3g} / {v[2]:.3g} / {v[4]:.3g}")
        print(f"| {name} (min / median / max) | " + " | ".join(cells) + " |")
    print()


def confusion(seeds: list[int]) -> None:
    imgs = renders(seeds)
    res = {s: check_all(x) for s, x in imgs.items()}
    n = len(imgs["photo"])
    print(f"### Confusion on held-out renders (seeds {seeds}, {n} faces per style; share passing each check)\n")
    print("| check (look) | " + " | ".join(STYLES) + " |")
    print("|---|" + "---|" * len(STYLES))
    for c in CHECKS:
        cells = []
        for s in STYLES:
            rate = res[s][c][0].double().mean().item()
            cells.append(f"**{rate:.1%}**" if s == c else f"{rate:.1%}")
        print(f"| {c} ({LOOKS[c]}) | " + " | ".join(cells) + " |")
    print()


def _label(tile: torch.Tensor, text: str) -> torch.Tensor:
    from PIL import Image, ImageDraw

    arr = (tile.clamp(-1, 1).add(1).mul(127.5).round().byte().permute(1, 2, 0).numpy())
    img = Image.fromarray(arr)
    pad = Image.new("RGB", (img.width, img.height + 14), (255, 255, 255))
    pad.paste(img, (0, 14))
    ImageDraw.Draw(pad).text((2, 1), text, fill=(0, 0, 0))
    return torch.tensor(np.array(pad)).permute(2, 0, 1).float().div(127.5).sub(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "hub" / "refinestyle-synthfaces"))
    parser.add_argument("--render-seeds", type=int, nargs="+", default=[1000, 1001, 1002])
    parser.add_argument("--z-seed", type=int, default=4242)
    parser.add_argument("--faces", type=int, default=64)
    parser.add_argument("--grid-faces", type=int, default=3)
    parser.add_argument("--grid", default=str(ROOT / "docs" / "look-checks.png"))
    parser.add_argument("--calibrate", action="store_true", help="also print the training distributions")
    args = parser.parse_args()
    if set(args.render_seeds) & set(TRAIN_SEEDS):
        parser.error(f"--render-seeds must avoid the training seeds {list(TRAIN_SEEDS)}")
    torch.set_num_threads(min(2, torch.get_num_threads()))
    if args.calibrate:
        calibration_table()
    confusion(args.render_seeds)

    model = RefineStyleModel.from_pretrained(args.model)
    G = model.generator
    z = torch.randn(args.faces, G.config.z_dim, generator=torch.Generator().manual_seed(args.z_seed))
    styles = [s for s in STYLES if s in CHECKS and s in model.domains]
    with torch.no_grad():
        plain = model.generate(z=z, truncation_psi=0.7).clamp(-1, 1)
        out = {s: {k: model.generate(z=z, truncation_psi=0.7, domain=s, strength=k).clamp(-1, 1) for k in (1.0, "suggested")}
               for s in styles}
    print(f"### Shipped domains ({args.faces} faces, z seed {args.z_seed}, truncation 0.7; share passing the style's check)\n")
    print("| domain | suggested strength | unadapted generator | strength 1 | suggested | median score (1 / suggested) |")
    print("|---|---|---|---|---|---|")
    for s in styles:
        p0 = check(s, plain)[0].double().mean().item()
        (p1, s1), (ps, ss) = check(s, out[s][1.0]), check(s, out[s]["suggested"])
        sug = model.domains[s].config.suggested_strength
        print(f"| {s} | {sug} | {p0:.1%} | {p1.double().mean().item():.1%} | {ps.double().mean().item():.1%} | "
              f"{s1.median().item():.2f} / {ss.median().item():.2f} |")
    print()
    print("### Per condition (share of the 64 faces where it holds; median margin, >= 1 holds)\n")
    print("| domain | condition | unadapted generator | strength 1 | suggested |")
    print("|---|---|---|---|---|")
    for s in styles:
        ms = {"plain": margins(s, plain), 1.0: margins(s, out[s][1.0]), "sugg": margins(s, out[s]["suggested"])}
        for name, kind, thr in CONDITIONS[s]:
            cells = [f"{(m[name] >= 1).double().mean().item():.0%} ({m[name].median().item():.2f})" for m in ms.values()]
            print(f"| {s} | {name} {'>=' if kind == 'min' else '<='} {thr:g} | " + " | ".join(cells) + " |")
    print()

    # the grid: per style, for each face: renderer photo | renderer style | domain 1 | domain suggested
    k = args.grid_faces
    params = z_to_params(z[:k])
    photo = render(params, style="photo", resolution=64)
    rows = []
    for s in styles:
        truth = render(params, style=s, resolution=64)
        tiles = []
        for i in range(k):
            for name, img in (("photo", photo[i]), (f"{s}", truth[i]), ("dom s=1", out[s][1.0][i]),
                              ("dom sugg", out[s]["suggested"][i])):
                ok = bool(check(s, img[None])[0][0])
                big = F.interpolate(img[None], scale_factor=2, mode="nearest")[0]
                tiles.append(_label(big, f"{name} {'PASS' if ok else 'fail'}"))
        rows.append(torch.cat([torch.cat([t, torch.ones(3, t.shape[1], 4)], 2) for t in tiles], 2))
    grid = torch.cat([torch.cat([r, torch.ones(3, 6, r.shape[2])], 1) for r in rows], 1)
    from torchvision.utils import save_image

    Path(args.grid).parent.mkdir(parents=True, exist_ok=True)
    save_image(grid.add(1).div(2), args.grid)
    print(f"grid: {args.grid} (per row, {k} faces x: renderer photo | renderer {'/'.join(styles)} | domain strength 1 | "
          f"domain suggested; each tile: the style's check, PASS or fail)")


if __name__ == "__main__":
    main()
