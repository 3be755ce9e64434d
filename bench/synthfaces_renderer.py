"""Throughput of the SynthFaces renderer, and sample grids of every style.

Prints a markdown table (style x resolution -> images/s, median of several repeats at a fixed
batch size) and writes sample grids to ``bench/out/``:

- ``synthfaces_styles_64.png`` / ``synthfaces_styles_256.png``: 8 faces (columns) x all styles (rows);
- ``synthfaces_ood_256.png``: out-of-domain faces (hats, face paint, exotic colours) in all styles;
- ``synthfaces_masks_128.png``: faces and their part masks.

Usage::

    .venv/bin/python bench/synthfaces_renderer.py [--threads 2] [--batch 256] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from refinestyle.data.synthfaces import MASK_NAMES, STYLES, render, sample_params
from refinestyle.images import to_uint8

OUT = Path(__file__).resolve().parent / "out"


def throughput(style: str, resolution: int, batch: int, repeats: int) -> float:
    params = sample_params(batch, seed=0)
    render(params, style=style, resolution=resolution)  # warm-up: grids, textures, allocator
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        render(params, style=style, resolution=resolution)
        times.append(time.perf_counter() - t0)
    return batch / statistics.median(times)


def save(grid: torch.Tensor, path: Path) -> None:
    """Saves a [3, H, W] image in [-1, 1]."""
    from PIL import Image

    Image.fromarray(to_uint8(grid[None])[0].numpy()).save(path)


def style_grid(params, resolution: int) -> torch.Tensor:
    rows = [torch.cat(list(render(params, style=s, resolution=resolution)), dim=2) for s in STYLES]
    return torch.cat(rows, dim=1)


def mask_grid(params, resolution: int) -> torch.Tensor:
    img, masks = render(params, resolution=resolution, return_masks=True)
    rows = [torch.cat(list(img), dim=2)]
    for name in MASK_NAMES:
        m = masks[name].expand(-1, 3, -1, -1) * 2 - 1
        rows.append(torch.cat(list(m), dim=2))
    return torch.cat(rows, dim=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--resolutions", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--no-images", action="store_true", help="skip writing the sample grids")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    print(
        f"SynthFaces renderer throughput (images/s, median of {args.repeats}, batch {args.batch}, "
        f"float32, torch {torch.__version__}, {args.threads} thread(s), {os.cpu_count()} CPUs, "
        f"{platform.processor() or platform.machine()})\n"
    )
    print("| style | " + " | ".join(f"{r} px" for r in args.resolutions) + " |")
    print("|---|" + "---:|" * len(args.resolutions))
    for style in STYLES:
        cells = [f"{throughput(style, r, args.batch, args.repeats):,.0f}" for r in args.resolutions]
        print(f"| {style} | " + " | ".join(cells) + " |", flush=True)

    if args.no_images:
        return
    OUT.mkdir(parents=True, exist_ok=True)
    faces = sample_params(8, seed=0)
    for resolution in (64, 256):
        save(style_grid(faces, resolution), OUT / f"synthfaces_styles_{resolution}.png")
    save(style_grid(sample_params(8, seed=1, out_of_domain=True), 256), OUT / "synthfaces_ood_256.png")
    save(mask_grid(faces, 128), OUT / "synthfaces_masks_128.png")
    print(f"\nsample grids written to {OUT}")


if __name__ == "__main__":
    main()
