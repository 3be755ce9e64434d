"""Domain adaptation from text: RefineStyle tokens vs full fine-tuning (StyleGAN-NADA style) vs per-channel
kernel scaling (HyperDomainNet style), same losses, same steps, scored against the renderer's exact
ground truth.

For each style reachable by text: trainable parameters, domain file size, seconds per step, wall time,
ground-truth PSNR/SSIM of ``G_domain(z)`` vs ``render(z_to_params(z), style)`` on held-out z, accuracy of an
independent style classifier (a CNN trained on renders only, not CLIP: the shipped copy in bench/assets,
see bench/attribute_classifier.py), and content preservation
(glasses / smile / eye colour read by the same classifier agree with the face's parameters).
Curves of quality against wall time are saved to bench/out/adaptation.png.

RefineStyle also runs with the extra seeds of ``--seeds`` (the medians over seeds are printed as a second
table); the baselines run with the first seed only (their wall time is the same per step).

    python bench/adaptation.py [--steps 200] [--styles sketch popart zombie watercolor pixelart] [--seeds 0 1 2]
    python bench/adaptation.py --methods refinestyle --num-tokens 8 --seeds 0 --tag k8   # the K trade-off
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from refinestyle import RefineStyleModel, StyleGAN2Generator
from refinestyle.adaptation import (AUTO_WARMUP_FRACTION, AUTO_WARMUP_TOKENS, AdaptConfig, AdaptHistory, adapt_tokens,
                                    optimise, suggest_strength)
from refinestyle.data.synthfaces import style_prompt
from refinestyle.evaluation import cached_attribute_classifier, domain_quality
from refinestyle.options import LR_SCHEDULES

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(__file__).resolve().parent / "out"
GRID_FACES = 4


# Baselines: refinestyle.adaptation's loop and losses over other parameters, so only what is trained differs.


def adapt_finetune(G: StyleGAN2Generator, clips, *, source: str, target: str, config: AdaptConfig,
                   callback=None) -> tuple[StyleGAN2Generator, AdaptHistory]:
    """StyleGAN-NADA style: fine-tune every synthesis convolution weight of a copy of ``G``."""
    config.validate()
    G = G.eval().requires_grad_(False)
    G_train = copy.deepcopy(G)
    params = [layer.weight for _, layer, _ in G_train.synthesis.layers()]
    for p in params:
        p.requires_grad_(True)
    originals = [p.detach().clone() for p in params]

    def regulariser():
        return sum((p - o).square().mean() for p, o in zip(params, originals)) / len(params)

    history = optimise(G=G, clips=clips, synth=G_train.synthesis, params=params, regulariser=regulariser,
                       snapshot=lambda: [p.detach().clone() for p in params],
                       restore=lambda saved: [p.data.copy_(s) for p, s in zip(params, saved)],
                       source=source, target=target, target_images=None, config=config, callback=callback)
    return G_train.requires_grad_(False), history


def adapt_channel_scale(G: StyleGAN2Generator, clips, *, source: str, target: str, config: AdaptConfig,
                        callback=None) -> tuple[StyleGAN2Generator, AdaptHistory]:
    """HyperDomainNet style: learn a per-input-channel scale ``(1 + δ)`` of every layer's kernel."""
    config.validate()
    G = G.eval().requires_grad_(False)
    G_train = copy.deepcopy(G)
    deltas = []
    for _, layer, _ in G_train.synthesis.layers():
        delta = torch.nn.Parameter(torch.zeros(layer.in_channels))
        plain_styles = layer.styles
        # Scaling input channel i of s ⊙ W0 by (1 + δ_i) equals scaling the style.
        layer.styles = (lambda w, f=plain_styles, d=delta: f(w) * (1 + d))
        deltas.append(delta)

    def regulariser():
        return sum(d.square().mean() for d in deltas) / len(deltas)

    history = optimise(G=G, clips=clips, synth=G_train.synthesis, params=deltas, regulariser=regulariser,
                       snapshot=lambda: [d.detach().clone() for d in deltas],
                       restore=lambda saved: [d.data.copy_(s) for d, s in zip(deltas, saved)],
                       source=source, target=target, target_images=None, config=config, callback=callback)
    G_train.channel_scales = deltas
    return G_train.requires_grad_(False), history


