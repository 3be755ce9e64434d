"""SynthFaces: the shipped generator against the renderer, its validity, and the CLIP's zero-shot accuracy.

Prints markdown tables; the numbers go into the model card (hub/build_synthfaces.py card) and the README.
Renderer throughput has its own script: bench/synthfaces_renderer.py.

    python bench/synthfaces.py [--model hub/refinestyle-synthfaces] [--n 1000] [--json out.json]
    python bench/synthfaces.py --compare-generators runs/a runs/b   # experiments beside the shipped generator
    python bench/synthfaces.py --w-ceiling     # what the frozen synthesis draws from one optimised w per face
    python bench/synthfaces.py --held-out-seeds 12345 1 2 3   # the card's generator metrics on other draws of z
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import asdict
from pathlib import Path

import torch

from refinestyle import RefineStyleModel
from refinestyle.data.synthfaces import ATTRIBUTES, EYE_COLORS, STYLES, attribute_labels, render, sample_params, z_to_params
from refinestyle.evaluation import cached_attribute_classifier, domain_quality, evaluate_generator, psnr, ssim, validity_scores
from refinestyle.train.clip import zero_shot_eval

ROOT = Path(__file__).resolve().parents[1]


def run(*, model_path: str | Path = ROOT / "hub" / "refinestyle-synthfaces", n: int = 1000, quiet: bool = False) -> dict:
    model = RefineStyleModel.from_pretrained(model_path)
    G = model.generator
    classifier = cached_attribute_classifier(ROOT / "bench" / "assets", steps=600)
    gen = evaluate_generator(G, classifier, n=n)
    validity = validity_scores(G, classifier)
    # Speed of the shipped generator vs the renderer at 64 px (median of 5, batch 64).
    z = torch.randn(64, G.config.z_dim)
    times = []
    with torch.no_grad():
        for _ in range(6):
            t = time.perf_counter()
            G(z)
            times.append(time.perf_counter() - t)
    params = sample_params(64, seed=0)
    r_times = []
    for _ in range(6):
        t = time.perf_counter()
        render(params, style="photo", resolution=G.config.resolution)
        r_times.append(time.perf_counter() - t)
    out = {"generator": asdict(gen), "validity": validity,
           "speed": {"generator_img_s": 64 / statistics.median(times[1:]), "renderer_img_s": 64 / statistics.median(r_times[1:])}}
    if model.clip is not None:
        out["clip"] = {**zero_shot_eval(model.clip, n_per_style=200), "n": 200}
    # The extra CLIPs (second opinions in the directional loss), by name.
    out["extra_clips"] = {c.name: {**zero_shot_eval(c, n_per_style=200), "n": 200} for c in model.extra_clips}
    # Shipped domains named after a renderer style, against that style's ground truth (before → after).
    out["domains"] = {}
    for name in sorted(model.domains):
        if name in STYLES:
            out["domains"][name] = {"unadapted": domain_quality(G.synthesis, G, classifier, name),
                                    "adapted": domain_quality(lambda ws, d=name: model.generate(ws=ws, domain=d), G, classifier, name)}
            suggested = model.domains[name].config.suggested_strength
            if suggested is not None:  # the same domain at the strength model.adapt suggested (CLIPs only)
                out["domains"][name]["suggested"] = {"strength": suggested, **domain_quality(
                    lambda ws, d=name: model.generate(ws=ws, domain=d, strength="suggested"), G, classifier, name)}
    if not quiet:
        g = gen
        print(f"\n## Generator vs renderer ({g.n} held-out z)\n")
        print("| metric | value | target |\n|---|---|---|")
        print(f"| PSNR | {g.psnr:.2f} dB | ≥ 28 |\n| SSIM | {g.ssim:.3f} | ≥ 0.93 |")
        print(f"| PSNR in eye masks | {g.psnr_eyes:.2f} dB | ≥ 25 |\n| PSNR in mouth masks | {g.psnr_mouth:.2f} dB | ≥ 25 |")
        print(f"| glasses agree | {g.agree_glasses:.3f} | ≥ 0.95 |\n| smile agree | {g.agree_smile:.3f} | ≥ 0.95 |")
        print(f"| eye colour agree | {g.agree_eye_color:.3f} | ≥ 0.95 |\n| classifier on renders | {g.classifier_on_renders:.3f} | (reference) |")
        print("\nEye colour: faces of each true colour (rows) by the colour read from G(z) (columns)\n")
        print("| true \\ read | " + " | ".join(EYE_COLORS) + " |\n|---|" + "---|" * len(EYE_COLORS))
        for name, row in zip(EYE_COLORS, g.eye_color_confusion):
            print(f"| {name} | " + " | ".join(str(v) for v in row) + " |")
        print("\n## Validity (attribute-classifier confidence)\n\n| samples | confidence |\n|---|---|")
        for k, v in validity.items():
            print(f"| {k} | {v:.3f} |")
        print(f"\n## Speed (64 px, batch 64, median)\n\n| | images/s |\n|---|---|\n| generator | {out['speed']['generator_img_s']:.0f} |"
              f"\n| renderer (photo) | {out['speed']['renderer_img_s']:.0f} |")
        if out["domains"]:
            print("\n## Domains vs the renderer's style (64 held-out z), unadapted → adapted (strength 1) / at the suggested strength\n")
            print("| domain | suggested strength | GT PSNR (dB) | GT SSIM | style accuracy | content |\n|---|---|---|---|---|---|")
            for name, d in out["domains"].items():
                u, a = d["unadapted"], d["adapted"]
                q = d.get("suggested")

                def cell(key, fmt):
                    return f"{u[key]:{fmt}} → {a[key]:{fmt}}" + (f" / {q[key]:{fmt}}" if q else "")

                print(f"| {name} | {q['strength']:g} | " if q else f"| {name} | - | ", end="")
                print(f"{cell('psnr', '.2f')} | {cell('ssim', '.3f')} | {cell('style_acc', '.2f')} | {cell('content', '.2f')} |")
        clips = ({"clip": out["clip"]} if "clip" in out else {}) | out["extra_clips"]
        if clips:
            print("\n## CLIP zero-shot (200 renders per style)\n\n| CLIP | style | glasses yes/no | smile yes/no |\n|---|---|---|---|")
            for name, c in clips.items():
                print(f"| {name} | {c['style']:.3f} | {c['glasses']:.3f} | {c['smile']:.3f} |")
            print("| target | ≥ 0.95 | ≥ 0.90 | ≥ 0.90 |")
    return out


@torch.no_grad()
def eye_colour_sweep(model, *, values=(-1.0, -0.5, 0.0, 0.5, 1.0), faces: int = 16, seed: int = 5) -> list[dict]:
    """Move only the eye-colour axis of z for ``faces`` fixed faces: the mean RGB of the dark pixels inside the
    renderer's eye masks (iris and pupil), renderer against generator, and the eye colour the labels give."""
    G = model.generator
    axis = ATTRIBUTES.index("eye_color")
    z0 = torch.randn(faces, G.config.z_dim, generator=torch.Generator().manual_seed(seed))
    rows = []
    for value in values:
        z = z0.clone()
        z[:, axis] = value
        params = z_to_params(z)
        truth, masks = render(params, style="photo", resolution=G.config.resolution, return_masks=True)
        fake = G.synthesis(G.mapping(z), noise_mode="const").clamp(-1, 1)
        iris = (truth.mean(1, keepdim=True) < 0.5).float() * masks["eyes"]  # [N, 1, R, R]

        def mean_rgb(images):
            return ((images * iris).sum((0, 2, 3)) / iris.sum((0, 2, 3))).tolist()

        rows.append({"z": value, "colour": EYE_COLORS[int(attribute_labels(params)["eye_color"][0])],
                     "renderer": mean_rgb(truth), "generator": mean_rgb(fake)})
    print(f"\n## Eye-colour axis of z alone ({faces} fixed faces, seed {seed}): mean iris RGB\n")
    print("| z | colour | renderer | generator |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['z']:+.2f} | {r['colour']} | " + ", ".join(f"{v:+.2f}" for v in r["renderer"]) + " | "
              + ", ".join(f"{v:+.2f}" for v in r["generator"]) + " |")
    return rows


