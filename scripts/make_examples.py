"""Write the app's example images: renderer faces in and out of domain (small PNGs, fixed seeds).

    python scripts/make_examples.py [--out examples] [--resolution 128]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from refinestyle.data.synthfaces import render, sample_params
from refinestyle.images import to_uint8

EXAMPLES = [  # (file name, style, seed, out_of_domain)
    ("photo-1", "photo", 101, False),
    ("photo-2", "photo", 202, False),
    ("photo-hat-ood", "photo", 303, True),
    ("sketch", "sketch", 404, False),
    ("popart", "popart", 505, False),
    ("zombie", "zombie", 606, False),
    ("watercolor", "watercolor", 707, False),
    ("pixelart", "pixelart", 808, False),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "examples")
    parser.add_argument("--resolution", type=int, default=128)
    args = parser.parse_args()
    from PIL import Image

    args.out.mkdir(parents=True, exist_ok=True)
    for name, style, seed, ood in EXAMPLES:
        params = sample_params(1, seed=seed, out_of_domain=ood)
        image = render(params, style=style, resolution=args.resolution)
        Image.fromarray(to_uint8(image)[0].numpy()).save(args.out / f"{name}.png", optimize=True)
    print(f"wrote {len(EXAMPLES)} examples to {args.out}")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