def run_method(name, G, clips, style, classifier, *, steps: int, eval_every: int, seed: int, num_tokens: int,
               torgb_tokens: int | None, warmup: tuple[int | None, int], global_weight: float, lr: float,
               lr_schedule: str = "cosine", store_ranks: tuple[int, ...] = (), strengths: tuple[float, ...] = (),
               guide_resolution: int | None = None) -> dict:
    """Adapt photo → ``style`` with one method; evaluate along the way (evaluation time excluded from wall time)."""
    # The same losses for every method (global CLIP term included); the rank warm-up is RefineStyle's alone.
    # suggest_strength=False: the suggestion is measured (and timed) below, apart from the training's wall time.
    cfg = AdaptConfig(steps=steps, seed=seed, num_tokens=num_tokens, torgb_tokens=torgb_tokens, lr=lr, global_weight=global_weight,
                      lr_schedule=lr_schedule, suggest_strength=False, guide_resolution=guide_resolution)
    if name == "refinestyle":
        cfg.warmup_tokens, cfg.warmup_steps = warmup
    curve, eval_seconds = [], [0.0]

    def callback(step, total, state):
        if step % eval_every == 0 or step == total:
            training_seconds = state.seconds - eval_seconds[0]  # earlier evaluations are not training time
            t0 = time.perf_counter()
            q = domain_quality(state.synthesize, G, classifier, style)
            eval_seconds[0] += time.perf_counter() - t0
            curve.append({"step": step, "seconds": training_seconds, **q})

    source, target = style_prompt("photo"), style_prompt(style)
    t0 = time.perf_counter()
    truncations, at_strength = {}, {}
    if name == "refinestyle":
        dom = adapt_tokens(G, clips, source=source, target=target, config=cfg, callback=callback)
        wall = time.perf_counter() - t0 - eval_seconds[0]
        params = dom.num_parameters()
        size = stored_bytes(dom)
        history = dom.history
        tokens = dom.token_set()

        def synthesize_at(ws, strength):  # model.generate(..., strength=s): the residual times s
            return G.synthesis(ws, tokens=[(tokens, strength)])

        # The same domain stored at lower rank (truncated SVD per layer): its quality and file.
        with torch.no_grad():
            for rank in store_ranks:
                low = dom.truncated(rank)
                truncations[rank] = {"file_bytes": stored_bytes(low), "params": low.num_parameters(),
                                     **domain_quality(lambda ws, t=low.token_set(): G.synthesis(ws, tokens=t), G, classifier, style)}
            at_strength = {s: domain_quality(lambda ws, s=s: synthesize_at(ws, s), G, classifier, style) for s in strengths}
    elif name == "finetune":
        G_trained, history = adapt_finetune(G, clips, source=source, target=target, config=cfg, callback=callback)
        wall = time.perf_counter() - t0 - eval_seconds[0]
        params = sum(layer.weight.numel() for _, layer, _ in G_trained.synthesis.layers())
        size = params * 2  # the changed weights alone, in fp16
        synthesize_at = finetune_at_strength(G, G_trained)
    elif name == "channel_scale":
        G_trained, history = adapt_channel_scale(G, clips, source=source, target=target, config=cfg, callback=callback)
        wall = time.perf_counter() - t0 - eval_seconds[0]
        params = sum(d.numel() for d in G_trained.channel_scales)
        size = params * 2  # fp16, as the others
        synthesize_at = channel_scale_at_strength(G_trained)
    else:
        raise ValueError(f"unknown method {name!r}")
    # Every method's edit at the strength the CLIPs suggest (model.adapt does this for tokens), timed on its own.
    t1 = time.perf_counter()
    found = suggest_strength(G, clips, synthesize_at, source=source, target=target)
    suggested = {"strength": found.strength, "seconds": time.perf_counter() - t1}
    if found.strength is not None:
        with torch.no_grad():
            suggested.update(domain_quality(lambda ws: synthesize_at(ws, found.strength), G, classifier, style))
    n_steps = len(history.states)
    with torch.no_grad():  # the first GRID_FACES of domain_quality's held-out faces, for the side-by-side grid
        z = torch.randn(64, G.config.z_dim, generator=torch.Generator().manual_seed(4242))[:GRID_FACES]
        faces = synthesize_at(G.mapping(z.to(G.mapping.w_avg.device)), 1.0).clamp(-1, 1).float().cpu()
    return {"method": name, "style": style, "faces": faces, "params": params, "file_bytes": size,
            "s_per_step": wall / max(1, n_steps), "wall_s": wall, "final": curve[-1] if curve else {}, "curve": curve,
            "truncated": truncations, "strengths": at_strength, "suggested": suggested}


