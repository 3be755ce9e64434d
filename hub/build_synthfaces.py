"""Build the default Hub repo ``hub/refinestyle-synthfaces`` from the training runs, then write its cards.

    python hub/build_synthfaces.py assemble          # generator, CLIPs, encoders from runs/ → the hub folders (fp16)
    bash hub/make_domains.sh                         # the domains, each from one `refinestyle adapt` command
    python bench/inversion.py                        # the inversion table the card quotes (bench/out/inversion.json)
    python hub/build_synthfaces.py calibrate         # the in/out-of-domain check of encoder inversions → metrics.json
    python hub/build_synthfaces.py index             # model_index.json (with that check) from the folders on disk
    python hub/build_synthfaces.py card --recompute  # evaluate (bench/synthfaces.py), write metrics.json and every card
    python hub/build_synthfaces.py card              # the cards again from metrics.json, evaluating nothing
    python hub/build_synthfaces.py domain-cards      # only the domains' cards, from their files (nothing re-optimised)
    python hub/build_synthfaces.py refresh-domains   # after a new mapping on the same synthesis: re-measure the domains

The training commands that made the shipped files are ``RECIPE`` below, in order; the card prints them.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from refinestyle import RefineStyleModel, StyleGAN2Generator
from refinestyle.cards import domain_metrics, save_domain_preview, write_domain_card
from refinestyle.clip import CLIPGuide
from refinestyle.images import save_grid
from refinestyle.models.domain import DomainTokens
from refinestyle.models.encoder import RefineStyleEncoder

ROOT = Path(__file__).resolve().parents[1]
HUB = ROOT / "hub" / "refinestyle-synthfaces"
ONE_STAGE = ROOT / "hub" / "refinestyle-synthfaces-one-stage"  # the one-stage encoder, kept for comparison
RUNS = ROOT / "runs"
LICENSE = "apache-2.0"

# Hub folder → (run folder, architecture). The ResNet is model.clip; the others become model.extra_clips.
CLIP_RUNS = {"clip": ("synthfaces-clip-smile", "resnet"), "clip-vit": ("synthfaces-clip-vit", "vit")}
# The run folders of the shipped encoders (the last of each chain in RECIPE).
ENCODER_RUNS = {"one-stage": "s15-enc-one-stage", "two-stage": "s15-enc-two-stage-r19"}
# Where `assemble` puts each encoder: the two-stage one is the default of `model.invert`.
ENCODER_FOLDERS = {"two-stage": HUB / "encoder", "one-stage": ONE_STAGE / "encoder"}
# The shipped generator: the base run, then fine-tunes, each from the previous one's export; the last one's export
# ships. A run folder missing here keeps its record (steps, minutes) in build_info.json.
GENERATOR_BASE_RUN = "synthfaces-generator"
GENERATOR_FINE_TUNES = ("synthfaces-generator-bins", "synthfaces-generator-bins-r2", "synthfaces-generator-mapping512",
                        "synthfaces-generator-mapping512-mouth", "synthfaces-generator-per-layer",
                        "synthfaces-generator-per-layer-ssim", "synthfaces-generator-per-layer-mouth",
                        "synthfaces-generator-top-blocks")
PARTS = ("generator", "clip", "encoders")

GEN = "python -m refinestyle.train.generator"
ENC = "python -m refinestyle.train.encoder --generator hub/refinestyle-synthfaces"
MAPPING = "--train mapping --mapping-width 512"
# The commands that made the shipped files, in order: (what it makes, commands). An encoder step trains against the
# generator as it stands at that point of the list. `<X at commit C>`: that folder of this repo at git commit C (the
# fp16 files as shipped then); `$PREV`: a copy of the shipped encoders then, two-stage as `encoder`, one-stage as
# `one-stage` (what hub/cascade.sh prepares in runs/$TAG-prev).
RECIPE = (
    ("generator, base", [f"{GEN} --out runs/synthfaces-generator --steps 26000 --minutes 62 --threads 1"]),
    ("encoders, first version", [
        f"{ENC} --out runs/synthfaces-encoder-one-stage-v1 --mode one-stage --steps 4000 --minutes 34 --threads 1 --export runs/synthfaces-encoder-one-stage-v1/export",
        f"{ENC} --out runs/synthfaces-encoder-stage-one-v1 --mode stage-one --steps 2000 --minutes 16 --threads 1 --export runs/synthfaces-encoder-stage-one-v1/export",
        f"{ENC} --out runs/synthfaces-encoder-two-stage-v1 --mode two-stage --stage-one runs/synthfaces-encoder-stage-one-v1/export --steps 1500 --minutes 15 --threads 1 --export runs/synthfaces-encoder-two-stage-v1/export"]),
    ("generator, base continued (a longer cosine schedule)", [
        f"{GEN} --out runs/synthfaces-generator --steps 50000 --minutes 116 --threads 1 --resume"]),
    ("encoders, fine-tuned", [
        f"{ENC} --out runs/synthfaces-encoder-one-stage --mode one-stage --init-from runs/synthfaces-encoder-one-stage-v1/export --steps 2400 --minutes 22 --threads 1 --export runs/synthfaces-encoder-one-stage/export",
        f"{ENC} --out runs/synthfaces-encoder-stage-one --mode stage-one --init-from runs/synthfaces-encoder-stage-one-v1/export --steps 1200 --minutes 11 --threads 1 --export runs/synthfaces-encoder-stage-one/export",
        f"{ENC} --out runs/synthfaces-encoder-two-stage --mode two-stage --stage-one runs/synthfaces-encoder-stage-one/export --init-from runs/synthfaces-encoder-two-stage-v1/export --steps 1200 --minutes 12 --threads 1 --export runs/synthfaces-encoder-two-stage/export",
        f"{ENC} --out runs/synthfaces-encoder-one-stage-r3 --mode one-stage --init-from runs/synthfaces-encoder-one-stage/export --steps 6000 --minutes 85 --threads 1 --export runs/synthfaces-encoder-one-stage-r3/export",
        f"{ENC} --out runs/synthfaces-encoder-two-stage-r3 --mode two-stage --stage-one runs/synthfaces-encoder-stage-one/export --init-from runs/synthfaces-encoder-two-stage/export --steps 3000 --minutes 55 --threads 1 --export runs/synthfaces-encoder-two-stage-r3/export",
        f"{ENC} --out runs/synthfaces-encoder-one-stage-r4 --mode one-stage --init-from runs/synthfaces-encoder-one-stage-r3/export --photometric-augment 0.5 --steps 3000 --minutes 50 --threads 1 --export runs/synthfaces-encoder-one-stage-r4/export",
        f"{ENC} --out runs/synthfaces-encoder-two-stage-r4 --mode two-stage --stage-one runs/synthfaces-encoder-stage-one/export --init-from runs/synthfaces-encoder-two-stage-r3/export --photometric-augment 0.5 --steps 3000 --minutes 50 --threads 1 --export runs/synthfaces-encoder-two-stage-r4/export",
        *(f"{ENC} --out runs/synthfaces-encoder-two-stage-r{r} --mode two-stage --stage-one runs/synthfaces-encoder-stage-one/export --init-from runs/synthfaces-encoder-two-stage-r{r - 1}/export --photometric-augment 0.5 --seed {r - 4} --steps 3000 --minutes {m} --threads 1 --export runs/synthfaces-encoder-two-stage-r{r}/export"
          for r, m in ((5, 45), (6, 45), (7, 45), (8, 45), (9, 40), (10, 40), (11, 40), (12, 33)))]),
    ("generator, z-bin inputs (one GPU)", [
        f"{GEN} --out runs/synthfaces-generator-bins --init-from '<generator/ at commit 8406ebc>' --batch 64 --lr 2e-3 --part-weights eyes=16,mouth=8 --steps 7500 --minutes 6 --device cuda --threads 5",
        f"{GEN} --out runs/synthfaces-generator-bins --init-from '<generator/ at commit 8406ebc>' --batch 64 --lr 2e-3 --part-weights eyes=16,mouth=8 --steps 11500 --minutes 9.9 --device cuda --threads 5 --resume --export runs/synthfaces-generator-bins/export"]),
    ("encoders on it; PREV: the encoders at commit 8406ebc", [
        f"{ENC} --out runs/s10-enc-stage-one --mode stage-one --init-from runs/synthfaces-encoder-stage-one/export --steps 1500 --minutes 12 --threads 1 --export runs/s10-enc-stage-one/export",
        f"{ENC} --out runs/s10-enc-two-stage --mode two-stage --stage-one runs/s10-enc-stage-one/export --init-from $PREV/encoder --photometric-augment 0.5 --seed 9 --steps 2400 --minutes 27 --threads 1 --export runs/s10-enc-two-stage/export",
        f"{ENC} --out runs/s10-enc-one-stage --mode one-stage --init-from $PREV/one-stage --photometric-augment 0.5 --seed 9 --steps 1500 --minutes 25 --threads 1 --export runs/s10-enc-one-stage/export",
        f"{ENC} --out runs/s10-enc-two-stage-r15 --mode two-stage --stage-one runs/s10-enc-stage-one/export --init-from runs/s10-enc-two-stage/export --photometric-augment 0.5 --seed 10 --steps 1600 --minutes 20 --threads 1 --export runs/s10-enc-two-stage-r15/export"]),
    ("generator, z-bin inputs again (one GPU)", [
        f"{GEN} --out runs/synthfaces-generator-bins-r2 --init-from '<generator/ at commit cec3bcb>' --batch 64 --lr 1e-3 --part-weights eyes=16,mouth=16 --steps 9000 --minutes 8.3 --device cuda --threads 5 --export runs/synthfaces-generator-bins-r2/export"]),
    ("encoders on it (TAG=s11 SEED=11 bash hub/cascade.sh, then one more two-stage run); PREV: the encoders at commit cec3bcb", [
        f"{ENC} --threads 1 --mode stage-one --out runs/s11-enc-stage-one --init-from $PREV/encoder --steps 1500 --minutes 12 --export runs/s11-enc-stage-one/export",
        f"{ENC} --threads 1 --photometric-augment 0.5 --seed 11 --mode two-stage --out runs/s11-enc-two-stage --stage-one runs/s11-enc-stage-one/export --init-from $PREV/encoder --steps 2400 --minutes 27 --export runs/s11-enc-two-stage/export",
        f"{ENC} --threads 1 --photometric-augment 0.5 --seed 11 --mode one-stage --out runs/s11-enc-one-stage --init-from $PREV/one-stage --steps 1500 --minutes 25 --export runs/s11-enc-one-stage/export",
        f"{ENC} --threads 1 --photometric-augment 0.5 --seed 12 --mode two-stage --out runs/s11-enc-two-stage-r17 --stage-one runs/s11-enc-stage-one/export --init-from runs/s11-enc-two-stage/export --steps 1600 --minutes 22 --export runs/s11-enc-two-stage-r17/export"]),
    ("generator, mapping widened to 512 and retrained, synthesis frozen (stopped by hand at step 27,930; "
     "the third command exports its 27,800-step checkpoint)", [
        f"{GEN} --out runs/synthfaces-generator-mapping512 --init-from '<generator/ at commit 04c263c>' {MAPPING} --batch 16 --lr 1e-3 --part-weights eyes=16,mouth=16 --steps 40000 --minutes 70 --threads 1",
        f"{GEN} --out runs/synthfaces-generator-mapping512 --init-from '<generator/ at commit 04c263c>' {MAPPING} --batch 16 --lr 1e-3 --part-weights eyes=16,mouth=16 --steps 40000 --minutes 62 --threads 2 --resume --export runs/synthfaces-generator-mapping512/export",
        f"{GEN} --out runs/synthfaces-generator-mapping512 --init-from '<generator/ at commit 04c263c>' {MAPPING} --batch 16 --lr 1e-3 --part-weights eyes=16,mouth=16 --steps 28000 --minutes 0.01 --threads 2 --resume --export runs/synthfaces-generator-mapping512/export",
        f"{GEN} --out runs/synthfaces-generator-mapping512-mouth --init-from runs/synthfaces-generator-mapping512/export {MAPPING} --part-weights eyes=16,mouth=32 --batch 32 --lr 5e-4 --steps 12000 --minutes 25 --threads 1 --export runs/synthfaces-generator-mapping512-mouth/export"]),
    ("generator, per-layer mapping outputs and an SSIM term, synthesis frozen", [
        f"{GEN} --out runs/synthfaces-generator-per-layer --init-from '<generator/ at commit 2d48e9e>' {MAPPING} --mapping-per-layer --part-weights eyes=16,mouth=32 --ssim-weight 4 --batch 32 --lr 5e-4 --steps 12000 --minutes 9 --threads 1 --export runs/synthfaces-generator-per-layer/export",
        f"{GEN} --out runs/synthfaces-generator-per-layer-ssim --init-from runs/synthfaces-generator-per-layer/export {MAPPING} --mapping-per-layer --part-weights eyes=24,mouth=96 --ssim-weight 4 --batch 32 --lr 5e-4 --steps 12000 --minutes 62 --threads 1 --export runs/synthfaces-generator-per-layer-ssim/export",
        f"{GEN} --out runs/synthfaces-generator-per-layer-mouth --init-from runs/synthfaces-generator-per-layer-ssim/export {MAPPING} --mapping-per-layer --part-weights eyes=24,mouth=192 --ssim-weight 4 --batch 32 --lr 5e-4 --steps 4000 --minutes 20 --threads 1 --export runs/synthfaces-generator-per-layer-mouth/export"]),
    ("generator, the mapping and the three top synthesis blocks (16, 32, 64 px)", [
        f"{GEN} --out runs/synthfaces-generator-top-blocks --init-from runs/synthfaces-generator-per-layer-mouth/export --train mapping+b16+b32+b64 --mapping-width 512 --mapping-per-layer --part-weights eyes=24,mouth=192 --ssim-weight 4 --batch 32 --lr 5e-4 --steps 7000 --minutes 48 --threads 1 --export runs/synthfaces-generator-top-blocks/export"]),
    ("encoders on it (TAG=s15 SEED=13 bash hub/cascade.sh, then one more two-stage run on two threads); "
     "PREV: the encoders at commit df84140", [
        f"{ENC} --threads 1 --mode stage-one --out runs/s15-enc-stage-one --init-from $PREV/encoder --steps 1500 --minutes 12 --export runs/s15-enc-stage-one/export",
        f"{ENC} --threads 1 --photometric-augment 0.5 --seed 13 --mode two-stage --out runs/s15-enc-two-stage --stage-one runs/s15-enc-stage-one/export --init-from $PREV/encoder --steps 2400 --minutes 27 --export runs/s15-enc-two-stage/export",
        f"{ENC} --threads 1 --photometric-augment 0.5 --seed 13 --mode one-stage --out runs/s15-enc-one-stage --init-from $PREV/one-stage --steps 1500 --minutes 25 --export runs/s15-enc-one-stage/export",
        f"{ENC} --threads 2 --photometric-augment 0.5 --seed 14 --mode two-stage --out runs/s15-enc-two-stage-r19 --stage-one runs/s15-enc-stage-one/export --init-from runs/s15-enc-two-stage/export --steps 1600 --minutes 19 --export runs/s15-enc-two-stage-r19/export"]),
    ("clip/: the ResNet CLIP, then a fine-tune with an attribute probe (glasses, smile; the probe is not shipped)", [
        "python -m refinestyle.train.clip --out runs/synthfaces-clip --steps 4000 --minutes 45 --threads 1 --export runs/synthfaces-clip/export",
        "python -m refinestyle.train.clip --out runs/synthfaces-clip-smile --init-from runs/synthfaces-clip/export --attribute-weight 2 --lr 1e-3 --steps 1500 --minutes 26 --threads 1"]),
    ("clip-vit/: the ViT CLIP, by the training script as of commit f19ce06", [
        "git checkout f19ce06 && python -m refinestyle.train.clip --out runs/synthfaces-clip-vit --steps 3000 --minutes 45 --threads 1"]),
)
BUILD = ("python hub/build_synthfaces.py assemble       # generator, CLIPs, encoders: runs/ → the hub folders, fp16",
         "bash hub/make_domains.sh                       # the five domains: refinestyle adapt, seed 0, 200 steps each",
         "python bench/inversion.py                      # the inversion table (200 renders per set, seed 31337)",
         "python hub/build_synthfaces.py calibrate       # the in-domain check of encoder inversions (out.in_domain)",
         "python hub/build_synthfaces.py card --recompute  # evaluation (bench/synthfaces.py), metrics.json, the cards")


def _last_log_record(path: Path) -> dict:
    return json.loads(path.read_text().strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------------------------
# assemble: training runs → hub folders


def assemble(parts: tuple[str, ...] = PARTS, *, encoder_runs: dict[str, str] = ENCODER_RUNS) -> None:
    info = json.loads((HUB / "build_info.json").read_text()) if (HUB / "build_info.json").exists() else {}
    if "generator" in parts:
        info["generator"] = assemble_generator(info.get("generator", {}))
    if "clip" in parts:
        info.update(assemble_clips())
    if "encoders" in parts:
        info["encoders"] = assemble_encoders(encoder_runs)
    (HUB / "build_info.json").write_text(json.dumps(info, indent=2) + "\n")
    write_index()
    print(json.dumps(info, indent=2))


def assemble_generator(previous: dict) -> dict:
    base_ckpt = RUNS / GENERATOR_BASE_RUN / "checkpoint.pt"
    if base_ckpt.exists():
        ckpt = torch.load(base_ckpt, weights_only=True)
        base = {"steps": int(ckpt["step"]), "minutes": float(ckpt["elapsed"]) / 60}
    elif "base" in previous:
        base = previous["base"]
    else:
        raise FileNotFoundError(f"{base_ckpt} is missing and build_info.json has no record of it: train it first (RECIPE)")
    known = {t["run"]: t for t in previous.get("fine_tunes", [])}
    fine_tunes = []
    for run in GENERATOR_FINE_TUNES:
        log = RUNS / run / "log.jsonl"
        if log.exists():
            last = _last_log_record(log)
            fine_tunes.append({"run": run, "steps": int(last["step"]), "minutes": float(last["minutes"])})
        elif run in known:
            fine_tunes.append(known[run])
        else:
            raise FileNotFoundError(f"{log} is missing and build_info.json has no record of {run}: train it first (RECIPE)")
    export = RUNS / GENERATOR_FINE_TUNES[-1] / "export"
    G = StyleGAN2Generator.from_pretrained(export).eval()
    G.save_pretrained(HUB / "generator", dtype=torch.float16)  # exported in fp16 by the training script
    return {"base": base, "fine_tunes": fine_tunes, "dtype": "torch.float16"}


def assemble_clips() -> dict:
    info = {}
    for folder, (run, arch) in CLIP_RUNS.items():
        clip_ckpt = RUNS / run / "checkpoint.pt"
        if clip_ckpt.exists():
            vocab = json.loads((RUNS / run / "vocab.json").read_text())
            clip = CLIPGuide.create_synthfaces(vocabulary=vocab, arch=arch)
            state = torch.load(clip_ckpt, weights_only=True)
            clip.model.load_state_dict(state["model"])
            clip.save_pretrained(HUB / folder, dtype=torch.float16)
            info[folder] = {"steps": int(state["step"]), "minutes": float(state["elapsed"]) / 60}
    return info


def assemble_encoders(runs: dict[str, str]) -> dict:
    encoders = {}
    for variant, folder in ENCODER_FOLDERS.items():
        src = RUNS / runs[variant] / "export"
        if (src / "config.json").exists():
            enc = RefineStyleEncoder.from_pretrained(src)
            if enc.config.synthesis_digest is None:  # trained before encoders recorded it: stamp the shipped synthesis
                generator = StyleGAN2Generator.from_pretrained(HUB / "generator")
                enc.check_generator(generator)  # by w_avg: this is the generator it was trained for
                enc.register_to_config(synthesis_digest=generator.synthesis_digest())
            enc.save_pretrained(folder, dtype=torch.float16)
        if (folder / "config.json").exists():
            encoders[variant] = folder.relative_to(ROOT / "hub").as_posix()
    return encoders


def write_index() -> None:
    """model_index.json for the components on disk, written by the library's one writer of it."""
    model = RefineStyleModel(generator=StyleGAN2Generator.from_pretrained(HUB / "generator"),
                             clip=CLIPGuide.from_pretrained(HUB / "clip") if (HUB / "clip" / "open_clip_config.json").exists() else None)
    for folder in CLIP_RUNS:
        if folder != "clip" and (HUB / folder / "open_clip_config.json").exists():
            extra = CLIPGuide.from_pretrained(HUB / folder)
            extra.hub_folder = folder
            model.extra_clips.append(extra)
    if (HUB / "encoder" / "config.json").exists():
        model.encoder = RefineStyleEncoder.from_pretrained(HUB / "encoder")
    for config in sorted((HUB / "domains").glob("*/config.json")):
        model.load_domain(config.parent, name=config.parent.name)
    model.domain_check = stored_domain_check()
    model.write_model_index(HUB)


