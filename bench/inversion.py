"""Inversion quality and speed: W+ encoder (stage one) vs RefineStyle encoders (one- and two-stage) vs
optimisation (W+ for 200 and 500 steps; W+ then tokens), on held-out renderer images in domain (photo),
in every out-of-domain style, and with out-of-domain attributes (hats, face paint, exotic colours).

One table per image set: MSE, PSNR, SSIM (LPIPS where its backbone can be loaded) and ms/image, medians
over the images. Encoders run on ``--n`` images per set; the optimisation baselines (far slower on a CPU)
on the first ``--n-opt`` of them. Reconstruction grids go to bench/out/inversion_<set>.png.

Then real photos shipped inside installed packages (portraits, a photo whose face dlib does not find, a cat, a cup
of coffee): per photo, the time of ``refinestyle.faces.align_face`` at 64 and 1024 px, whether a face was found, the
identity kept by the model's reconstruction of the aligned crop (dlib's descriptors: cosine similarity and distance,
beside the same numbers for the 64 px crop against the 1024 px one, the most a 64 px model could keep), and the
model's domain score and in-domain flag for the image it inverted (the aligned crop, else the centre crop).
``--figure`` saves one photo end to end: the photo | its aligned crop | the reconstruction | with a domain | pasted
back into the photo.

    python bench/inversion.py [--n 200] [--n-opt 24] [--encoders FOLDER ...]
    python bench/inversion.py --real-photos-only [--figure docs/real-photo.png]

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


def real_photos() -> dict:
    """Photos that ship inside installed packages (scikit-image, matplotlib), as PIL images."""
    import os

    import matplotlib
    import skimage.data
    from PIL import Image

    return {"astronaut (scikit-image)": Image.fromarray(skimage.data.astronaut()),
            "Grace Hopper (matplotlib)": Image.open(os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")).convert("RGB"),
            "cameraman (scikit-image)": Image.fromarray(skimage.data.camera()).convert("RGB"),
            "cat (scikit-image chelsea)": Image.fromarray(skimage.data.chelsea()),
            "coffee (scikit-image)": Image.fromarray(skimage.data.coffee())}


def tensor_to_pil(image: torch.Tensor):
    """``[3, H, W]`` in [-1, 1] → a PIL image."""
    from PIL import Image

    from refinestyle.images import to_uint8

    return Image.fromarray(to_uint8(image[None].cpu())[0].numpy())


def _median_seconds(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def real_photo_table(model: RefineStyleModel) -> dict[str, dict]:
    """One row per real photo (see the module's docstring); printed as a markdown table."""
    from refinestyle import faces

    res = model.generator.config.resolution
    check = model.domain_check
    rows = {}
    for name, photo in real_photos().items():
        row = {"size": f"{photo.width}x{photo.height}"}
        try:
            row["align_ms_64"] = 1000 * _median_seconds(lambda: faces.align_face(photo, resolution=64))
            row["align_ms_1024"] = 1000 * _median_seconds(lambda: faces.align_face(photo, resolution=1024))
            row["face"] = True
        except faces.NoFaceError:
            row["face"] = False
            row["align_ms_64"] = 1000 * _median_seconds(lambda: faces.detect_faces(photo), repeats=1)  # the search alone
        out = model.invert([photo], method="encoder", align="ffhq" if row["face"] else "none")
        if row["face"]:
            crop = out.aligned[0].image  # what the model inverted, res x res
            reconstruction = tensor_to_pil(out.images[0])
            full = faces.align_face(photo, resolution=1024).image
            row["identity_cos"] = faces.identity_similarity(crop, reconstruction, aligned=True)
            row["identity_distance"] = faces.identity_distance(crop, reconstruction, aligned=True)
            row["ceiling_cos"] = faces.identity_similarity(full, crop, aligned=True)
            row["ceiling_distance"] = faces.identity_distance(full, crop, aligned=True)
        for score, values in out.scores.items():
            row[score] = values[0].item()
        row["in_domain"] = out.in_domain[0] if out.in_domain is not None else None
        rows[name] = row
    score = check.score if check is not None else "refined_psnr"
    print(f"\n### Real photos ({res} px model; domain check: {score} >= {check.threshold:.2f} dB, method {check.method})\n"
          if check else f"\n### Real photos ({res} px model; no calibrated domain check)\n")
    print(f"| photo | size | face found | align_face 64 px (ms) | align_face 1024 px (ms) | identity: reconstruction vs crop, "
          f"cos / distance | 64 px crop vs 1024 px crop, cos / distance | {score} (dB) | in domain |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        align = (f"{r['align_ms_64']:.0f} | {r['align_ms_1024']:.0f}" if r["face"]
                 else f"{r['align_ms_64']:.0f} (no face) | -")
        ident = f"{r['identity_cos']:.3f} / {r['identity_distance']:.3f}" if r["face"] else "-"
        ceil = f"{r['ceiling_cos']:.3f} / {r['ceiling_distance']:.3f}" if r["face"] else "-"
        flag = "-" if r["in_domain"] is None else "in" if r["in_domain"] else "out"
        print(f"| {name} | {r['size']} | {'yes' if r['face'] else 'no'} | {align} | {ident} | {ceil} | {r[score]:.2f} | {flag} |")
    return rows


def real_photo_figure(model: RefineStyleModel, path: Path, *, photo: str = "Grace Hopper (matplotlib)", domain: str = "zombie",
                      height: int = 256) -> None:
    """``photo`` end to end, one panel each: the photo | its FFHQ-aligned crop | the reconstruction | with ``domain``
    (at its suggested strength) | that edit pasted back into the photo (``faces.paste_back``)."""
    from PIL import Image, ImageDraw

    from refinestyle import faces

    source = real_photos()[photo]
    out = model.invert([source], method="encoder", align="ffhq")
    aligned = out.aligned[0]
    with torch.no_grad():
        edited = model.generate(ws=out.ws, tokens=out.tokens, domain=domain, strength="suggested")
    edit = tensor_to_pil(edited[0].clamp(-1, 1))
    panels = [(source, "photo"), (aligned.image, f"aligned crop ({aligned.image.width} px)"),
              (tensor_to_pil(out.images[0].clamp(-1, 1)), "reconstruction"), (edit, f"{domain} domain"),
              (faces.paste_back(aligned, edit), "pasted back")]
    scaled = [(im.resize((round(im.width * height / im.height), height),
                         Image.NEAREST if im.height < height else Image.LANCZOS), label) for im, label in panels]
    gap, caption = 8, 22
    canvas = Image.new("RGB", (sum(im.width for im, _ in scaled) + gap * (len(scaled) - 1), height + caption), "white")
    draw = ImageDraw.Draw(canvas)
    x = 0
    for im, label in scaled:
        canvas.paste(im, (x, 0))
        draw.text((x + 4, height + 5), label, fill="black")
        x += im.width + gap
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    print(f"saved {path}")


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
    parser.add_argument("--real-photos-only", action="store_true", help="only the real-photo table (and --figure)")
    parser.add_argument("--figure", default=str(OUT / "real-photo.png"), help="where the real-photo figure goes")
    args = parser.parse_args()
    model = RefineStyleModel.from_pretrained(args.model)
    if args.real_photos_only:
        rows = real_photo_table(model)
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / "inversion-real-photos.json").write_text(json.dumps(rows, indent=2))
        if "zombie" in model.domains:
            real_photo_figure(model, Path(args.figure))
        return
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
    if args.sets is None:
        (OUT / "inversion-real-photos.json").write_text(json.dumps(real_photo_table(model), indent=2))
        if "zombie" in model.domains:
            real_photo_figure(model, Path(args.figure))


if __name__ == "__main__":
    torch.set_num_threads(int(__import__("os").environ.get("BENCH_THREADS", "2")))
    main()
