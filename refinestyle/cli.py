"""The ``refinestyle`` command line: ``convert`` checkpoints, ``generate`` image grids."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

# torch (and diffusers, through the models) are imported by the commands that use them, so that
# `refinestyle --help` and argument errors answer at once.
from .cards import describe_tokens, domain_metrics, save_domain_preview, write_converted_card, write_domain_card
from .images import parse_seeds, save_grid
from .options import LAYER_MODES, LR_SCHEDULES, MAX_TRUNCATION


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


def output_folder(text: str) -> Path:
    """argparse type of an output folder: made if missing, but its parent must exist."""
    path = Path(text)
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"the folder {str(path.parent)!r} does not exist; create it first or choose another --out")
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a file, not a folder")
    return path


def seed_list(text: str) -> list[int]:
    """argparse type for ``--seeds``."""
    try:
        return parse_seeds(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def clip_guide_arg(text: str) -> tuple[str, str]:
    """argparse type of ``convert --clip``: ``ARCH:TAG`` that open_clip knows (its own tables: nothing downloads)."""
    arch, sep, tag = text.strip().partition(":")
    if not sep or not arch or not tag:
        raise argparse.ArgumentTypeError(f"{text!r}: name a guide as ARCHITECTURE:TAG, e.g. ViT-B-32:openai")
    from .clip import check_open_clip_guide

    try:
        check_open_clip_guide(arch, tag)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return arch, tag


def _convert_command(args: argparse.Namespace) -> str:
    """The ``refinestyle convert`` command that made a repo, for its card."""
    parts = ["refinestyle", "convert", str(args.src), str(args.out_dir)]
    parts += [a for arch, tag in args.clip for a in ("--clip", f"{arch}:{tag}")]
    parts += ["--face-alignment", args.face_alignment] if args.face_alignment != "none" else []
    parts += ["--fp16"] if args.fp16 else []
    for flag, value in (("--mapping-lr-multiplier", args.mapping_lr_multiplier), ("--conv-clamp", args.conv_clamp)):
        parts += [flag, str(value)] if value is not None else []
    return shlex.join(parts)


def cmd_convert(args: argparse.Namespace) -> int:
    import torch

    from .convert import load_stylegan2
    from .pipeline import RefineStyleModel

    if len(set(args.clip)) != len(args.clip):
        raise ValueError(f"a --clip guide is given twice: {[f'{a}:{t}' for a, t in args.clip]}")
    G = load_stylegan2(args.src, mapping_lr_multiplier=args.mapping_lr_multiplier, conv_clamp=args.conv_clamp)
    model = RefineStyleModel(generator=G, open_clip_guides=args.clip)
    model.face_alignment = args.face_alignment
    out = Path(args.out_dir)
    dtype = torch.float16 if args.fp16 else torch.float32
    model.save_pretrained(out, dtype=dtype)
    # Parity check: the saved folder reproduces the converted generator (and loads offline: the guides are only named).
    reloaded = RefineStyleModel.from_pretrained(out).generator
    z = torch.randn(4, G.config.z_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref, got = G(z, truncation_psi=0.7), reloaded(z, truncation_psi=0.7)
    err = (ref - got).abs().max().item()
    tol = 5e-2 if args.fp16 else 1e-6
    if err > tol:
        print(f"error: the saved model differs from the source by {err:.3g} (> {tol})", file=sys.stderr)
        return 1
    write_converted_card(out, G, src=args.src, command=_convert_command(args), guides=args.clip,
                         face_alignment=args.face_alignment, dtype=str(dtype).replace("torch.", ""), parity=err)
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


def cmd_invert(args: argparse.Namespace) -> int:
    """Invert photos; per image write the input as inverted, the reconstruction, the edit, the edit pasted back into
    the photo (aligned faces), and ws + tokens; print PSNR, identity and the in-domain verdict."""
    from safetensors.torch import save_file
    from tqdm import tqdm

    from .images import to_uint8

    model = load_model_any(args.model)
    domain = model.resolve_domain(args.domain) if args.domain else None
    args.out.mkdir(exist_ok=True)
    method = args.method if args.method != "auto" else "encoder" if model.encoder is not None else "optimize"
    print("| image | PSNR W+ (dB) | PSNR refined (dB) | identity distance | in domain |")
    print("|---|---|---|---|---|")
    for path in args.images:
        with tqdm(total=args.steps, desc=f"inverting {Path(path).name}", disable=args.quiet or method == "encoder") as bar:
            out = model.invert([path], method=method, steps=args.steps, align=args.align,
                               callback=lambda step, total, state: bar.update(step - bar.n))
        edited = model.generate(ws=out.ws, tokens=out.tokens, domain=domain, strength=args.strength) if domain else out.images
        stem = args.out / Path(path).stem
        written = {"input": out.targets, "reconstruction": out.images, **({"edited": edited} if domain else {})}
        for name, images in written.items():
            _save_png(to_uint8(images)[0], f"{stem}-{name}.png")
        identity = "-"
        if out.aligned is not None:
            from .faces import NoFaceError, identity_distance, paste_back

            paste_back(out.aligned[0], edited[0]).save(f"{stem}-pasted.png")
            try:
                identity = f"{identity_distance(out.aligned[0].image, _pil(to_uint8(out.images)[0])):.2f}"
            except NoFaceError:
                identity = "no face in the reconstruction"
        state = {"ws": out.ws.detach().cpu().contiguous(), **{f"tokens.{k}": v.detach().cpu().contiguous()
                                                              for k, v in out.tokens.state_dict().items()}}
        save_file(state, f"{stem}-inversion.safetensors", metadata={"format": "pt"})
        verdict = "-" if out.in_domain is None else \
            f"{'yes' if out.in_domain[0] else 'no'} ({float(out.domain_score[0]):.1f} vs {model.domain_check.threshold:.1f})"
        print(f"| {Path(path).name} | {float(out.scores['w_psnr'][0]):.2f} | {float(out.scores['refined_psnr'][0]):.2f} | "
              f"{identity} | {verdict} |")
    print(f"saved to {args.out}")
    return 0


def _pil(array):
    from PIL import Image

    return Image.fromarray(array.cpu().numpy())


def _save_png(array, path: str) -> None:
    _pil(array).save(path)


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
                      allow_unknown_words=args.allow_unknown_words, guide_resolution=args.guide_resolution,
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

    conv = sub.add_parser("convert", help="convert a StyleGAN2 checkpoint to a complete Hub-layout model repo")
    conv.add_argument("src", help="rosinality .pt, NVlabs .pkl, NVlabs state-dict .pt or safetensors")
    conv.add_argument("out_dir", help="output folder (model_index.json, generator/, README.md)")
    conv.add_argument("--fp16", action="store_true", help="store weights as float16 (half the size)")
    conv.add_argument("--mapping-lr-multiplier", type=float, default=None, help="for formats that do not record it (default 0.01)")
    conv.add_argument("--conv-clamp", type=float, default=None, help="for state dicts of NVlabs ADA configs (256)")
    conv.add_argument("--clip", type=clip_guide_arg, action="append", default=[], metavar="ARCH:TAG",
                      help="an open_clip guide for text adaptation, named in model_index.json and loaded (downloaded once) "
                           "when first used; repeat for several, e.g. --clip ViT-B-32:openai --clip ViT-B-16:openai "
                           "(StyleGAN-NADA's pair)")
    conv.add_argument("--face-alignment", choices=["ffhq", "none"], default="none",
                      help="how photos are cut before inversion: ffhq for face models trained on FFHQ-aligned images "
                           "(FFHQ checkpoints); none (default) centre-crops")
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
    ad.add_argument("--allow-unknown-words", action="store_true",
                    help="go on when the guide does not know a prompt word (default: an error naming it)")
    ad.add_argument("--guide-resolution", type=int, default=None,
                    help="the image the guide reads (default: the generator's, at most 256 or the guides' own size): "
                         "below the generator's, each step stops at that block (2.4x cheaper at 1024 px) and only the "
                         "layers up to it are refined")
    ad.add_argument("--out", required=True, help="output folder of the domain")
    ad.add_argument("--dtype", choices=["float16", "float32"], default="float16", help="storage precision of the tokens")
    ad.add_argument("--quiet", action="store_true")
    ad.set_defaults(func=cmd_adapt)

    inv = sub.add_parser("invert", help="invert photos: reconstruction, edit, paste-back, ws + tokens")
    inv.add_argument("images", nargs="+", help="image files")
    inv.add_argument("--model", required=True, help="Hub-layout folder, repo id, or checkpoint file")
    inv.add_argument("--out", type=output_folder, required=True, help="output folder (made if missing)")
    inv.add_argument("--align", choices=["auto", "ffhq", "none"], default="auto",
                     help="ffhq: cut the face the FFHQ way (needs refinestyle[faces]); auto: what the model declares")
    inv.add_argument("--method", choices=["auto", "encoder", "optimize", "encoder+optimize"], default="auto")
    inv.add_argument("--steps", type=int, default=300, help="optimisation steps (without an encoder)")
    inv.add_argument("--domain", default=None, help="a domain to apply to the inversion (name, folder or repo id)")
    inv.add_argument("--strength", type=strength_arg, default=1.0)
    inv.add_argument("--quiet", action="store_true")
    inv.set_defaults(func=cmd_invert)

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