# ------------------------------------------------------------------------------------------------------------------
# calibrate: the in/out-of-domain check of encoder inversions (out.in_domain), from fixed seeds

# Seeds of the renders: far from every training batch (an encoder step draws from seed * 1_000_003 + step, the
# encoders' validation from 10**9 + seed) and from the benchmarks' 31337; tests/test_domain_check.py uses others.
DOMAIN_CHECK_SEEDS = {"photo": 5_000_000_000, "styles": 5_000_000_010, "ood_attributes": 5_000_000_020}
DOMAIN_CHECK_SCORE = "refined_psnr"  # the candidate that flags more out-of-domain images out (see `calibrate`)
DOMAIN_CHECK_QUANTILE, DOMAIN_CHECK_CONFIDENCE = 0.05, 0.9
DOMAIN_CHECK_N = {"calibration": 256, "held_out": 256, "per_ood_set": 256}


def real_photos() -> dict[str, "PIL.Image.Image"]:  # noqa: F821
    """Photos shipped inside installed packages (scikit-image, matplotlib): two portraits, a photo of a man whose
    face dlib does not find (the cameraman), a cat and a cup of coffee."""
    import os

    import matplotlib
    import skimage.data
    from PIL import Image

    return {"astronaut (scikit-image)": Image.fromarray(skimage.data.astronaut()),
            "Grace Hopper (matplotlib)": Image.open(os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")).convert("RGB"),
            "cameraman (scikit-image)": Image.fromarray(skimage.data.camera()).convert("RGB"),
            "cat (scikit-image chelsea)": Image.fromarray(skimage.data.chelsea()),
            "coffee (scikit-image)": Image.fromarray(skimage.data.coffee())}


def domain_check_sets(resolution: int) -> dict[str, object]:
    """The image sets of the calibration report: held-out photo renders (in domain), every other renderer style,
    photo renders with attributes the generator never drew, and real photos (centre-cropped)."""
    from refinestyle.data.synthfaces import STYLES, render, sample_params

    n = DOMAIN_CHECK_N["per_ood_set"]
    sets: dict[str, object] = {}
    for i, style in enumerate(s for s in STYLES if s != "photo"):
        sets[style] = render(sample_params(n, seed=DOMAIN_CHECK_SEEDS["styles"] + i), style=style, resolution=resolution)
    sets["photo, OOD attributes"] = render(sample_params(n, seed=DOMAIN_CHECK_SEEDS["ood_attributes"], out_of_domain=True),
                                           style="photo", resolution=resolution)
    sets["real photos"] = list(real_photos().values())
    return sets


def calibrate() -> None:
    """Calibrate ``model.domain_check`` on held-out photo renders and measure it; the result goes to metrics.json
    (``domain_check``: the check, and per candidate score its threshold and the share of each set flagged in or
    out), from where ``write_index`` puts the check into model_index.json.

    Photo renders from one seed: the first half calibrates (``calibrate_domain_check``: the 5 % quantile of the
    score, read conservatively), the second half measures the share flagged in; each out-of-domain set measures
    the share flagged out. Both candidate scores are measured on the same inversions; the shipped one is
    ``DOMAIN_CHECK_SCORE``."""
    from refinestyle.data.synthfaces import render, sample_params
    from refinestyle.evaluation import calibrate_domain_check, domain_threshold, inversion_scores
    from refinestyle.inversion import DOMAIN_SCORES

    model = RefineStyleModel.from_pretrained(HUB)
    res = model.generator.config.resolution
    n_cal, n_held = DOMAIN_CHECK_N["calibration"], DOMAIN_CHECK_N["held_out"]
    photos = render(sample_params(n_cal + n_held, seed=DOMAIN_CHECK_SEEDS["photo"]), style="photo", resolution=res)
    calibration, held_out = photos[:n_cal], photos[n_cal:]
    check = calibrate_domain_check(model, calibration, method="encoder", score=DOMAIN_CHECK_SCORE,
                                   quantile=DOMAIN_CHECK_QUANTILE, confidence=DOMAIN_CHECK_CONFIDENCE)
    cal_scores = inversion_scores(model, calibration, method="encoder")
    sets = {"photo (in domain, held out)": inversion_scores(model, held_out, method="encoder")}
    sets.update({name: inversion_scores(model, images, method="encoder") for name, images in domain_check_sets(res).items()})
    candidates = {}
    for score in DOMAIN_SCORES:
        threshold = math.floor(domain_threshold(cal_scores[score], quantile=DOMAIN_CHECK_QUANTILE,
                                                confidence=DOMAIN_CHECK_CONFIDENCE) * 1e4) / 1e4  # as calibrate_domain_check
        rates = {}
        for name, found in sets.items():
            values = found[score]
            flagged_in = (values >= threshold).float().mean().item()
            rates[name] = {"n": len(values), "median": round(values.median().item(), 2),
                           **({"flagged_in": round(flagged_in, 4)} if name.startswith("photo (in domain") else
                              {"flagged_out": round(1 - flagged_in, 4), "max": round(values.max().item(), 2)})}
        # The candidates compared at equal in-domain rates: thresholds at plain quantiles of all the photo renders.
        photo_scores = torch.cat([cal_scores[score], sets["photo (in domain, held out)"][score]])
        matched = {}
        for rate in (0.95, 0.97, 0.99):
            cut = torch.quantile(photo_scores, 1 - rate).item()
            matched[f"{rate:.2f}"] = {name: round((found[score] < cut).float().mean().item(), 4)
                                      for name, found in sets.items() if not name.startswith("photo (in domain")}
        candidates[score] = {"threshold": threshold, "calibration_median": round(cal_scores[score].median().item(), 2),
                             "sets": rates, "flagged_out_at_equal_in_domain_rate": matched}
    if abs(candidates[check.score]["threshold"] - check.threshold) > 1e-3:
        raise RuntimeError(f"the calibration did not repeat: {check.threshold} vs {candidates[check.score]['threshold']}")
    metrics = json.loads((HUB / "metrics.json").read_text())
    metrics["domain_check"] = {"check": check.to_dict(), "quantile": DOMAIN_CHECK_QUANTILE,
                               "confidence": DOMAIN_CHECK_CONFIDENCE, "seeds": DOMAIN_CHECK_SEEDS, "n": DOMAIN_CHECK_N,
                               "real_photos": list(real_photos()), "candidates": candidates}
    (HUB / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    for score, c in candidates.items():
        print(f"\n{score}: threshold {c['threshold']:.2f} dB (calibration median {c['calibration_median']:.2f})"
              + ("  ← shipped" if score == check.score else ""))
        for name, r in c["sets"].items():
            share = f"in {r['flagged_in']:.1%}" if "flagged_in" in r else f"out {r['flagged_out']:.1%}"
            print(f"  {name:28s} n {r['n']:4d}  median {r['median']:6.2f}  flagged {share}" + (f"  (highest {r['max']:.2f})" if "max" in r else ""))
        for rate, outs in c["flagged_out_at_equal_in_domain_rate"].items():
            print(f"  with {float(rate):.0%} of photo renders in: flagged out " + ", ".join(f"{n} {v:.1%}" for n, v in outs.items()))
    print(f"\nwrote the domain check to {HUB / 'metrics.json'}; `python hub/build_synthfaces.py index` puts it in model_index.json")


def stored_domain_check():
    """The check ``calibrate`` stored in metrics.json (a ``DomainCheck``), or None before the first calibration."""
    from refinestyle.inversion import DomainCheck

    path = HUB / "metrics.json"
    stored = json.loads(path.read_text()).get("domain_check") if path.exists() else None
    return DomainCheck.from_dict(stored["check"], source=f"{path} domain_check") if stored else None


# ------------------------------------------------------------------------------------------------------------------
# card: metrics → README.md of the model, of the one-stage encoder and of each domain


def card(*, recompute: bool = False) -> None:
    """Write model_index.json, metrics.json, samples.png and every card (the model's, the one-stage encoder's and
    the domains'). ``recompute`` runs the evaluation (``bench/synthfaces.py``) first; else metrics.json is read."""
    write_index()
    metrics = load_metrics(recompute=recompute)
    model = RefineStyleModel.from_pretrained(HUB)
    save_grid(model.generate(seeds=range(16), truncation_psi=0.7), HUB / "samples.png", columns=8)
    sections = [front_matter(["synthetic"]), intro_section(model), components_section(model), usage_section(),
                results_section(model, metrics), reproduce_section(metrics["build"]), limitations_section(metrics)]
    (HUB / "README.md").write_text("\n".join(sections))
    (HUB / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"wrote {HUB / 'README.md'} and metrics.json")
    if (ONE_STAGE / "encoder" / "config.json").exists():
        write_one_stage_card(metrics)
    write_domain_cards(metrics)


def load_metrics(*, recompute: bool) -> dict:
    """The evaluation (``bench/synthfaces.py --json``: run now with ``recompute``, else as metrics.json holds it),
    the build record (build_info.json) and the inversion table (bench/out/inversion.json, when a run left one)."""
    if recompute or not (HUB / "metrics.json").exists():
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "synthfaces.json"
            subprocess.run([sys.executable, str(ROOT / "bench" / "synthfaces.py"), "--model", str(HUB), "--n", "1000",
                            "--json", str(out)], check=True)
            fresh = json.loads(out.read_text())
        old = json.loads((HUB / "metrics.json").read_text()) if (HUB / "metrics.json").exists() else {}
        metrics = {**fresh, **{key: old[key] for key in ("inversion", "domain_check") if key in old}}
    else:
        metrics = json.loads((HUB / "metrics.json").read_text())
    metrics["build"] = json.loads((HUB / "build_info.json").read_text())
    inversion_json = ROOT / "bench" / "out" / "inversion.json"
    if inversion_json.exists():  # written by `python bench/inversion.py`
        metrics["inversion"] = json.loads(inversion_json.read_text())
    return metrics


def front_matter(tags: list[str]) -> str:
    return (f"---\nlibrary_name: refinestyle\nlicense: {LICENSE}\n"
            f"tags: [{', '.join(['stylegan2', 'refinestyle', *tags, 'safetensors'])}]\n---\n")


def _folder_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def intro_section(model: RefineStyleModel) -> str:
    return f"""# RefineStyle SynthFaces (64 px)

The default model of [refinestyle](../../README.md), complete and offline: a StyleGAN2 generator that reproduces the
project's procedural cartoon-face renderer (SynthFaces), an encoder that inverts images into W+ and per-image
RefineStyle tokens, two small CLIPs trained on the renderer's images and captions (text guidance for domain
adaptation), and {len(model.domains)} domains adapted from text prompts. Every file was made from fixed seeds by the
commands under [How to reproduce](#how-to-reproduce), with no downloaded weights or data. {_folder_mb(HUB):.1f} MB in all.

![16 samples, truncation 0.7](samples.png)
"""


def components_section(model: RefineStyleModel) -> str:
    G, enc, gcfg = model.generator, model.encoder, model.generator.config
    rows = [("generator/", "StyleGAN2Generator", f"{gcfg.resolution} px, channels {'/'.join(map(str, G.channels))}, "
             f"w_dim {gcfg.w_dim}; z = the {gcfg.z_dim} Gaussianised renderer parameters, with the bin of each categorical "
             f"one (`z_bins`) as extra one-hot inputs; {gcfg.mapping_layers} mapping layers of {gcfg.mapping_hidden_dim}"
             + (", a linear map of w per synthesis layer" if gcfg.mapping_per_layer else ""), _count(G), HUB / "generator")]
    if enc is not None:
        ecfg = enc.config
        rows.append(("encoder/", f"RefineStyleEncoder ({enc.kind})", f"{ecfg.backbone.upper()} backbone, W+ heads and grouped "
                     f"transformer blocks (coarse/medium/fine) predicting K = {ecfg.num_tokens} tokens per layer for "
                     f"{len(ecfg.layer_shapes)} layers; the default of `model.invert`", _count(enc), HUB / "encoder"))
    for clip, folder in zip(model.clips, ["clip/", *json.loads((HUB / "model_index.json").read_text()).get("extra_clips", [])]):
        vocab = json.loads((HUB / folder.strip("/") / "vocab.json").read_text())["words"]
        arch = "ViT" if "ViT" in clip.name else "ModifiedResNet"
        role = "`model.clip`" if folder == "clip/" else "`model.extra_clips`"
        rows.append((folder.rstrip("/") + "/", "CLIPGuide (open_clip)", f"`{clip.name}`: {arch} image tower at 64 px, "
                     f"a text transformer over a {len(vocab)}-word caption vocabulary; {role}", _count(clip.model),
                     HUB / folder.strip("/")))
    for name, dom in sorted(model.domains.items()):
        rows.append((f"domains/{name}/", "DomainTokens", f"\"{dom.config.target}\", from \"{dom.config.source}\"",
                     dom.num_parameters(), HUB / "domains" / name / "diffusion_pytorch_model.safetensors"))
    table = "\n".join(f"| `{folder}` | {cls} | {what} | {params:,} | {_size(path)} |" for folder, cls, what, params, path in rows)
    return f"""## Components

Weights in float16 (safetensors); `model_index.json` lists what `RefineStyleModel.from_pretrained` loads.

| folder | class | what | parameters | size |
|---|---|---|---|---|
{table}

The one-stage encoder, kept for comparison with the two-stage one here, is a repo of its own:
[`refinestyle-synthfaces-one-stage`](../refinestyle-synthfaces-one-stage/README.md).
"""


def _size(path: Path) -> str:
    size = _folder_mb(path) if path.is_dir() else path.stat().st_size / 2**20
    return f"{size:.1f} MB" if size >= 0.1 else f"{size * 1024:.0f} KB"


def usage_section() -> str:
    return """## Usage

```python
from refinestyle import RefineStyleModel
from refinestyle.data.synthfaces import render, sample_params

model = RefineStyleModel.from_pretrained("hub/refinestyle-synthfaces")
faces = model.generate(seeds=range(8), truncation_psi=0.7)  # [8, 3, 64, 64] in [-1, 1]
sketches = model.generate(seeds=range(8), truncation_psi=0.7, domain="sketch")
softer = model.generate(seeds=range(8), truncation_psi=0.7, domain="sketch", strength="suggested")
mixed = model.generate(seeds=range(8), truncation_psi=0.7, domain={"sketch": 0.6, "watercolor": 0.4})

images = render(sample_params(4, seed=1), style="photo", resolution=64)  # renderer images in [-1, 1] (or PIL images)
out = model.invert(images)  # out.images: reconstructions; out.ws: W+; out.tokens: per-image tokens
zombies = model.generate(ws=out.ws, tokens=out.tokens, domain="zombie")

domain = model.adapt(source="a photo of a face", target="a pencil sketch of a face", steps=150)  # about a minute on a CPU
domain.save_pretrained("my-sketch")
```

From the command line: `refinestyle generate --model hub/refinestyle-synthfaces --domain zombie --seeds 0-7 --truncation 0.7 --out zombies.png`.
"""


def results_section(model: RefineStyleModel, metrics: dict) -> str:
    parts = ["## Results\n", generator_results(metrics), clip_results(metrics)]
    if "inversion" in metrics:
        parts.append(inversion_results(metrics["inversion"]))
    if metrics.get("domain_check"):
        parts.append(domain_check_results(metrics["domain_check"]))
    if metrics.get("domains"):
        parts.append(domain_results(model, metrics))
    return "\n".join(parts)


def domain_check_results(report: dict) -> str:
    """The shipped in/out-of-domain check: its threshold and how each held-out set fares."""
    check = report["check"]
    sets = report["candidates"][check["score"]]["sets"]
    rows = "".join(f"| {name} | {row['n']} | {row['median']:.2f} | "
                   + (f"{row['flagged_in']:.1%} in" if "flagged_in" in row else f"{row['flagged_out']:.1%} out") + " |\n"
                   for name, row in sets.items())
    return f"""### Domain check

`model.invert(...)` says per image whether this model can draw it (`out.in_domain`): `{check['score']}`, the PSNR
of the refined reconstruction by the {check['method']}, of at least **{check['threshold']:.2f} dB** (a
{int(report['confidence'] * 100)}%-confidence lower bound of the {report['quantile']:.0%} quantile over
{report['n']['calibration']} held-out photo renders; `python hub/build_synthfaces.py calibrate`). Other held-out sets:

| set | images | median (dB) | flagged |
|---|---|---|---|
{rows}"""


GENERATOR_ROWS = (("PSNR", "psnr", ".2f", " dB", 28), ("SSIM", "ssim", ".3f", "", 0.93),
                  ("PSNR inside the eye masks", "psnr_eyes", ".2f", " dB", 25),
                  ("PSNR inside the mouth masks", "psnr_mouth", ".2f", " dB", 25),
                  ("glasses agree", "agree_glasses", ".3f", "", 0.95), ("smile agrees", "agree_smile", ".3f", "", 0.95),
                  ("eye colour agrees", "agree_eye_color", ".3f", "", 0.95), ("all three agree", "agree_all", ".3f", "", None),
                  ("the classifier on the renders themselves (its ceiling)", "classifier_on_renders", ".3f", "", None))


def generator_results(metrics: dict) -> str:
    from refinestyle.data.synthfaces import EYE_COLORS

    g = metrics["generator"]
    rows = "\n".join(f"| {label} | {g[key]:{fmt}}{unit} | {'≥ ' + format(goal, 'g') if goal else ''} |"
                     for label, key, fmt, unit, goal in GENERATOR_ROWS)
    text = f"""### Generator

`G(z)` against the renderer's `render(z_to_params(z), "photo")` on {g['n']:,} held-out z (seed 12345;
`bench/synthfaces.py`); attributes read by a small classifier trained on renders (`bench/assets`).

| metric | value | goal |
|---|---|---|
{rows}
"""
    if g.get("eye_color_confusion"):
        per_colour = ", ".join(f"{name} {row[i] / max(1, sum(row)):.3f}"
                               for i, (name, row) in enumerate(zip(EYE_COLORS, g["eye_color_confusion"])))
        text += f"\nEye colour read correctly, by true colour: {per_colour}.\n"
    if metrics.get("validity"):
        text += ("Classifier confidence on samples (validity): "
                 + ", ".join(f"{k} {v:.3f}" for k, v in metrics["validity"].items()) + ".\n")
    if metrics.get("speed"):
        s = metrics["speed"]
        text += (f"Speed at 64 px, batch 64, on a CPU: the generator {s['generator_img_s']:.0f} images/s, the renderer "
                 f"{s['renderer_img_s']:.0f}.\n")
    return text


def clip_results(metrics: dict) -> str:
    clips = {"`clip/` (RefineStyle-SynthFaces-CLIP)": metrics.get("clip")}
    clips.update({f"`clip-vit/` ({name})" if "ViT" in name else name: c for name, c in metrics.get("extra_clips", {}).items()})
    rows = "\n".join(f"| {name} | {c['style']:.3f} | {c['glasses']:.3f} | {c['smile']:.3f} |" for name, c in clips.items() if c)
    n = next(c["n"] for c in clips.values() if c)
    return f"""### CLIPs

Zero-shot accuracy on {n} held-out renders per style: the style among the 6 (`style_prompt`), and yes/no prompts for
glasses and for a smile.

| CLIP | style | glasses | smile |
|---|---|---|---|
{rows}
| goal | ≥ 0.95 | ≥ 0.90 | ≥ 0.90 |
"""


INVERSION_COLUMNS = (("RefineStyle two-stage", "two-stage encoder (default)"), ("W+ encoder (stage one)", "its W+ part alone"),
                     ("RefineStyle one-stage", "one-stage encoder"), ("W+ optimisation, 500 steps", "W+ optimisation, 500 steps"),
                     ("W+ (200) then tokens (100) optimisation", "W+ (200) then tokens (100), optimised"))


def inversion_results(inv: dict, columns=INVERSION_COLUMNS) -> str:
    first = next(iter(inv.values()))
    cols = [(key, label) for key, label in columns if key in first]
    rows = "\n".join(f"| {set_name} | " + " | ".join(f"{r[key]['psnr']:.2f}" for key, _ in cols) + " |"
                     for set_name, r in inv.items())
    n_enc = max(first[key]["n"] for key, _ in cols)
    n_opt = [first[key]["n"] for key, _ in cols if "optimisation" in key]
    return f"""### Inversion

Median PSNR (dB) of the reconstruction, on held-out renders (seed 31337; `bench/inversion.py`): in domain (photo), in
every other style of the renderer, and photos with attributes the generator never drew (hats, face paint, exotic
colours). Encoders: {n_enc} images per set{f"; optimisation: the first {min(n_opt)}" if n_opt else ""}.

| image set | {' | '.join(label for _, label in cols)} |
|---|{'---|' * len(cols)}
{rows}
| ms per image (photo, CPU) | {' | '.join(f"{first[key]['ms']:.0f}" for key, _ in cols)} |
"""


def domain_results(model: RefineStyleModel, metrics: dict) -> str:
    rows = []
    looks = look_check_rates(model)
    for name, dom in sorted(model.domains.items()):
        clip = json.loads((HUB / "domains" / name / "metrics.json").read_text())
        gt = metrics["domains"].get(name)
        look = looks.get(name, {})
        look_cell = (f"{look['unadapted']:.0%} → {look['adapted']:.0%} / {look.get('suggested', look['adapted']):.0%}"
                     if look else "-")
        cells = ["-"] * 3
        if gt:
            at = gt.get("suggested") or gt["adapted"]
            cells = [f"{gt['unadapted']['psnr']:.2f} → {gt['adapted']['psnr']:.2f} / {at['psnr']:.2f}",
                     f"{gt['adapted']['style_acc']:.2f} / {at['style_acc']:.2f}", f"{gt['adapted']['content']:.2f} / {at['content']:.2f}"]
        rows.append(f"| [{name}](domains/{name}/README.md) | {dom.config.target} | {dom.config.suggested_strength or '-'} | "
                    f"{clip['clip_target_similarity_before']:.3f} → {clip['clip_target_similarity_after']:.3f} | {look_cell} | "
                    + " | ".join(cells) + " |")
    return """### Domains

Each adapted from "a photo of a face" to its prompt alone (no images), 200 steps, K = 1 token per convolution and 3 per
toRGB layer. CLIP similarity to the prompt: 16 faces, before → after. Against ground truth: `render(z_to_params(z),
style)` for 64 held-out z, no domain → strength 1 / the suggested strength (`strength="suggested"`, where the CLIPs see
the style reached); style accuracy and content (glasses, smile and eye colour kept) read by the classifier trained on
renders. Look check: the share of 64 faces with the style's defining look (`refinestyle.look_checks`, which the
renderer's own images of each style pass 100%), the same three settings. The classifier and the CLIPs share
shortcuts (background, tint) the look checks do not: only zombie looks like its name (see Limitations).

| domain | prompt | suggested strength | CLIP similarity | look check | ground-truth PSNR (dB) | style accuracy | content kept |
|---|---|---|---|---|---|---|---|
""" + "\n".join(rows) + "\n"


def _hardware(run: str) -> str:
    """Where a run trained, from its commands in RECIPE: one GPU, or CPU threads."""
    commands = [c for _, cmds in RECIPE for c in cmds if f"--out runs/{run} " in c]
    if any("--device cuda" in c for c in commands):
        return "one GPU"
    threads = sorted({int(m) for c in commands for m in re.findall(r"--threads (\d+)", c)})
    return f"CPU, {'-'.join(map(str, threads)) or '?'} thread{'s' if threads[-1:] != [1] else ''}"


def reproduce_section(info: dict) -> str:
    gen = info["generator"]
    runs = [(GENERATOR_BASE_RUN, gen["base"])] + [(t["run"], t) for t in gen["fine_tunes"]]
    runs += [(CLIP_RUNS[folder][0], info[folder]) for folder in CLIP_RUNS if folder in info]
    table = "\n".join(f"| `{run}` | {r['steps']:,} | {r['minutes']:.0f} | {_hardware(run)} |" for run, r in runs)
    encoder_runs = [c for _, cmds in RECIPE for c in cmds if c.startswith(ENC)]
    cap = sum(float(m) for c in encoder_runs for m in re.findall(r"--minutes ([0-9.]+)", c))
    recipe = f'GEN="{GEN}"\nENC="{ENC}"\n\n' + "\n\n".join(
        f"# {what}\n" + "\n".join(c.replace(ENC, "$ENC").replace(GEN, "$GEN") for c in cmds) for what, cmds in RECIPE)
    return f"""## How to reproduce

From a clone of the repository with the package installed (`pip install -e .`), in its root: the training runs
(every command, in order, at the end of this section; they write `runs/`), then

```bash
{chr(10).join(BUILD)}
```

After a change of the generator, `TAG=<run prefix> SEED=<next seed> bash hub/cascade.sh` remakes what depends on it:
one more encoder run of each kind from the shipped ones, the domains, the inversion table and the cards.

Training time of the runs behind the shipped generator and CLIPs, as recorded at their end (`build_info.json`):

| run | steps | minutes | hardware |
|---|---|---|---|
{table}

The encoders: {len(encoder_runs)} runs on one or two CPU threads, {cap / 60:.0f} hours at most in all (each stops at its
`--steps` or its `--minutes`). An encoder run's batches depend only on its `--seed` and the step, so a run continued
with `--resume` after an interruption gives the result of an uninterrupted one.

<details><summary>Every training command, in order</summary>

`<folder at commit C>`: that folder of this repo at git commit C (the fp16 files shipped then); `$PREV`: a copy of the
encoders shipped at the named commit, the two-stage one as `$PREV/encoder`, the one-stage one as `$PREV/one-stage`.

```bash
{recipe}
```

</details>
"""


def limitations_section(metrics: dict) -> str:
    g = metrics["generator"]
    close = [f"{label} {g[key]:{fmt}}{unit} (goal {goal:g})" for label, key, fmt, unit, goal in GENERATOR_ROWS
             if goal and g[key] < goal * 1.015]
    weak_clips = [f"{name} tells a smile from a neutral mouth in only {c['smile']:.0%} of cases"
                  for name, c in metrics.get("extra_clips", {}).items() if c["smile"] < 0.9]
    items = ["A small world: 64 px cartoon faces drawn by the project's renderer from 24 parameters, not photographs. "
             "Nothing here transfers to real faces; for those, convert an FFHQ StyleGAN2 checkpoint "
             "(`refinestyle convert`) and invert or adapt with it.",
             "The generator is measured against the renderer itself, and its attributes by a classifier trained on renders "
             f"that reads the renders themselves right {g['classifier_on_renders']:.1%} of the time."
             + (f" Close to their goals: {'; '.join(close)}." if close else ""),
             "The CLIPs know only the caption vocabulary (`clip/vocab.json`); other words become one unknown token, so "
             "prompts beyond styles, hair, eyes, glasses and smiles guide nothing."
             + (f" {'; '.join(weak_clips)}." if weak_clips else "")]
    doms = metrics.get("domains", {})
    if doms:
        misses = [name for name, d in doms.items() if d["adapted"]["psnr"] < d["unadapted"]["psnr"]]
        items.append("The domains are judged by the same two SynthFaces CLIPs that guided them, and by the renderer's "
                     "ground truth; a style the small CLIPs accept can still differ from the renderer's"
                     + (f": {', '.join(misses)} moves away from the renderer's own images in PSNR while the classifier "
                        "reads the style." if misses else "."))
        items.append("Hatching (sketch), halftone dots (pop-art) and pixel blocks (pixel-art) are beyond these tokens on this "
                     "generator: fitted to the renderer's exact images (no CLIP), K = 8 tokens on every layer draw paler, "
                     "greyer faces, outlines and flat colours but none of those textures, so no guide can ask for them "
                     "(`bench/look_capacity.py`). Watercolor's paper grain can be drawn by fitted tokens, but the 64 px "
                     "guides do not ask for it; guides retrained against background and colour shortcuts, "
                     "or without blur and noise augmentation, do not change that (`bench/guides.py`; the tables and grids are "
                     "in the refinestyle repository's `docs/benchmarks.md`).")
    inv = metrics.get("inversion", {})
    if inv:
        two = {s: r["RefineStyle two-stage"]["psnr"] for s, r in inv.items() if "RefineStyle two-stage" in r}
        ood = {s: v for s, v in two.items() if not s.startswith("photo (in domain)")}
        photo = inv.get("photo (in domain)", {})
        if two and ood and "W+ (200) then tokens (100) optimisation" in photo:
            slower = photo["W+ (200) then tokens (100) optimisation"]["ms"] / photo["RefineStyle two-stage"]["ms"]
            items.append(f"The encoders saw only photo-style renders and generator samples: {two['photo (in domain)']:.1f} dB "
                         f"in domain, {min(ood.values()):.1f}-{max(ood.values()):.1f} dB on the other styles and attributes. "
                         "Optimisation (`model.invert(images, method=\"optimize\")`) reconstructs those better, about "
                         f"{slower:.0f} times slower.")
    items.append("Weights are stored in float16 (the numbers above are those of the files as stored).")
    return "## Limitations\n\n" + "".join(f"- {item}\n" for item in items) + \
        "\nLicence: Apache-2.0. The training data is synthetic, made by the project's own renderer.\n"


def write_one_stage_card(metrics: dict) -> None:
    enc = RefineStyleEncoder.from_pretrained(ONE_STAGE, subfolder="encoder")
    inv = metrics.get("inversion", {})
    columns = (("RefineStyle one-stage", "one-stage (this repo)"), ("RefineStyle one-stage, W+ only", "its W+ alone"),
               ("RefineStyle two-stage", "two-stage (the default)"))
    commands = "\n".join(c for _, cmds in RECIPE for c in cmds if "--mode one-stage" in c)
    worse = [s for s, r in inv.items() if r["RefineStyle one-stage"]["psnr"] < r["RefineStyle two-stage"]["psnr"]]
    text = front_matter(["synthetic", "encoder"]) + f"""
# RefineStyle SynthFaces one-stage encoder

The one-stage RefineStyle encoder for the generator of [`refinestyle-synthfaces`](../refinestyle-synthfaces/README.md),
kept for comparison with the two-stage encoder that model ships as its default. One-stage: the W+ heads and the token
branch (grouped transformer blocks predicting K = {enc.config.num_tokens} tokens per layer for
{len(enc.config.layer_shapes)} layers) trained together from one backbone on the image; the two-stage encoder trains a
W+ encoder first, then, with it frozen, a token branch that also sees the W+ reconstruction.
`encoder/`: `RefineStyleEncoder`, {_count(enc):,} parameters, {_size(ONE_STAGE / 'encoder')} (float16).

## Usage

```python
from refinestyle import RefineStyleModel
from refinestyle.models.encoder import RefineStyleEncoder

model = RefineStyleModel.from_pretrained("hub/refinestyle-synthfaces")
encoder = RefineStyleEncoder.from_pretrained("hub/refinestyle-synthfaces-one-stage", subfolder="encoder")
encoder.check_generator(model.generator)  # raises unless it is the generator this encoder was trained for
model.encoder = encoder.requires_grad_(False)  # model.invert now uses it
```

""" + (inversion_results(inv, columns) if inv else "") + f"""
## How to reproduce

Its chain of runs, each from the previous one's export (the full order, with the generator each trained against:
[the model's card](../refinestyle-synthfaces/README.md#how-to-reproduce)); `python hub/build_synthfaces.py assemble
--parts encoders` then writes it here.

```bash
{commands}
```

## Limitations

- Made for one generator: `check_generator` (and `RefineStyleModel.from_pretrained` for an `encoder/` it lists) refuses
  another synthesis.
- Below the two-stage encoder on {len(worse)} of the {len(inv)} image sets above; use it to compare, not by default.
- Trained on photo-style renders and generator samples only, at 64 px; the other styles are out of its domain.
"""
    (ONE_STAGE / "README.md").write_text(text)
    print(f"wrote {ONE_STAGE / 'README.md'}")


DOMAINS_NOTE = "All five shipped domains: `bash hub/make_domains.sh` (this command for each, seed 0, `STEPS=200`)."


@torch.no_grad()
def look_check_rates(model: RefineStyleModel, *, faces: int = 64, z_seed: int = 4242) -> dict[str, dict[str, float]]:
    """Per shipped domain, the share of generated faces passing its style's look check (``refinestyle.look_checks``,
    evaluation only), with no domain, at strength 1 and at the suggested strength: what a person would see."""
    from refinestyle import look_checks

    z = torch.randn(faces, model.generator.config.z_dim, generator=torch.Generator().manual_seed(z_seed))
    rates = {}
    for name, dom in model.domains.items():
        if name not in look_checks.LOOKS:
            continue
        settings = {"unadapted": None, "adapted": 1.0, "suggested": "suggested" if dom.config.suggested_strength else None}
        rates[name] = {key: float(look_checks.check(name, model.generate(z=z, truncation_psi=0.7, domain=name if s else None,
                                                                           strength=s if s else 1.0).clamp(-1, 1))[0].float().mean())
                       for key, s in settings.items() if key == "unadapted" or s is not None}
    return rates


def write_domain_cards(metrics: dict | None = None) -> None:
    """Each shipped domain's README.md from its own files (config.json, metrics.json with the `adaptation` record,
    the weights' size) and the model's ground-truth numbers, with today's look checks: nothing is adapted again."""
    metrics = metrics if metrics is not None else json.loads((HUB / "metrics.json").read_text())
    looks = look_check_rates(RefineStyleModel.from_pretrained(HUB))
    for folder in sorted(p.parent for p in (HUB / "domains").glob("*/config.json")):
        recorded = json.loads((folder / "metrics.json").read_text())
        ground_truth = copy.deepcopy(metrics.get("domains", {}).get(folder.name))
        for key, rate in looks.get(folder.name, {}).items():
            if ground_truth and ground_truth.get(key):
                ground_truth[key]["look_check"] = rate
        write_domain_card(folder, DomainTokens.from_pretrained(folder), adaptation=recorded["adaptation"], metrics=recorded,
                          ground_truth=ground_truth,
                          folder=folder.relative_to(ROOT).as_posix(), license=LICENSE, note=DOMAINS_NOTE)
        print(f"wrote {folder / 'README.md'}")


def refresh_domains() -> None:
    """After a generator change that keeps the synthesis (a new mapping), re-measure each shipped domain: its CLIP
    numbers (``metrics.json``), its preview, its suggested strength, then its card. The tokens, and so the weights,
    stay as made; the suggestion changes only if the CLIPs now give another one (it is printed)."""
    model = RefineStyleModel.from_pretrained(HUB)
    for name, dom in sorted(model.domains.items()):
        folder = HUB / "domains" / name
        old = json.loads((folder / "metrics.json").read_text())
        found = model.suggest_strength(dom, source=dom.config.source, target=dom.config.target)
        if found.strength != dom.config.suggested_strength:
            print(f"{name}: suggested strength {dom.config.suggested_strength} → {found.strength}")
            dom.register_to_config(suggested_strength=found.strength)
            config = json.loads((folder / "config.json").read_text())
            config["suggested_strength"] = found.strength
            (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        metrics = {**domain_metrics(model, dom, target=old["target"]), "adaptation": old["adaptation"]}
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        save_domain_preview(model, dom, folder / "preview.png", seed=0)  # as `refinestyle adapt --seed 0` made it
        print(f"{name}: CLIP similarity after {old['clip_target_similarity_after']:.4f} → {metrics['clip_target_similarity_after']:.4f}")
    write_domain_cards()  # the ground truth in metrics.json is from the last `card --recompute`: run it next


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["assemble", "refresh-domains", "card", "domain-cards", "calibrate", "index"])
    parser.add_argument("--recompute", action="store_true", help="card: re-run the evaluation even if metrics.json exists")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="assemble: only these parts")
    parser.add_argument("--encoder-runs", nargs=2, metavar=("ONE_STAGE", "TWO_STAGE"), default=None,
                        help="assemble: the run folders (under runs/) of the encoders to ship "
                             f"(default: {ENCODER_RUNS['one-stage']} {ENCODER_RUNS['two-stage']})")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.step == "card":
        card(recompute=args.recompute)
    elif args.step == "domain-cards":
        write_domain_cards()
    elif args.step == "refresh-domains":
        refresh_domains()
    elif args.step == "calibrate":
        calibrate()
    elif args.step == "assemble":
        runs = dict(zip(("one-stage", "two-stage"), args.encoder_runs)) if args.encoder_runs else ENCODER_RUNS
        if args.encoder_runs and "encoders" in args.parts:  # named runs must exist (the defaults are skipped if absent)
            for variant, run in runs.items():
                if not (RUNS / run / "export" / "config.json").exists():
                    parser.error(f"--encoder-runs: {RUNS / run / 'export'} holds no exported {variant} encoder; train it first")
        assemble(tuple(args.parts), encoder_runs=runs)
    else:
        write_index()


if __name__ == "__main__":
    main()