def finetune_at_strength(G, G_trained):
    """``synthesize(ws, s)`` with every fine-tuned weight at ``W0 + s·(W1 - W0)`` (a scratch copy of the generator)."""
    scratch = copy.deepcopy(G_trained)
    weights = [(ls.weight, l0.weight, l1.weight) for (_, ls, _), (_, l0, _), (_, l1, _)
               in zip(scratch.synthesis.layers(), G.synthesis.layers(), G_trained.synthesis.layers())]

    @torch.no_grad()
    def synthesize(ws, strength):
        for w, w0, w1 in weights:
            w.copy_(w0 + strength * (w1 - w0))
        return scratch.synthesis(ws)

    return synthesize


def channel_scale_at_strength(G_trained):
    """``synthesize(ws, s)`` with every learnt channel scale ``1 + δ`` at ``1 + s·δ``."""
    trained = [d.detach().clone() for d in G_trained.channel_scales]

    @torch.no_grad()
    def synthesize(ws, strength):
        try:
            for d, d1 in zip(G_trained.channel_scales, trained):
                d.copy_(strength * d1)
            return G_trained.synthesis(ws)
        finally:
            for d, d1 in zip(G_trained.channel_scales, trained):
                d.copy_(d1)

    return synthesize


def stored_bytes(dom) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        dom.save_pretrained(tmp, dtype=torch.float16)  # as shipped
        return sum(f.stat().st_size for f in Path(tmp).glob("*.safetensors"))


def token_runs(results: list[dict], style: str) -> list[dict]:
    return [r for r in results if r["style"] == style and r["method"] == "refinestyle"]


def medians(rows: list[dict]) -> dict[str, float]:
    """Median GT PSNR, style accuracy, content and look-check share (where measured) over seeds."""
    return {k: statistics.median(q[k] for q in rows) for k in ("psnr", "style_acc", "content", "look") if all(k in q for q in rows)}


def table_header(title: str, columns: list[str]) -> None:
    print(f"\n{title}\n")
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))