def w_ceiling(model, *, n: int = 64, steps: int = 400, seed: int = 12345, part_weights: str = "eyes=16,mouth=16") -> dict:
    """What the frozen synthesis can draw: for the first ``n`` of the card's held-out z, optimise one w per face (and
    one W+ per face) against the render with the generator's own training loss, starting from ``mapping(z)``.

    If these beat ``G(z)`` by far, the synthesis is not what limits the card's numbers: the mapping is."""
    from refinestyle.train.generator import parse_part_weights, targets, weighted_loss

    G = model.generator.eval().requires_grad_(False)
    z = torch.randn(1000, G.config.z_dim, generator=torch.Generator().manual_seed(seed))[:n]
    real, masks = render(z_to_params(z), style="photo", resolution=G.config.resolution, return_masks=True)
    _, weight = targets(z, resolution=G.config.resolution, part_weights=parse_part_weights(part_weights))

    def scores(ws: torch.Tensor) -> dict:
        with torch.no_grad():
            fake = G.synthesis(ws, noise_mode="const").clamp(-1, 1)
        return {"psnr": psnr(fake, real).mean().item(), "ssim": ssim(fake, real).mean().item(),
                "psnr_eyes": psnr(fake, real, masks["eyes"]).mean().item(), "psnr_mouth": psnr(fake, real, masks["mouth"]).mean().item()}

    with torch.no_grad():
        start = G.mapping(z)  # [n, num_ws, w_dim]
    rows = {"G(z) = synthesis(mapping(z))": scores(start)}
    for space in ("w", "W+"):
        param = (start[:, :1] if space == "w" else start).clone().requires_grad_(True)  # [n, 1 or num_ws, w_dim]
        opt = torch.optim.Adam([param], lr=0.01)
        for step in range(1, steps + 1):
            ws = param.expand_as(start)  # one w per face broadcast to every layer, or W+ as is
            loss = weighted_loss(G.synthesis(ws, noise_mode="const"), real, weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step in (100, steps):
                rows[f"one {space} per face, {step} steps"] = scores(param.detach().expand_as(start))
    print(f"\n## What the frozen synthesis can draw ({n} of the card's held-out z; Adam lr 0.01 from mapping(z), "
          f"loss as in training with {part_weights})\n")
    print("| latent | PSNR | SSIM | eyes PSNR | mouth PSNR |\n|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['psnr_eyes']:.2f} | {r['psnr_mouth']:.2f} |")
    return rows


def print_generator_rows(label: str, rows: dict, *, ssim_digits: int = 3) -> None:
    """One markdown row per generator result (``asdict(evaluate_generator(...))``), keyed by ``label``'s column."""
    print(f"| {label} | PSNR | SSIM | eyes PSNR | mouth PSNR | glasses | smile | eye colour |\n|---|---|---|---|---|---|---|---|")
    for key, g in rows.items():
        print(f"| {key} | {g['psnr']:.2f} | {g['ssim']:.{ssim_digits}f} | {g['psnr_eyes']:.2f} | {g['psnr_mouth']:.2f} | "
              f"{g['agree_glasses']:.3f} | {g['agree_smile']:.3f} | {g['agree_eye_color']:.3f} |")


def held_out_seeds(model_path: str, *, seeds: list[int], n: int, json_path: str | None) -> dict:
    """The card's generator metrics (``evaluate_generator``) on ``n`` z from each seed: how much they owe to one draw."""
    from refinestyle import StyleGAN2Generator

    G = StyleGAN2Generator.from_pretrained(Path(model_path) / "generator").eval()
    classifier = cached_attribute_classifier(ROOT / "bench" / "assets", steps=600)
    rows = {seed: asdict(evaluate_generator(G, classifier, n=n, seed=seed)) for seed in seeds}
    print(f"\n## The generator on {n} held-out z per seed\n")
    print_generator_rows("seed", rows, ssim_digits=4)
    if json_path:
        Path(json_path).write_text(json.dumps(rows, indent=2))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "hub" / "refinestyle-synthfaces"))
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--json", default=None)
    parser.add_argument("--compare-generators", nargs="*", default=[],
                        help="generator folders (e.g. experiments) to score against the renderer beside the shipped one")
    parser.add_argument("--eye-colour-sweep", action="store_true",
                        help="only the eye-colour sweep: the renderer's and the generator's iris along that axis of z")
    parser.add_argument("--w-ceiling", action="store_true",
                        help="only the ceiling of the frozen synthesis: one optimised w (and W+) per face against G(z)")
    parser.add_argument("--held-out-seeds", type=int, nargs="+", default=None,
                        help="only the generator metrics on --n z from each of these seeds (the card uses 12345), to see "
                             "how much the card's numbers depend on its draw")
    args = parser.parse_args()
    if args.held_out_seeds:
        held_out_seeds(args.model, seeds=args.held_out_seeds, n=args.n, json_path=args.json)
        return
    if args.eye_colour_sweep:
        eye_colour_sweep(RefineStyleModel.from_pretrained(args.model))
        return
    if args.w_ceiling:
        rows = w_ceiling(RefineStyleModel.from_pretrained(args.model))
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=2))
        return
    out = run(model_path=args.model, n=args.n)
    if args.compare_generators:
        from refinestyle import StyleGAN2Generator

        classifier = cached_attribute_classifier(ROOT / "bench" / "assets", steps=600)
        rows = {"shipped": out["generator"]}
        for path in args.compare_generators:
            with torch.no_grad():
                rows[path] = asdict(evaluate_generator(StyleGAN2Generator.from_pretrained(path).eval(), classifier, n=args.n))
        out["compared_generators"] = rows
        print(f"\n## Generators side by side ({args.n} held-out z)\n")
        print_generator_rows("generator", rows)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
