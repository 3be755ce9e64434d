"""The ``refinestyle`` command line: ``convert`` checkpoints, ``generate`` image grids."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

# torch (and diffusers, through the models) are imported by the commands that use them, so that
# `refinestyle --help` and argument errors answer at once.
from .cards import describe_tokens, domain_metrics, save_domain_preview, write_model_card
from .images import parse_seeds, save_grid
from .options import LAYER_MODES, LR_SCHEDULES, MAX_TRUNCATION
# Not used here: app.py still imports them from refinestyle.cli until it imports refinestyle.images.
from .images import make_grid, to_uint8  # noqa: F401


def strength_arg(text: str) -> float | str:
    """argparse type of ``--strength``: a finite number or ``suggested``."""
    if text.strip() == "suggested":
        return "suggested"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number or 'suggested'") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"strength must be finite, got {text!r}")
    return value


def truncation_arg(text: str) -> float:
    """argparse type of ``--truncation``: psi from 0 to ``MAX_TRUNCATION``, as the app allows."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= MAX_TRUNCATION:
        raise argparse.ArgumentTypeError(f"truncation must be from 0 (the average face) to {MAX_TRUNCATION}, got {text}")
    return value


def output_file(text: str) -> Path:
    """argparse type of an output file: its folder must exist (found before minutes of work, not after)."""
    path = Path(text)
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"the folder {str(path.parent)!r} does not exist; create it first or choose another --out")
    return path


