"""Choose between encoder checkpoints on a probe set kept apart from ``bench/inversion.py``'s images.

``bench/inversion.py`` reports the shipped encoders on 200 faces drawn with seed 31337; deciding which training run
ships on those same faces would tune the release to its own test set. This script scores exported encoders on other
faces (default: 128, seed 271828) in every renderer style plus out-of-domain attributes, and prints the median PSNR
of each set, one row per encoder.

    python bench/encoder_probe.py runs/synthfaces-encoder-two-stage-r12/export runs/synthfaces-encoder-two-stage-r13/export
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from refinestyle import RefineStyleModel
from refinestyle.data.synthfaces import STYLES, render, sample_params
from refinestyle.evaluation import psnr
from refinestyle.models.encoder import RefineStyleEncoder

ROOT = Path(__file__).resolve().parents[1]

BENCH_SEED = 31337  # bench/inversion.py's faces: never probe on them


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("encoders", nargs="+", help="exported encoder folders (config.json + safetensors)")
    parser.add_argument("--model", default=str(ROOT / "hub" / "refinestyle-synthfaces"), help="the generator's repo")
    parser.add_argument("--n", type=int, default=128)
    parser.add_argument("--seed", type=int, default=271828)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.seed == BENCH_SEED:
        parser.error(f"--seed {BENCH_SEED} draws bench/inversion.py's own faces; pick another seed")
    torch.set_num_threads(args.threads)
    G = RefineStyleModel.from_pretrained(args.model).generator
    R = G.config.resolution
    params = sample_params(args.n, seed=args.seed)
    sets = {style: render(params, style=style, resolution=R) for style in STYLES}
    sets["OOD attributes"] = render(sample_params(args.n, seed=args.seed, out_of_domain=True), style="photo", resolution=R)
    print(f"median PSNR (dB), {args.n} faces per set, seed {args.seed}\n")
    print("| encoder | " + " | ".join(sets) + " |")
    print("|---|" + "---|" * len(sets))
    for folder in args.encoders:
        encoder = RefineStyleEncoder.from_pretrained(folder).eval()
        cells = []
        for images in sets.values():
            with torch.no_grad():
                ws, tokens = encoder.invert(images, generator=G)
                cells.append(statistics.median(psnr(G.synthesis(ws, tokens=tokens), images).tolist()))
        print(f"| {folder} | " + " | ".join(f"{c:.2f}" for c in cells) + " |", flush=True)


if __name__ == "__main__":
    main()
