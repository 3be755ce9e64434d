"""The SynthFaces CLIPs as guides: what they read on held-out renders, and whether shortcuts fool them.

For each model folder, every CLIP it holds (``model.clips``) is scored by ``refinestyle.train.clip.zero_shot_eval``
on ``--faces`` held-out faces per style (seed 999):

* style, glasses, smile: zero-shot accuracy (the style among the six prompts; yes/no prompts for the attributes);
* shortcut: the share of faces whose style prompt is closer to the style's render than to the same face's shortcut
  image (its photo with the style's background and colour statistics, ``shortcut_images``), for every style a
  colour transfer does not reproduce (not photo or zombie);
* shortcut direction: how much of the guide's directional score the shortcut image reaches against the real
  render (mean over those styles). Near 1, a generator can satisfy the guide by changing the background and the
  colours alone.

    python bench/guides.py hub/refinestyle-synthfaces [runs/other-model ...] [--faces 200]
"""

from __future__ import annotations

import argparse

import torch

from refinestyle import RefineStyleModel
from refinestyle.train.clip import zero_shot_eval


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+")
    parser.add_argument("--faces", type=int, default=200, help="held-out faces per style")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{args.faces} held-out faces per style (seed 999)\n")
    print("| model | CLIP | style | glasses | smile | shortcut rejected | shortcut direction |")
    print("|---|---|---|---|---|---|---|")
    for folder in args.models:
        model = RefineStyleModel.from_pretrained(folder)
        for clip in model.clips:
            r = zero_shot_eval(clip, n_per_style=args.faces)
            print(f"| {folder} | {clip.name} | {r['style']:.3f} | {r['glasses']:.3f} | {r['smile']:.3f} | "
                  f"{r['shortcut']:.3f} | {r['shortcut_direction']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
