"""Inversion quality and speed: W+ encoder (stage one) vs RefineStyle encoders (one- and two-stage) vs
optimisation (W+ for 200 and 500 steps; W+ then tokens), on held-out renderer images in domain (photo),
in every out-of-domain style, and with out-of-domain attributes (hats, face paint, exotic colours).

One table per image set: MSE, PSNR, SSIM (LPIPS where its backbone can be loaded) and ms/image, medians
over the images. Encoders run on ``--n`` images per set; the optimisation baselines (far slower on a CPU)
on the first ``--n-opt`` of them. Reconstruction grids go to bench/out/inversion_<set>.png.

    python bench/inversion.py [--n 200] [--n-opt 24] [--encoders FOLDER ...]

The encoders: the model's own (``model.encoder``) and, by default, the one-stage encoder shipped beside it for
comparison (``hub/refinestyle-synthfaces-one-stage/encoder``); ``--encoders`` names others (exported folders).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from refinestyle import RefineStyleModel
from refinestyle.data.synthfaces import STYLES, render, sample_params
from refinestyle.evaluation import psnr, ssim
from refinestyle.images import save_grid
from refinestyle.inversion import invert_optimize
from refinestyle.models.encoder import RefineStyleEncoder

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(__file__).resolve().parent / "out"
DEFAULT_MODEL = ROOT / "hub" / "refinestyle-synthfaces"
ONE_STAGE_ENCODER = ROOT / "hub" / "refinestyle-synthfaces-one-stage" / "encoder"


def image_sets(n: int, resolution: int, seed: int = 31337) -> dict[str, torch.Tensor]:
    params = sample_params(n, seed=seed)
    sets = {style if style != "photo" else "photo (in domain)": render(params, style=style, resolution=resolution) for style in STYLES}
    sets["photo, OOD attributes"] = render(sample_params(n, seed=seed, out_of_domain=True), style="photo", resolution=resolution)
    return sets


def lpips_metric():
    try:
        import lpips

        return lpips.LPIPS(net="alex", verbose=False)
    except Exception:  # the AlexNet backbone needs a download: not available offline
        return None


def scores(fake: torch.Tensor, real: torch.Tensor, lp) -> dict[str, list[float]]:
    out = {"mse": (fake.clamp(-1, 1) - real).square().flatten(1).mean(1).tolist(), "psnr": psnr(fake, real).tolist(),
           "ssim": ssim(fake, real).tolist()}
    if lp is not None:
        with torch.no_grad():
            out["lpips"] = lp(fake.clamp(-1, 1), real).flatten().tolist()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--n-opt", type=int, default=24)
    parser.add_argument("--sets", nargs="*", default=None, help="subset of set names (default: all)")
    parser.add_argument("--encoders", nargs="*", default=None,
                        help="encoder folders to compare beside the model's own (default: the shipped one-stage encoder)")
    args = parser.parse_args()
    model = RefineStyleModel.from_pretrained(args.model)
    G = model.generator
    # The encoders, named by their kind: the model's own (the default of model.invert) and the ones to compare.
    folders = args.encoders
    if folders is None:  # the one-stage encoder shipped beside the default model, for that model only
        default = Path(args.model).resolve() == DEFAULT_MODEL and (ONE_STAGE_ENCODER / "config.json").exists()
        folders = [ONE_STAGE_ENCODER] if default else []
    found = [model.encoder] if model.encoder is not None else []
    for folder in folders:
        enc = RefineStyleEncoder.from_pretrained(folder)
        enc.check_generator(G)
        found.append(enc)
    encoders = {}
    for enc in found:
        encoders[f"RefineStyle {enc.kind}"] = enc
    encoders = dict(sorted(encoders.items()))  # one-stage rows first, as in earlier tables
    lp = lpips_metric()
    print(f"model {args.model}; encoders: {list(encoders) or 'none'}; LPIPS: {'alex' if lp else 'unavailable offline'}")
    results = {}
    for set_name, images in image_sets(args.n, G.config.resolution).items():
        if args.sets and set_name not in args.sets:
            continue
        rows = {}
        grid_rows = [images[:8]]
        for enc_name, enc in encoders.items():
            t0 = time.perf_counter()
            with torch.no_grad():
                ws_all, tok_all = [], []
                for i in range(0, len(images), 8):  # batch 8, as the speed target is stated
                    ws, tokens = enc.invert(images[i:i + 8], generator=G)
                    ws_all.append(G.synthesis(ws))
                    tok_all.append(G.synthesis(ws, tokens=tokens))
            ms = 1000 * (time.perf_counter() - t0) / len(images)
            w_only, refined = torch.cat(ws_all), torch.cat(tok_all)
            # The two-stage encoder's W+ part is the stage-one W+ encoder, trained alone.
            w_label = "W+ encoder (stage one)" if enc_name.endswith("two-stage") else f"{enc_name}, W+ only"
            rows[w_label] = {**scores(w_only, images, lp), "ms": ms, "n": len(images)}
            rows[enc_name] = {**scores(refined, images, lp), "ms": ms, "n": len(images)}
            grid_rows.append(refined[:8])
        sub = images[: args.n_opt]
        for label, w_steps, t_steps in (("W+ optimisation, 200 steps", 200, 0), ("W+ optimisation, 500 steps", 500, 0),
                                        ("W+ (200) then tokens (100) optimisation", 200, 100)):
            t0 = time.perf_counter()
            ws, tokens = invert_optimize(G, sub, w_steps=w_steps, token_steps=t_steps)
            ms = 1000 * (time.perf_counter() - t0) / len(sub)
            with torch.no_grad():
                fake = G.synthesis(ws, tokens=tokens if t_steps else None)
            rows[label] = {**scores(fake, sub, lp), "ms": ms, "n": len(sub)}
            grid_rows.append(fake[:8])
        results[set_name] = rows
        OUT.mkdir(parents=True, exist_ok=True)
        save_grid(torch.cat(grid_rows), OUT / f"inversion_{set_name.split(' ')[0].strip(',')}.png", columns=8)
        metrics = ["mse", "psnr", "ssim"] + (["lpips"] if lp else [])
        print(f"\n### {set_name}\n")
        print("| method | n | " + " | ".join(m.upper() if m != "psnr" else "PSNR (dB)" for m in metrics) + " | ms/image |")
        print("|---|---|" + "---|" * (len(metrics) + 1))
        for label, r in rows.items():
            cells = [f"{statistics.median(r[m]):.4f}" if m == "mse" else f"{statistics.median(r[m]):.3f}" if m != "psnr"
                     else f"{statistics.median(r[m]):.2f}" for m in metrics]
            print(f"| {label} | {r['n']} | " + " | ".join(cells) + f" | {r['ms']:.1f} |", flush=True)
    # The model card reads inversion.json: a subset of the sets goes to its own file instead of replacing it.
    json_name = "inversion.json" if args.sets is None else "inversion-subset.json"
    (OUT / json_name).write_text(json.dumps({s: {k: {m: (statistics.median(v) if isinstance(v, list) else v)
                                                            for m, v in r.items()} for k, r in rows.items()}
                                                    for s, rows in results.items()}, indent=2))


if __name__ == "__main__":
    torch.set_num_threads(int(__import__("os").environ.get("BENCH_THREADS", "2")))
    main()