def seed_list(text: str) -> list[int]:
    """argparse type for ``--seeds``."""
    try:
        return parse_seeds(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def cmd_convert(args: argparse.Namespace) -> int:
    import torch

    from .convert import load_stylegan2
    from .pipeline import RefineStyleModel

    G = load_stylegan2(args.src, mapping_lr_multiplier=args.mapping_lr_multiplier, conv_clamp=args.conv_clamp)
    model = RefineStyleModel(generator=G)
    out = Path(args.out_dir)
    dtype = torch.float16 if args.fp16 else torch.float32
    model.save_pretrained(out, dtype=dtype)
    # Parity check: the saved folder reproduces the converted generator.
    reloaded = RefineStyleModel.from_pretrained(out).generator
    z = torch.randn(4, G.config.z_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref, got = G(z, truncation_psi=0.7), reloaded(z, truncation_psi=0.7)
    err = (ref - got).abs().max().item()
    tol = 5e-2 if args.fp16 else 1e-6
    if err > tol:
        print(f"error: the saved model differs from the source by {err:.3g} (> {tol})", file=sys.stderr)
        return 1
    cfg = G.config
    write_model_card(out, title=f"StyleGAN2 {cfg.resolution}px converted from {Path(args.src).name}", body=(
        f"Converted with `refinestyle convert {args.src} {args.out_dir}{' --fp16' if args.fp16 else ''}`.\n\n"
        f"- resolution {cfg.resolution}, z_dim {cfg.z_dim}, w_dim {cfg.w_dim}, channels {list(G.channels)}\n"
        f"- parameters: {sum(p.numel() for p in G.parameters()):,}; weights stored as {str(dtype).replace('torch.', '')}\n"
        f"- parity check after saving: max abs difference {err:.2e} on 4 images (truncation 0.7)\n\n"
        "The licence is that of the source checkpoint."),
        usage=f'model = RefineStyleModel.from_pretrained("{out}")   # this folder, or its Hub repo id once pushed\n'
              'images = model.generate(seeds=range(8), truncation_psi=0.7)  # [8, 3, R, R] in [-1, 1]')
    print(f"converted {args.src} -> {out} (max abs diff after reload {err:.2e})")
    return 0


def load_model_any(path: str):
    """A Hub-layout folder/repo, or any checkpoint ``load_stylegan2`` reads."""
    from .convert import load_stylegan2
    from .pipeline import MODEL_INDEX, RefineStyleModel

    p = Path(path)
    if (p / MODEL_INDEX).exists() or (not p.exists() and path.count("/") == 1):
        return RefineStyleModel.from_pretrained(path)
    return RefineStyleModel(generator=load_stylegan2(path))


def cmd_generate(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    model = load_model_any(args.model)
    domain = model.resolve_domain(args.domain) if args.domain else None  # once, not per seed
    images = []
    for seed in tqdm(args.seeds, desc="generating", unit="img", disable=args.quiet):
        images.append(model.generate(seeds=[seed], truncation_psi=args.truncation, domain=domain, strength=args.strength))
    save_grid(torch.cat(images), args.out, columns=args.columns)
    print(f"saved {len(images)} images to {args.out}")
    return 0


def _adapt_command(args: argparse.Namespace) -> str:
    """The ``refinestyle adapt`` command that made a domain: as typed, or rebuilt from ``args`` when called in-process."""
    if sys.argv[1:2] == ["adapt"]:
        return "refinestyle adapt " + shlex.join(sys.argv[2:])
    parts = ["refinestyle", "adapt"]
    for key, value in vars(args).items():
        if key in ("func", "command", "quiet") or value is None or value is False or value == []:
            continue
        flag = "--" + key.replace("_", "-")
        parts += [flag] if value is True else [a for v in (value if isinstance(value, list) else [value]) for a in (flag, str(v))]
    return shlex.join(parts)


def _domain_card_results(name: str, target: str, suggested, metrics: dict, ground_truth: dict | None) -> str:
    """The card's results: CLIP similarity to the prompt before/after, and a renderer's ground truth when there is one."""
    text = "## Results\n\n"
    if "clip_target_similarity_after" in metrics:
        clip = metrics.get("adaptation", {}).get("clips", ["the model's CLIP"])[0]
        text += (f"CLIP similarity to \"{target}\" ({clip}; {metrics['n']} faces from seed {metrics['seed']}, truncation "
                 f"{metrics['truncation_psi']:g}; `metrics.json`):\n\n| no domain | with the domain |\n|---|---|\n"
                 f"| {metrics['clip_target_similarity_before']:.4f} | {metrics['clip_target_similarity_after']:.4f} |\n")
    if ground_truth:
        cols = [("no domain", ground_truth["unadapted"]), ("strength 1", ground_truth["adapted"])]
        if ground_truth.get("suggested"):
            cols.append((f"strength {ground_truth['suggested']['strength']:g} (suggested)", ground_truth["suggested"]))
        text += (f"\nAgainst the renderer's own `{name}` images of the same faces (64 held-out z; style and content read by "
                 "a classifier trained on renders):\n\n| | " + " | ".join(c for c, _ in cols) + " |\n|---|"
                 + "---|" * len(cols) + "\n")
        for label, key, fmt in (("PSNR (dB)", "psnr", ".2f"), ("SSIM", "ssim", ".3f"), ("style accuracy", "style_acc", ".2f"),
                                ("content kept (glasses, smile, eye colour)", "content", ".2f")):
            text += f"| {label} | " + " | ".join(f"{g[key]:{fmt}}" for _, g in cols) + " |\n"
    if suggested is not None:
        text += ("\n![before (top), after (middle), at the suggested strength (bottom)](preview.png)\n")
    else:
        text += "\n![before (top) and after (bottom)](preview.png)\n"
    return text


def _domain_card_limitations(name: str, target: str, adaptation: dict, ground_truth: dict | None) -> str:
    """What the domain does not promise, including what its own numbers show."""
    clips = ", ".join(adaptation.get("clips", [])) or "its CLIP"
    items = [f"Made for one generator (`{adaptation['model']}`): `load_domain` refuses a generator with other layer "
             "shapes; on one with the same shapes but other weights it loads and means nothing.",
             f"Judged by the CLIP guides it was optimised with ({clips}): they say the images moved toward the prompt, "
             f"not that a person would call them {target}. Look at the preview.",
             "Strengths above 1 extrapolate past what was optimised."]
    if ground_truth:
        u, a = ground_truth["unadapted"], ground_truth["adapted"]
        if a["psnr"] < u["psnr"]:
            items.append(f"At strength 1 the images are further from the renderer's own `{name}` images than without the "
                         f"domain (PSNR {u['psnr']:.2f} → {a['psnr']:.2f} dB), although the classifier reads the style in "
                         f"{a['style_acc']:.0%} of them: the style is recognisable, the pixels differ.")
        if a["content"] < 0.9:
            items.append(f"Content drifts: glasses, smile and eye colour all survive in {a['content']:.0%} of the faces at "
                         f"strength 1 ({u['content']:.0%} without the domain).")
    return "## Limitations\n\n" + "".join(f"- {item}\n" for item in items)


def write_domain_card(out: Path, dom, *, adaptation: dict, metrics: dict, ground_truth: dict | None = None,
                      folder: str | None = None, license: str = "other", note: str | None = None) -> None:
    """``out/README.md`` of a domain: what it is, usage, results, how to reproduce it, limitations.

    Reads nothing but its arguments and the weights' size, so a card can be rewritten without adapting again:
    ``adaptation`` is how it was made (``metrics.json["adaptation"]``, as ``refinestyle adapt`` records it),
    ``metrics`` its CLIP similarities (``domain_metrics``), ``ground_truth`` optional numbers against a renderer's
    own images of the style (SynthFaces: ``{"unadapted" | "adapted" | "suggested": {"psnr", "ssim", "style_acc",
    "content"}}``), ``folder`` the path the usage snippet loads it from (default ``out``), ``note`` a line added to
    the reproduction section (e.g. the script that makes a set of domains)."""
    cfg, a, folder = dom.config, adaptation, folder or str(out)
    name, target, suggested = Path(folder).name, cfg.target or "the reference images", cfg.suggested_strength
    size_kb = sum(f.stat().st_size for f in out.glob("*.safetensors")) / 1024
    shipped = Path(a["model"]) / "domains" / name == Path(folder)
    usage = (f'model = RefineStyleModel.from_pretrained("{a["model"]}")  # the generator it was made for\n'
             f'model.load_domain("{folder}", name="{name}")  # this folder (or its Hub repo id)\n'
             f'images = model.generate(seeds=range(8), truncation_psi=0.7, domain="{name}")  # [8, 3, R, R] in [-1, 1]'
             + (f'\nsofter = model.generate(seeds=range(8), truncation_psi=0.7, domain="{name}", strength="suggested")  # {suggested:g}'
                if suggested is not None else ""))
    made = [f"steps: {a['steps']}; peak learning rate {a['peak_lr']:g} ({a['lr_schedule']}"
            f"{', automatic for these steps' if a['lr_automatic'] else ''}); final loss {a['final_loss']:.4f} (directional "
            f"{a['final_direction_loss']:.4f}); {a['seconds']:.1f} s",
            f"CLIP guides (directional loss averaged over them): {', '.join(a['clips'])}"]
    if a.get("store_rank") is not None:
        made.append(f"adapted with {a['adapted_tokens']} tokens per layer, stored as the best rank-{a['store_rank']} "
                    "residual of each layer (truncated SVD)")
    if a.get("stopped_early"):
        made.append(f"stopped early: {a['stopped_early']}")
    text = f"""---
library_name: refinestyle
license: {license}
tags:
- stylegan2
- refinestyle
- safetensors
---

# RefineStyle domain: {target}

A RefineStyle domain for the generator of `{a['model']}`: one shared set of low-rank residuals of its
convolution kernels (tokens), adapted from **{cfg.source}** to **{target}** with the generator frozen.
Added to the kernels of any image it restyles it; `strength` scales it (0: the generator's own image, 1: the
tokens as optimised).

- tokens per layer: {describe_tokens(dom)}; layers: {len(cfg.layers)}; parameters: {dom.num_parameters():,}; file: {size_kb:.1f} KB
""" + (f"- suggested strength: {suggested:g} (`strength=\"suggested\"`): the smallest at which the CLIPs see the images "
       "as far along the text direction as this domain takes them\n" if suggested is not None else "") + f"""
## Usage

```python
from refinestyle import RefineStyleModel

{usage}
```
""" + (f"\n`{a['model']}` ships this domain: `RefineStyleModel.from_pretrained(\"{a['model']}\")` loads it already, so "
       f"`model.generate(..., domain=\"{name}\")` needs no `load_domain`.\n" if shipped else "") + f"""
{_domain_card_results(name, target, suggested, metrics, ground_truth)}
## How to reproduce

```bash
{a['command']}
```

""" + "".join(f"- {item}\n" for item in made) + (f"\n{note}\n" if note else "") + "\n" \
        + _domain_card_limitations(name, target, a, ground_truth)
    (out / "README.md").write_text(text)


def cmd_adapt(args: argparse.Namespace) -> int:
    import torch

    from .models.domain import DomainTokens

    if args.store_rank is not None and args.store_rank < 1:  # before minutes of adaptation, not after
        raise ValueError(f"--store-rank: rank must be a positive integer, got {args.store_rank}")
    model = load_model_any(args.model)
    dom = model.adapt(args.source, args.target, target_images=args.target_image or None, steps=args.steps, lr=args.lr,
                      lr_schedule=args.lr_schedule, batch=args.batch, seed=args.seed, num_tokens=args.num_tokens,
                      torgb_tokens=args.torgb_tokens, warmup_tokens=args.warmup_tokens, warmup_steps=args.warmup_steps,
                      global_weight=args.global_weight, layers=args.layers, augment_views=args.augment_views,
                      content_weight=args.content_weight, progress=not args.quiet,
                      # with --store-rank the stored residual differs: it is measured once, below
                      suggest_strength=not args.no_suggest_strength and args.store_rank is None)
    out = Path(args.out)
    hist, adapted_k = dom.history, describe_tokens(dom)
    if args.store_rank is not None:
        dom = dom.truncated(args.store_rank)  # the best rank-R residual per layer: a file R/K the size
        if not args.no_suggest_strength:
            found = model.suggest_strength(dom, source=args.source, target=args.target,
                                           target_images=None if args.target else args.target_image)
            if found.strength is not None:
                dom.register_to_config(suggested_strength=found.strength)
    dom.save_pretrained(out, dtype=torch.float16 if args.dtype == "float16" else torch.float32)
    dom = DomainTokens.from_pretrained(out)  # the card's numbers are those of the file as saved
    save_domain_preview(model, dom, out / "preview.png", seed=args.seed)
    metrics = domain_metrics(model, dom, target=args.target)
    size_kb = sum(f.stat().st_size for f in out.glob("*.safetensors")) / 1024
    last = hist.states[-1]
    metrics["adaptation"] = {"command": _adapt_command(args), "model": str(args.model), "clips": [c.name for c in model.clips],
                             "steps": len(hist.states), "peak_lr": hist.states[0]["lr"], "lr_schedule": args.lr_schedule,
                             "lr_automatic": args.lr is None, "final_loss": last["loss"],
                             "final_direction_loss": last["direction_loss"], "seconds": last["seconds"],
                             "stopped_early": hist.stopped_early, "store_rank": args.store_rank,
                             "adapted_tokens": adapted_k if args.store_rank is not None else None}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    write_domain_card(out, dom, adaptation=metrics["adaptation"], metrics=metrics, folder=str(args.out))
    print(f"saved domain to {out} ({size_kb:.1f} KB); preview: {out / 'preview.png'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="refinestyle", description="RefineStyle: StyleGAN2 with dynamic kernel refinement")
    sub = parser.add_subparsers(dest="command", required=True)

    conv = sub.add_parser("convert", help="convert a StyleGAN2 checkpoint to a Hub-layout folder")
    conv.add_argument("src", help="rosinality .pt, NVlabs .pkl, NVlabs state-dict .pt or safetensors")
    conv.add_argument("out_dir", help="output folder (model_index.json, generator/, README.md)")
    conv.add_argument("--fp16", action="store_true", help="store weights as float16 (half the size)")
    conv.add_argument("--mapping-lr-multiplier", type=float, default=None, help="for formats that do not record it (default 0.01)")
    conv.add_argument("--conv-clamp", type=float, default=None, help="for state dicts of NVlabs ADA configs (256)")
    conv.set_defaults(func=cmd_convert)

    ad = sub.add_parser("adapt", help="adapt a domain from text (or reference images) by optimising tokens")
    ad.add_argument("--model", required=True, help="Hub-layout folder or repo id with a clip/ component")
    ad.add_argument("--source", default="a photo of a face")
    ad.add_argument("--target", default=None, help="target prompt, e.g. 'a pencil sketch of a face'")
    ad.add_argument("--target-image", action="append", default=[], help="reference image(s) instead of a target prompt")
    ad.add_argument("--steps", type=int, default=300)
    ad.add_argument("--lr", type=float, default=None,
                    help="peak learning rate (default: by the steps, 0.75 / steps within [0.005, 0.01])")
    ad.add_argument("--lr-schedule", choices=LR_SCHEDULES, default="cosine",
                    help="cosine: one decay to 0 over all the steps (default); cosine-restart: a fresh decay after the "
                         "rank warm-up's truncation; constant")
    ad.add_argument("--batch", type=int, default=8)
    ad.add_argument("--seed", type=int, default=0)
    ad.add_argument("--num-tokens", type=int, default=1, help="K, tokens per convolution (default 1: a domain of a few KB, about 2%% of the SynthFaces synthesis)")
    ad.add_argument("--torgb-tokens", type=int, default=None,
                    help="K of the toRGB layers (default: max(K, 3)); 3 lets a K = 1 domain re-colour freely")
    ad.add_argument("--warmup-tokens", type=int, default=None,
                    help="rank warm-up: optimise this many tokens on every layer first, then truncate to the final K "
                         "(default: 8 when some layer ends below 8)")
    ad.add_argument("--warmup-steps", type=int, default=None,
                    help="rank warm-up: how many of the steps use --warmup-tokens (default: 40%% of --steps; 0: no warm-up)")
    ad.add_argument("--layers", default="all", choices=LAYER_MODES,
                    help="all: every convolution and toRGB layer; convs: convolutions only; adaptive: NADA's choice")
    ad.add_argument("--augment-views", type=int, default=4, help="random affine views per image in the CLIP losses (0 = off)")
    ad.add_argument("--content-weight", type=float, default=0.0, help="weight of the low-pass luminance content term")
    ad.add_argument("--global-weight", type=float, default=0.5, help="weight of the global CLIP loss (image toward the target text)")
    ad.add_argument("--store-rank", type=int, default=None,
                    help="store the best rank-R approximation of each layer's residual (truncated SVD): a file R/K the size")
    ad.add_argument("--no-suggest-strength", action="store_true",
                    help="skip measuring the suggested strength after the run (a few seconds)")
    ad.add_argument("--out", required=True, help="output folder of the domain")
    ad.add_argument("--dtype", choices=["float16", "float32"], default="float16", help="storage precision of the tokens")
    ad.add_argument("--quiet", action="store_true")
    ad.set_defaults(func=cmd_adapt)

    gen = sub.add_parser("generate", help="generate an image grid")
    gen.add_argument("--model", required=True, help="Hub-layout folder, repo id, or checkpoint file")
    gen.add_argument("--seeds", type=seed_list, default=parse_seeds("0-7"), help="e.g. 0-7 or 1,5,9")
    gen.add_argument("--truncation", type=truncation_arg, default=1.0, help=f"truncation psi, 0 to {MAX_TRUNCATION}")
    gen.add_argument("--domain", default=None,
                     help="a domain to apply: one the model ships (e.g. zombie), a domain folder, or a Hub repo id")
    gen.add_argument("--strength", type=strength_arg, default=1.0,
                     help="domain strength: a number, or 'suggested' (the domain's own suggested strength)")
    gen.add_argument("--columns", type=int, default=8)
    gen.add_argument("--out", type=output_file, default="grid.png", help="output PNG (its folder must exist)")
    gen.add_argument("--quiet", action="store_true")
    gen.set_defaults(func=cmd_generate)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .convert import CheckpointError
    from .hub import HubError
    from .images import ImageError

    try:
        return args.func(args)
    except (CheckpointError, HubError, ImageError, ValueError, TypeError, KeyError, FileNotFoundError) as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