def per_seed(runs: list[dict], key: str) -> str:
    return " / ".join(f"{r['final'][key]:.2f}" for r in runs)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "hub" / "refinestyle-synthfaces"))
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--styles", nargs="+", default=["sketch", "popart", "zombie", "watercolor", "pixelart"])
    parser.add_argument("--methods", nargs="+", default=["refinestyle", "finetune", "channel_scale"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="RefineStyle seeds; baselines use the first")
    parser.add_argument("--num-tokens", type=int, default=1, help="K of the RefineStyle domains (as shipped)")
    parser.add_argument("--torgb-tokens", type=int, default=3,
                        help="K of their toRGB layers (as shipped; 0 = the same as --num-tokens)")
    parser.add_argument("--warmup-tokens", type=int, default=AUTO_WARMUP_TOKENS, help="rank warm-up: K on every layer at first (as shipped; 0 = none)")
    parser.add_argument("--warmup-fraction", type=float, default=AUTO_WARMUP_FRACTION,
                        help="rank warm-up: share of the steps before the truncation (rounded down, as model.adapt)")
    parser.add_argument("--global-weight", type=float, default=0.5, help="global CLIP term of every method (as shipped)")
    parser.add_argument("--lr-tokens", type=float, default=None,
                        help="RefineStyle tokens (default: model.adapt's, by the steps)")
    parser.add_argument("--lr-finetune", type=float, default=0.002, help="full fine-tuning (StyleGAN-NADA's default)")
    parser.add_argument("--lr-channel-scale", type=float, default=0.02, help="per-channel kernel scales")
    parser.add_argument("--lr-schedule", choices=LR_SCHEDULES, default="cosine",
                        help="every method (as model.adapt; cosine-restart: a fresh decay after the rank warm-up's truncation)")
    parser.add_argument("--store-ranks", type=int, nargs="*", default=[],
                        help="also evaluate each RefineStyle domain stored at these ranks (truncated SVD, as refinestyle adapt --store-rank)")
    parser.add_argument("--strengths", type=float, nargs="*", default=[],
                        help="also evaluate each RefineStyle domain applied at these strengths (model.generate(..., strength=s))")
    parser.add_argument("--guide-resolution", type=int, default=None,
                        help="the image the guides read (default: the generator's; e.g. 32 reads the 32 px skip image)")
    parser.add_argument("--grid", default=None, help="the side-by-side grid (default docs/adaptation[-<tag>]-grid.png)")
    parser.add_argument("--tag", default="", help="suffix of the output files (bench/out/adaptation-<tag>.json/.png)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: the tables' setting; the machine's cores for the 60 s budget)")
    args = parser.parse_args()
    if args.threads < 1:
        parser.error(f"--threads {args.threads}: give 1 or more")
    try:
        AdaptConfig(steps=args.steps, lr=args.lr_tokens).validate()
    except ValueError as e:
        parser.error(f"--steps / --lr-tokens: {e}")
    return args


def run_all(args: argparse.Namespace, G, clips, classifier, *, lrs: dict, gen_bytes: int) -> list[dict]:
    """Every style × method × seed; prints the seed-0 table as the runs finish."""
    results = []
    print("| style | method | trainable params | file | s/step | wall s | GT PSNR | GT SSIM | look check | style acc | content |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    # (tokens, steps) of the rank warm-up; none when it rounds to zero steps (model.adapt's rule)
    warmup_steps = int(args.warmup_fraction * args.steps) if args.warmup_tokens else 0
    warmup = (args.warmup_tokens, warmup_steps) if warmup_steps else (None, 0)
    for style in args.styles:
        base = domain_quality(lambda ws: G.synthesis(ws), G, classifier, style)
        print(f"| {style} | (unadapted) | 0 | - | - | - | {base['psnr']:.2f} | {base['ssim']:.3f} | {_look(base)} | "
              f"{base['style_acc']:.2f} | {base['content']:.2f} |")
        for method in args.methods:
            seeds = args.seeds if method == "refinestyle" else args.seeds[:1]
            for seed in seeds:
                r = run_method(method, G, clips, style, classifier, steps=args.steps, eval_every=args.eval_every, seed=seed,
                               num_tokens=args.num_tokens, torgb_tokens=args.torgb_tokens or args.num_tokens,
                               warmup=warmup,
                               global_weight=args.global_weight, lr=lrs[method], lr_schedule=args.lr_schedule,
                               store_ranks=tuple(args.store_ranks), strengths=tuple(args.strengths),
                               guide_resolution=args.guide_resolution)
                r["unadapted"], r["seed"] = base, seed
                results.append(r)
                if seed != args.seeds[0]:
                    continue  # the first table is seed 0 for every method; the seed table follows
                f = r["final"]
                print(f"| {style} | {method} | {r['params']:,} | {r['file_bytes'] / 1024:.0f} KB ({100 * r['file_bytes'] / gen_bytes:.1f}%) | "
                      f"{r['s_per_step']:.3f} | {r['wall_s']:.0f} | {f['psnr']:.2f} | {f['ssim']:.3f} | {_look(f)} | "
                      f"{f['style_acc']:.2f} | {f['content']:.2f} |",
                      flush=True)
    return results


def _look(quality: dict) -> str:
    """The share of faces passing the style's look check (refinestyle.look_checks), or '-' without one."""
    return f"{quality['look']:.0%}" if "look" in quality else "-"


def print_seed_table(args, results) -> None:
    table_header(f"RefineStyle over seeds {args.seeds} (final step; median, then each seed)",
                 ["style", "GT PSNR unadapted", "GT PSNR median", "look check median", "style acc median", "content median",
                  "wall s median", "GT PSNR per seed", "look check per seed"])
    for style in args.styles:
        runs = token_runs(results, style)
        med = medians([r["final"] for r in runs])
        print(f"| {style} | {runs[0]['unadapted']['psnr']:.2f} | {med['psnr']:.2f} | {_look(med)} | {med['style_acc']:.2f} | "
              f"{med['content']:.2f} | {statistics.median(r['wall_s'] for r in runs):.0f} | {per_seed(runs, 'psnr')} | "
              + " / ".join(_look(r["final"]) for r in runs) + " |")


def print_suggested_table(args, results) -> None:
    table_header(f"RefineStyle at each domain's suggested strength (model.adapt's CLIP-only suggestion; generate(..., "
                 f"strength='suggested')) against strength 1; medians over seeds {args.seeds}",
                 ["style", "GT PSNR unadapted", "suggested strength per seed", "GT PSNR at 1", "GT PSNR suggested",
                  "style acc at 1", "style acc suggested", "content suggested", "suggestion s", "GT PSNR suggested per seed",
                  "style acc suggested per seed"])
    for style in args.styles:
        runs = token_runs(results, style)
        rows = [r["suggested"] for r in runs if r["suggested"].get("strength") is not None]
        if len(rows) < len(runs):
            print(f"| {style} | (no suggestion for {len(runs) - len(rows)} of {len(runs)} seeds) |")
        if not rows:
            continue
        at1, med = medians([r["final"] for r in runs]), medians(rows)
        print(f"| {style} | {runs[0]['unadapted']['psnr']:.2f} | " + " / ".join(f"{q['strength']:g}" for q in rows)
              + f" | {at1['psnr']:.2f} | {med['psnr']:.2f} | {at1['style_acc']:.2f} | {med['style_acc']:.2f} | {med['content']:.2f} | "
              f"{statistics.median(q['seconds'] for q in rows):.1f} | " + " / ".join(f"{q['psnr']:.2f}" for q in rows) + " | "
              + " / ".join(f"{q['style_acc']:.2f}" for q in rows) + " |")


def print_methods_table(args, results) -> None:
    if len(args.methods) > 1:
        table_header(f"Every method at strength 1 and at its own CLIP-suggested strength (tokens × s; fine-tuned weights "
                     f"W0 + s·ΔW; channel scales 1 + s·δ), seed {args.seeds[0]}",
                     ["style", "method", "GT PSNR unadapted", "suggested strength", "GT PSNR at 1", "GT PSNR suggested",
                      "style acc at 1", "style acc suggested", "content suggested"])
        for style in args.styles:
            for r in (r for r in results if r["style"] == style and r["seed"] == args.seeds[0]):
                q = r["suggested"]
                if q.get("strength") is None:
                    print(f"| {style} | {r['method']} | {r['unadapted']['psnr']:.2f} | none | {r['final']['psnr']:.2f} | - | "
                          f"{r['final']['style_acc']:.2f} | - | - |")
                    continue
                print(f"| {style} | {r['method']} | {r['unadapted']['psnr']:.2f} | {q['strength']:g} | {r['final']['psnr']:.2f} | "
                      f"{q['psnr']:.2f} | {r['final']['style_acc']:.2f} | {q['style_acc']:.2f} | {q['content']:.2f} |")


def print_rank_table(args, results, gen_bytes: int) -> None:
    if args.store_ranks:
        table_header(f"RefineStyle domains (K = {args.num_tokens}) stored at lower rank (truncated SVD); medians over seeds {args.seeds}",
                     ["style", "rank", "file", "GT PSNR median", "style acc median", "content median", "style acc per seed"])
        for style in args.styles:
            runs = token_runs(results, style)
            for rank in [None, *args.store_ranks]:
                rows = [r["final"] if rank is None else r["truncated"][rank] for r in runs]
                size = runs[0]["file_bytes"] if rank is None else runs[0]["truncated"][rank]["file_bytes"]
                med = medians(rows)
                each = " / ".join(f"{q['style_acc']:.2f}" for q in rows)
                label = f"K = {args.num_tokens}" if rank is None else rank
                print(f"| {style} | {label} | {size / 1024:.0f} KB ({100 * size / gen_bytes:.1f}%) | {med['psnr']:.2f} | "
                      f"{med['style_acc']:.2f} | {med['content']:.2f} | {each} |")


def print_strength_table(args, results) -> None:
    if args.strengths:
        table_header(f"RefineStyle domains applied at partial strength; medians over seeds {args.seeds}",
                     ["style", "strength", "GT PSNR median", "style acc median", "content median", "GT PSNR per seed",
                      "style acc per seed"])
        for style in args.styles:
            runs = token_runs(results, style)
            for strength in [0.0, *(s for s in args.strengths if s not in (0, 1)), 1.0]:
                rows = [r["unadapted"] if strength == 0 else r["final"] if strength == 1 else r["strengths"][strength] for r in runs]
                med = medians(rows)
                print(f"| {style} | {strength:g} | {med['psnr']:.2f} | {med['style_acc']:.2f} | {med['content']:.2f} | "
                      + " / ".join(f"{q['psnr']:.2f}" for q in rows) + " | " + " / ".join(f"{q['style_acc']:.2f}" for q in rows) + " |")


def save_grid(args, results, G, path: Path) -> None:
    """Per style and method (first seed), a row of renderer photo | renderer style | domain at strength 1 for the
    same held-out faces, labelled with how many domain faces pass the style's look check."""
    from refinestyle.data.synthfaces import render, z_to_params
    from refinestyle.images import labelled_rows
    from refinestyle.look_checks import CHECKS, check

    z = torch.randn(64, G.config.z_dim, generator=torch.Generator().manual_seed(4242))[:GRID_FACES]
    params = z_to_params(z)
    photo = render(params, style="photo", resolution=G.config.resolution)
    rows = []
    for r in (r for r in results if r["seed"] == args.seeds[0]):
        truth = render(params, style=r["style"], resolution=G.config.resolution)
        passed = f"look {int(check(r['style'], r['faces'])[0].sum())}/{GRID_FACES}" if r["style"] in CHECKS else ""
        rows.append((f"{r['style']}\n{r['method']}\n{passed}", torch.cat([photo, truth, r["faces"]])))
    path.parent.mkdir(parents=True, exist_ok=True)
    labelled_rows(rows).save(path)
    print(f"grid: {path} (per row: {GRID_FACES} renderer photos | the renderer's style | the domain at strength 1)")


def save_plot(args, results, stem: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(2, len(args.styles), figsize=(3.2 * len(args.styles), 6), squeeze=False)
        for col, style in enumerate(args.styles):
            for r in (r for r in results if r["style"] == style and r["seed"] == args.seeds[0]):
                xs = [c["seconds"] for c in r["curve"]]
                axes[0, col].plot(xs, [c["psnr"] for c in r["curve"]], marker="o", label=r["method"])
                axes[1, col].plot(xs, [c["style_acc"] for c in r["curve"]], marker="o", label=r["method"])
            axes[0, col].set_title(style)
            axes[0, col].set_ylabel("GT PSNR (dB)")
            axes[1, col].set_ylabel("style accuracy")
            axes[1, col].set_xlabel("wall time (s)")
        axes[0, 0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(OUT / f"{stem}.png", dpi=100)
        print(f"\nplot: {OUT / f'{stem}.png'}")
    except ImportError:
        print("(matplotlib missing: no plot)")



def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    token_config = AdaptConfig(steps=args.steps, lr=args.lr_tokens)
    lrs = {"refinestyle": token_config.learning_rate(), "finetune": args.lr_finetune, "channel_scale": args.lr_channel_scale}
    model = RefineStyleModel.from_pretrained(args.model)
    G = model.generator
    clips = model.clips  # the directional loss is averaged over them, as in model.adapt
    print("the independent style/attribute classifier (trained on renders only; the copy in bench/assets) ...", flush=True)
    classifier = cached_attribute_classifier(ROOT / "bench" / "assets", steps=600)
    gen_bytes = sum(p.numel() for p in G.parameters()) * 2
    print(f"\nsteps {args.steps}, batch 8, {args.threads} thread(s), learning rates {lrs} ({args.lr_schedule} schedule), CLIPs {[c.name for c in clips]}, "
          f"generator {sum(p.numel() for p in G.parameters()):,} parameters; seed {args.seeds[0]}")
    print(f"RefineStyle: K = {args.num_tokens} (toRGB {args.torgb_tokens or args.num_tokens}), "
          + (f"warm-up with {args.warmup_tokens} tokens for {args.warmup_fraction:.0%} of the steps, " if args.warmup_tokens else "")
          + f"global CLIP weight {args.global_weight} (every method)\n")
    results = run_all(args, G, clips, classifier, lrs=lrs, gen_bytes=gen_bytes)
    OUT.mkdir(parents=True, exist_ok=True)
    stem = f"adaptation-{args.tag}" if args.tag else "adaptation"
    save_grid(args, results, G, Path(args.grid) if args.grid else ROOT / "docs" / f"{stem}-grid.png")
    (OUT / f"{stem}.json").write_text(json.dumps([{k: v for k, v in r.items() if k != "faces"} for r in results], indent=2))
    print_seed_table(args, results)
    print_suggested_table(args, results)
    print_methods_table(args, results)
    print_rank_table(args, results, gen_bytes)
    print_strength_table(args, results)
    save_plot(args, results, stem)


if __name__ == "__main__":
    main()
