"""Build the default Hub repo ``hub/refinestyle-synthfaces`` from the training runs, then write its card.

    python hub/build_synthfaces.py assemble   # generator (+ clip, encoders) from runs/ → hub folder (fp16)
    bash hub/make_domains.sh                  # domains, each from one `refinestyle adapt` command
    python hub/build_synthfaces.py refresh-domains   # instead, after a new mapping on the same synthesis
    python hub/build_synthfaces.py card       # evaluate everything, write model_index.json, metrics.json, README.md

Training runs (each resumable; see README):
    python -m refinestyle.train.generator --out runs/synthfaces-generator --steps 26000 --minutes 62 --threads 1
    python -m refinestyle.train.generator --out runs/synthfaces-generator --steps 50000 --minutes 116 --threads 1 --resume
    python -m refinestyle.train.generator --out runs/synthfaces-generator-bins --init-from <that generator> --device cuda ...
    python -m refinestyle.train.generator --out runs/synthfaces-generator-bins-r2 --init-from <that export> --device cuda ...
    python -m refinestyle.train.generator --out runs/synthfaces-generator-mapping512 --init-from <that export> --train mapping --mapping-width 512 ...
    python -m refinestyle.train.generator --out runs/synthfaces-generator-mapping512-mouth --init-from <that export> --train mapping ...
    python -m refinestyle.train.generator --out runs/synthfaces-generator-per-layer --init-from <that export> --train mapping --mapping-per-layer ...
    python -m refinestyle.train.generator --out runs/synthfaces-generator-per-layer-ssim --init-from <that export> --train mapping --mapping-per-layer ...
    python -m refinestyle.train.generator --out runs/synthfaces-generator-per-layer-mouth --init-from <that export> --train mapping --mapping-per-layer ...
    python -m refinestyle.train.clip --out runs/synthfaces-clip --steps 4000 --minutes 45 --threads 1 --export runs/synthfaces-clip/export
    python -m refinestyle.train.clip --out runs/synthfaces-clip-smile --init-from runs/synthfaces-clip/export --attribute-weight 2 ...
    python -m refinestyle.train.encoder ...   (see refinestyle/train/encoder.py)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from refinestyle import StyleGAN2Generator  # noqa: E402
from refinestyle.cli import save_grid  # noqa: E402
from refinestyle.clip import CLIPGuide  # noqa: E402

HUB = ROOT / "hub" / "refinestyle-synthfaces"
RUNS = ROOT / "runs"

# Hub folder → (run folder, architecture). The ResNet is model.clip; the others become model.extra_clips.
CLIP_RUNS = {"clip": ("synthfaces-clip-smile", "resnet"), "clip-vit": ("synthfaces-clip-vit", "vit")}


# The latest training round of each shipped encoder variant (the card lists every round's command).
ENCODER_RUNS = {"one-stage": "s15-enc-one-stage", "two-stage": "s15-enc-two-stage-r19"}
# The shipped generator: the CPU run's EMA generator, then GPU fine-tunes with z-bin inputs, each from the previous
# one's export (the GPU machine is lent per session, so only the fp16 export and the log came back, not the
# checkpoint), then CPU fine-tunes of a widened mapping (with per-layer outputs from the fifth), the last one with the
# three top synthesis blocks. The last one's export ships; a run folder missing here keeps its record in build_info.json.
GENERATOR_BASE_RUN = "synthfaces-generator"
GENERATOR_FINE_TUNES = ("synthfaces-generator-bins", "synthfaces-generator-bins-r2", "synthfaces-generator-mapping512",
                        "synthfaces-generator-mapping512-mouth", "synthfaces-generator-per-layer",
                        "synthfaces-generator-per-layer-ssim", "synthfaces-generator-per-layer-mouth",
                        "synthfaces-generator-top-blocks")
PARTS = ("generator", "clip", "encoders")


def _last_log_record(path: Path) -> dict:
    return json.loads(path.read_text().strip().splitlines()[-1])


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
        raise FileNotFoundError(f"{base_ckpt} is missing and build_info.json has no record of it: train it first (see the card)")
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
            raise FileNotFoundError(f"{log} is missing and build_info.json has no record of {run}: train it first (see the card)")
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
    for variant in ("one-stage", "two-stage"):
        src = RUNS / runs[variant] / "export"
        if (src / "config.json").exists():
            from refinestyle.models.encoder import RefineStyleEncoder

            enc = RefineStyleEncoder.from_pretrained(src)
            if enc.config.synthesis_digest is None:  # trained before encoders recorded it: stamp the shipped synthesis
                generator = StyleGAN2Generator.from_pretrained(HUB / "generator")
                enc.check_generator(generator)  # by w_avg: this is the generator it was trained for
                enc.register_to_config(synthesis_digest=generator.synthesis_digest())
            # The two-stage encoder is the better one on every image set: it is the default (model.invert).
            folder = "encoder" if variant == "two-stage" else "encoder-one-stage"
            enc.save_pretrained(HUB / folder, dtype=torch.float16)
            encoders[variant] = folder
    return encoders


def write_index() -> None:
    domains = sorted(p.parent.name for p in (HUB / "domains").glob("*/config.json"))
    index = {"_class_name": "RefineStyleModel", "_refinestyle_format": 1, "generator": ["refinestyle", "StyleGAN2Generator"],
             "domains": domains}
    if (HUB / "clip" / "open_clip_config.json").exists():
        index["clip"] = ["refinestyle", "CLIPGuide"]
    extra = [folder for folder in CLIP_RUNS if folder != "clip" and (HUB / folder / "open_clip_config.json").exists()]
    if extra:
        index["extra_clips"] = extra
    if (HUB / "encoder" / "config.json").exists():
        index["encoder"] = ["refinestyle", "RefineStyleEncoder"]
    (HUB / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")


def card(*, recompute: bool = False) -> None:
    write_index()
    sys.path.insert(0, str(ROOT / "bench"))
    import synthfaces as bench_synthfaces

    info = json.loads((HUB / "build_info.json").read_text())
    if recompute or not (HUB / "metrics.json").exists():
        metrics = bench_synthfaces.run(n=1000, quiet=False)
    else:  # written by `python bench/synthfaces.py --json hub/refinestyle-synthfaces/metrics.json`
        metrics = json.loads((HUB / "metrics.json").read_text())
    metrics["build"] = info
    from refinestyle import RefineStyleModel

    model = RefineStyleModel.from_pretrained(HUB)
    save_grid(model.generate(seeds=range(16), truncation_psi=0.7), HUB / "samples.png", columns=8)
    domain_rows = []
    for name, dom in sorted(model.domains.items()):
        kb = (HUB / "domains" / name / "diffusion_pytorch_model.safetensors").stat().st_size / 1024
        m = json.loads((HUB / "domains" / name / "metrics.json").read_text())
        gt = metrics.get("domains", {}).get(name)
        gt_cells = (f"{gt['unadapted']['psnr']:.2f} → {gt['adapted']['psnr']:.2f} | {gt['unadapted']['style_acc']:.2f} → "
                    f"{gt['adapted']['style_acc']:.2f} | {gt['adapted']['content']:.2f}") if gt else "- | - | -"
        at = (gt or {}).get("suggested")
        gt_cells += (f" | {at['strength']:g} | {at['psnr']:.2f} / {at['style_acc']:.2f}" if at else
                     f" | {dom.config.suggested_strength or '-'} | -")
        domain_rows.append(f"| {name} | {dom.config.source} → {dom.config.target} | {dom.num_parameters():,} | {kb:.0f} KB | "
                           f"{m['clip_target_similarity_before']:.3f} → {m['clip_target_similarity_after']:.3f} | {gt_cells} |")
    g, c = metrics["generator"], metrics.get("clip", {})
    gen = info["generator"]
    ft = gen["fine_tunes"]
    size_mb = sum(f.stat().st_size for f in HUB.rglob("*") if f.is_file()) / 2**20
    text = f"""---
library_name: refinestyle
license: apache-2.0
tags: [stylegan2, refinestyle, synthetic, safetensors]
---

# RefineStyle SynthFaces (64 px)

The default model of [refinestyle](../../README.md): a StyleGAN2 generator trained to reproduce the
procedural SynthFaces renderer, a small open_clip model trained on its images and captions, and shared
token sets (domains) adapted from text. Everything here was made by scripts in the repository from fixed
seeds, offline, on a 2-core CPU, except two fine-tunes of the generator (18 minutes on one GPU, below); the folder is
{size_mb:.1f} MB.

![samples (truncation 0.7)](samples.png)

## Generator

`generator/`: `StyleGAN2Generator`, 64 px, channels 64/64/64/32/16, w_dim 128, 4 mapping layers of 512 hidden units
with lr multiplier 1 and a linear map of w per synthesis layer (`mapping_per_layer`), z = the Gaussianised renderer
parameters (24 attributes; not normalised). The renderer draws eye
colour, hair style, hair colour and the glasses (on / shape / frame) by bins of one z coordinate each, so the mapping
also gets each of those coordinates' bin as a one-hot input (`z_bins` in its config; the edges come from
`categorical_z_edges()`): without it a smooth mapping glides from brown to green eyes and never draws the blue bin
between them.

Trained in seven parts. On one CPU thread, {gen['base']['steps']:,} steps ({gen['base']['minutes']:.0f} min) of Adam
(lr 5e-3, betas 0.9/0.99, batch 16, EMA 0.995) on an L1+L2 loss weighted ×5 on eyes, brows, mouth and glasses
(renderer part masks), without bin inputs. Then that EMA generator fine-tuned with the bin inputs (starting at zero,
a no-op) on one NVIDIA H100, {ft[0]['steps']:,} steps ({ft[0]['minutes']:.1f} min; three runs shared the card, so
the minutes, not the planned steps, ended it) of batch 64 at lr 2e-3, eyes weighted ×17 and the mouth ×9. Then, in
another session on one H100, that export fine-tuned again for {ft[1]['steps']:,} steps ({ft[1]['minutes']:.1f} min, a
fresh cosine schedule) at lr 1e-3 with the eyes and the mouth weighted ×17, the best balance of three runs side by
side (`bench/synthfaces.py --compare-generators`, 1,000 held-out z; eyes / mouth weights 16 / 8, 16 / 16, 24 / 24:
PSNR 29.28 / 29.24 / 29.06, eyes 25.66 / 25.61 / 25.95, mouth 23.60 / 24.25 / 24.46 dB). Last, on this
machine's CPU with the synthesis frozen (`--train mapping`), the mapping widened from 128 to 512 hidden units
(`StyleGAN2Generator.with_wider_mapping`: the new units start with zero outgoing weights, so the first step draws the
previous images exactly) and trained for {ft[2]['steps']:,} steps ({ft[2]['minutes']:.0f} min, one thread, then two
from its checkpoint; stopped by hand once the validation PSNR had flattened) at batch 16, lr 1e-3, eyes and mouth
×17: with one w optimised per face the frozen synthesis meets every target (`bench/synthfaces.py --w-ceiling`),
so the mapping, not the synthesis, held the numbers back, and the encoders and domains made on this synthesis hold
unchanged. The same run with the 128-wide mapping gained 0.03 dB in 12 minutes (7,750 steps; validation PSNR).
Then the mouth weighted ×33 for {ft[3]['steps']:,} more steps ({ft[3]['minutes']:.0f} min, one thread, batch 32, lr 5e-4;
mapping only again): 29.54 → 29.55 dB, mouth 24.70 → 24.85 dB, eyes 25.96 → 25.99 (`bench/out/s12-compare-mouth.txt`).
That generator stayed 0.007 short of the SSIM target and 0.15 dB of the mouth's, and more rounds of the same
mapping flattened (an SSIM term in the loss reached 0.927 in 77 minutes). Last, in a later session, on the CPU, the
mapping gained per-layer outputs (`mapping_per_layer`: each of the 10 synthesis layers gets its own linear map of w,
`ws[:, i] = w + A_i w + b_i`, zero at first, so the first step draws the previous images exactly; 165k parameters)
and three more mapping-only rounds with `--ssim-weight 4` (the loss adds 4 · (1 − SSIM)), batch 32, lr 5e-4, one
thread each: {ft[4]['steps']:,} steps ({ft[4]['minutes']:.0f} min; eyes / mouth ×17 / ×33), then
{ft[5]['steps']:,} ({ft[5]['minutes']:.0f} min; ×25 / ×97), then {ft[6]['steps']:,} ({ft[6]['minutes']:.0f} min;
×25 / ×193): SSIM 0.923 → 0.929 → 0.930, mouth 24.85 → 24.52 → 24.91 → 25.10 dB, eyes 25.99 → 25.64
(`bench/out/s14-compare.txt`). The same first round without the per-layer maps gave SSIM 0.926. That generator met
the SSIM and mouth targets on the card's draw of z only just (on three other draws of 1,000 z SSIM 0.9289-0.9297,
the mouth 24.98-25.04 dB), and two more 9-minute mapping-only rounds (with and without a small nonlinear head per
layer) moved nothing: the frozen synthesis had become the limit. So last, in the fifteenth session, the three top
synthesis blocks (16, 32 and 64 px: 158k of the synthesis' 312k parameters) trained with the mapping (`--train
mapping+b16+b32+b64`, same loss, batch 32, lr 5e-4, one thread) for {ft[7]['steps']:,} steps
({ft[7]['minutes']:.0f} min): SSIM 0.930 → 0.939, mouth 25.10 → 26.21 dB, eyes 25.64 → 25.25 dB, PSNR 29.81 → 30.08
(`bench/out/s15-compare.txt`; the 32 and 64 px blocks alone: 0.938, 25.96, 25.30). On three other draws of 1,000 z
(`bench/synthfaces.py --held-out-seeds 1 2 3`, `bench/out/s15-held-out-seeds.txt`) SSIM is 0.938-0.939, the mouth
26.06-26.12 dB, the eyes 25.12-25.24 dB (now the thinnest margin) and the smile's agreement 0.951-0.963. The synthesis
changed, so the encoders were fine-tuned on it (round eighteen below) and the domains remade (`hub/cascade.sh`).
Weights stored as float16, as the training script exports them.

    python -m refinestyle.train.generator --out runs/synthfaces-generator --steps 26000 --minutes 62 --threads 1
    # second session: the same run continued with a longer cosine schedule (a warm restart of the learning rate)
    python -m refinestyle.train.generator --out runs/synthfaces-generator --steps 50000 --minutes 116 --threads 1 --resume
    # tenth session, on a GPU; --init-from: that run's EMA generator (this folder's generator/ at commit 8406ebc)
    python -m refinestyle.train.generator --out runs/synthfaces-generator-bins --init-from <that generator/> --batch 64 --lr 2e-3 --part-weights eyes=16,mouth=8 --steps 7500 --minutes 6 --device cuda --threads 5
    python -m refinestyle.train.generator --out runs/synthfaces-generator-bins --init-from <that generator/> --batch 64 --lr 2e-3 --part-weights eyes=16,mouth=8 --steps 11500 --minutes 9.9 --device cuda --threads 5 --resume --export runs/synthfaces-generator-bins/export
    # eleventh session, on a GPU; --init-from: that export (this folder's generator/ at commit cec3bcb)
    python -m refinestyle.train.generator --out runs/synthfaces-generator-bins-r2 --init-from <that generator/> --batch 64 --lr 1e-3 --part-weights eyes=16,mouth=16 --steps 9000 --minutes 8.3 --device cuda --threads 5 --export runs/synthfaces-generator-bins-r2/export
    # twelfth session, on the CPU; --init-from: that export (this folder's generator/ at commit 04c263c)
    python -m refinestyle.train.generator --out runs/synthfaces-generator-mapping512 --init-from <that generator/> --train mapping --mapping-width 512 --batch 16 --lr 1e-3 --part-weights eyes=16,mouth=16 --steps 40000 --minutes 70 --threads 1
    python -m refinestyle.train.generator --out runs/synthfaces-generator-mapping512 --init-from <that generator/> --train mapping --mapping-width 512 --batch 16 --lr 1e-3 --part-weights eyes=16,mouth=16 --steps 40000 --minutes 62 --threads 2 --resume --export runs/synthfaces-generator-mapping512/export
    # stopped by hand at step 27,930 (its checkpoint: 27,800); then the export, taking no further step:
    python -m refinestyle.train.generator --out runs/synthfaces-generator-mapping512 --init-from <that generator/> --train mapping --mapping-width 512 --batch 16 --lr 1e-3 --part-weights eyes=16,mouth=16 --steps 28000 --minutes 0.01 --threads 2 --resume --export runs/synthfaces-generator-mapping512/export
    python -m refinestyle.train.generator --out runs/synthfaces-generator-mapping512-mouth --init-from runs/synthfaces-generator-mapping512/export --train mapping --mapping-width 512 --part-weights eyes=16,mouth=32 --batch 32 --lr 5e-4 --steps 12000 --minutes 25 --threads 1 --export runs/synthfaces-generator-mapping512-mouth/export
    # fourteenth session, on the CPU; --init-from: that export (this folder's generator/ at commit 2d48e9e)
    python -m refinestyle.train.generator --out runs/synthfaces-generator-per-layer --init-from <that generator/> --train mapping --mapping-width 512 --mapping-per-layer --part-weights eyes=16,mouth=32 --ssim-weight 4 --batch 32 --lr 5e-4 --steps 12000 --minutes 9 --threads 1 --export runs/synthfaces-generator-per-layer/export
    python -m refinestyle.train.generator --out runs/synthfaces-generator-per-layer-ssim --init-from runs/synthfaces-generator-per-layer/export --train mapping --mapping-width 512 --mapping-per-layer --part-weights eyes=24,mouth=96 --ssim-weight 4 --batch 32 --lr 5e-4 --steps 12000 --minutes 62 --threads 1 --export runs/synthfaces-generator-per-layer-ssim/export
    python -m refinestyle.train.generator --out runs/synthfaces-generator-per-layer-mouth --init-from runs/synthfaces-generator-per-layer-ssim/export --train mapping --mapping-width 512 --mapping-per-layer --part-weights eyes=24,mouth=192 --ssim-weight 4 --batch 32 --lr 5e-4 --steps 4000 --minutes 20 --threads 1 --export runs/synthfaces-generator-per-layer-mouth/export
    # fifteenth session, on the CPU: the mapping and the three top synthesis blocks
    python -m refinestyle.train.generator --out runs/synthfaces-generator-top-blocks --init-from runs/synthfaces-generator-per-layer-mouth/export --train mapping+b16+b32+b64 --mapping-width 512 --mapping-per-layer --part-weights eyes=24,mouth=192 --ssim-weight 4 --batch 32 --lr 5e-4 --steps 7000 --minutes 48 --threads 1 --export runs/synthfaces-generator-top-blocks/export

On {g['n']} held-out z (seed 12345) against `render(z_to_params(z), "photo")`:

| metric | value | target |
|---|---|---|
| PSNR | {g['psnr']:.2f} dB | ≥ 28 |
| SSIM | {g['ssim']:.3f} | ≥ 0.93 |
| PSNR inside eye masks | {g['psnr_eyes']:.2f} dB | ≥ 25 |
| PSNR inside mouth masks | {g['psnr_mouth']:.2f} dB | ≥ 25 |
| glasses / smile / eye colour agree (classifier trained on renders) | {g['agree_glasses']:.3f} / {g['agree_smile']:.3f} / {g['agree_eye_color']:.3f} | ≥ 0.95 |
| all three agree | {g['agree_all']:.3f} | |
| classifier accuracy on the renders themselves | {g['classifier_on_renders']:.3f} | |

Validity (classifier confidence, renders = reference): {', '.join(f"{k} {v:.3f}" for k, v in metrics['validity'].items())}.
"""
    if g.get("eye_color_confusion"):
        from refinestyle.data.synthfaces import EYE_COLORS

        conf = g["eye_color_confusion"]
        per_colour = ", ".join(f"{name} {row[i] / max(1, sum(row)):.2f}" for i, (name, row) in enumerate(zip(EYE_COLORS, conf)))
        text += (f"\nEye colour read from `G(z)` (columns) by true colour (rows); agreement per colour: {per_colour} "
                 "(before the bin inputs: brown 0.94, blue 0.05, green 0.95).\n\n| true \\ read | " + " | ".join(EYE_COLORS)
                 + " |\n|---|" + "---|" * len(EYE_COLORS) + "\n"
                 + "".join(f"| {name} | " + " | ".join(str(v) for v in row) + " |\n"
                           for name, row in zip(EYE_COLORS, conf)))
    if c:
        text += f"""
## CLIP

`clip/`: open_clip `CLIP` with our registered config `RefineStyle-SynthFaces-CLIP` (image tower: open_clip's
ModifiedResNet at 64 px, blocks 1/2/2/1, width 16, attention pooling; text transformer width 128, 3 layers; word
tokenizer over the caption vocabulary, `vocab.json`), trained contrastively on renders in all 6 styles with
`caption()` texts, half of each batch being twins of the other half with the smile or the glasses flipped (hard
negatives), with zoom/shift/flip, blur and noise augmentation (round one: 3,558 steps, 45 min, batch 128). That
CLIP never told a smile from a neutral mouth (zero-shot smile 0.52, and a linear probe on its image embedding
0.50): the twins' image and text embeddings agreed to a cosine of 0.997 or more, a symmetric point where neither
tower's contrastive gradient separates them. Round two fine-tunes it with a logistic probe that reads
glasses and smile from the image embedding (`--attribute-weight 2`; the probe is not shipped), which broke
that symmetry: zero-shot smile rose to 0.95 within 800 steps and the text tower followed
({info['clip']['steps']:,} steps, {info['clip']['minutes']:.0f} min):

    python -m refinestyle.train.clip --out runs/synthfaces-clip --steps 4000 --minutes 45 --threads 1 --export runs/synthfaces-clip/export
    python -m refinestyle.train.clip --out runs/synthfaces-clip-smile --init-from runs/synthfaces-clip/export --attribute-weight 2 --lr 1e-3 --steps 1500 --minutes 26 --threads 1

Zero-shot on {c['n']} held-out renders per style: style (with `style_prompt`) {c['style']:.3f} (target ≥ 0.95),
glasses yes/no {c['glasses']:.3f}, smile yes/no {c['smile']:.3f} (targets ≥ 0.90).
"""
    vit = metrics.get("extra_clips", {}).get("RefineStyle-SynthFaces-CLIP-ViT")
    if vit and "clip-vit" in info:
        text += f"""
`clip-vit/` (`model.extra_clips`): a second CLIP with our registered config `RefineStyle-SynthFaces-CLIP-ViT` (ViT
64 px, patch 8, width 128, 4 layers; a text tower of the same shape, the same vocabulary), an earlier release's CLIP, trained
without twins or augmentation ({info['clip-vit']['steps']:,} steps, {info['clip-vit']['minutes']:.0f} min, batch 128) by the
training script as of commit f19ce06:

    git checkout f19ce06 && python -m refinestyle.train.clip --out runs/synthfaces-clip --steps 3000 --minutes 45 --threads 1
    # (that run folder was then renamed runs/synthfaces-clip-vit, where `assemble` reads it)
    # today's script trains the same architecture (with the newer recipe) with --arch vit

Zero-shot: style {vit['style']:.3f}, glasses {vit['glasses']:.3f}, smile {vit['smile']:.3f}. Domain adaptation averages the
directional loss over both CLIPs, as StyleGAN-NADA does over its CLIP models: a pixel pattern that fools one
small CLIP rarely fools the other (with the ResNet alone, "zombie" reached a CLIP loss as low as the true
zombie renders while the images stayed un-zombie-like: ground-truth PSNR 8.6 dB, style accuracy 0.02).
"""
    encoders = info.get("encoders", {})
    inversion_json = ROOT / "bench" / "out" / "inversion.json"
    if encoders:
        text += """
## Encoders

`encoder/` (two-stage, the default of `model.invert`: a W+ encoder trained first, then frozen while a token branch
learns from the image and its stage-one reconstruction; better than the one-stage encoder on every image set below)
and `encoder-one-stage/` (W+ heads and token branch trained together; load it with
`RefineStyleEncoder.from_pretrained(repo, subfolder="encoder-one-stage")` and set `model.encoder`):
`RefineStyleEncoder` with a small CNN backbone and grouped transformer blocks (coarse/medium/fine), K = 8
tokens per layer, trained on renderer `photo` images and generator samples only (never other styles); in
rounds four to sixteen half of the renders are colour-jittered (`--photometric-augment 0.5`: saturation down to grey,
contrast, brightness, a tint; the same transform on input and target), which the generator alone cannot
reproduce, so the token branch learns to reach images outside its domain.

Trained in rounds: round one against the generator of the first session (26,000 steps), round two
started from round one's weights (`--init-from`) against the final generator, round three from round
two's weights (the two-stage run was interrupted twice and continued each time with `--resume` from its
last checkpoint; the batch of each step depends only on the seed and the step, so the result is that
of an uninterrupted run), round four from round three's weights with the colour jitter, rounds five to twelve (two-stage only) each
from the previous round's weights with fresh batches (`--seed 1` to `--seed 8`), and round fourteen (the previous release; a thirteenth
two-stage round on the previous generator was not shipped) against the generator with bin inputs, whose synthesis changed: stage one from round two's, two-stage from round twelve's
and one-stage from round four's weights (`--seed 9`), then a fifteenth two-stage round from the fourteenth
(`--seed 10`; better on a disjoint 128-face probe, `bench/encoder_probe.py`, in domain 31.47 → 31.66 dB), and round
sixteen against the generator fine-tuned once more, by the commands of `hub/cascade.sh` (`TAG=s11
SEED=11`): stage one from the W+ part of the fifteenth two-stage encoder, then two-stage and one-stage from the
shipped ones (`--seed 11`), then a seventeenth two-stage round from the sixteenth (`--seed 12`; on the disjoint probe
photo 31.58 → 31.98 dB, zombie +0.27, the other sets within 0.08), and round eighteen (the previous release) against the
generator whose three top synthesis blocks were fine-tuned, by the commands of `hub/cascade.sh` (`TAG=s15 SEED=13`):
stage one from the W+ part of the seventeenth two-stage encoder, two-stage and one-stage from the shipped ones
(`--seed 13`), then a nineteenth two-stage round from the eighteenth (`--seed 14`, two threads; on the disjoint probe
photo 31.80 → 32.28 dB, zombie +0.67, watercolor +0.41, the other sets within 0.2). The last round of each is what
ships:

    # round one
    python -m refinestyle.train.encoder --generator hub/refinestyle-synthfaces --out runs/synthfaces-encoder-one-stage-v1 --mode one-stage --steps 4000 --minutes 34 --threads 1 --export runs/synthfaces-encoder-one-stage-v1/export
    python -m refinestyle.train.encoder --generator hub/refinestyle-synthfaces --out runs/synthfaces-encoder-stage-one-v1 --mode stage-one --steps 2000 --minutes 16 --threads 1 --export runs/synthfaces-encoder-stage-one-v1/export
    python -m refinestyle.train.encoder --generator hub/refinestyle-synthfaces --out runs/synthfaces-encoder-two-stage-v1 --mode two-stage --stage-one runs/synthfaces-encoder-stage-one-v1/export --steps 1500 --minutes 15 --threads 1 --export runs/synthfaces-encoder-two-stage-v1/export
    # round two
    python -m refinestyle.train.encoder --generator hub/refinestyle-synthfaces --out runs/synthfaces-encoder-one-stage --mode one-stage --init-from runs/synthfaces-encoder-one-stage-v1/export --steps 2400 --minutes 22 --threads 1 --export runs/synthfaces-encoder-one-stage/export
    python -m refinestyle.train.encoder --generator hub/refinestyle-synthfaces --out runs/synthfaces-encoder-stage-one --mode stage-one --init-from runs/synthfaces-encoder-stage-one-v1/export --steps 1200 --minutes 11 --threads 1 --export runs/synthfaces-encoder-stage-one/export
    python -m refinestyle.train.encoder --generator hub/refinestyle-synthfaces --out runs/synthfaces-encoder-two-stage --mode two-stage --stage-one runs/synthfaces-encoder-stage-one/export --init-from runs/synthfaces-encoder-two-stage-v1/export --steps 1200 --minutes 12 --threads 1 --export runs/synthfaces-encoder-two-stage/export
    # round three
    python -m refinestyle.train.encoder --generator hub/refinestyle-synthfaces --out runs/synthfaces-encoder-one-stage-r3 --mode one-stage --init-from runs/synthfaces-encoder-one-stage/export --steps 6000 --minutes 85 --threads 1 --export runs/synthfaces-encoder-one-stage-r3/export
    python -m refinestyle.train.encoder --generator hub/refinestyle-synthfaces --out runs/synthfaces-encoder-two-stage-r3 --mode two-stage --stage-one runs/synthfaces-encoder-stage-one/export --init-from runs/synthfaces-encoder-two-stage/export --steps 3000 --minutes 55 --threads 1 --export runs/synthfaces-encoder-two-stage-r3/export
    # round four
    python -m refinestyle.train.encoder --generator hub/refinestyle-synthfaces --out runs/synthfaces-encoder-one-stage-r4 --mode one-stage --init-from runs/synthfaces-encoder-one-stage-r3/export --photometric-augment 0.5 --steps 3000 --minutes 50 --threads 1 --export runs/synthfaces-encoder-one-stage-r4/export
    python -m refinestyle.train.encoder --generator hub/refinestyle-synthfaces --out runs/synthfaces-encoder-two-stage-r4 --mode two-stage --stage-one runs/synthfaces-encoder-stage-one/export --init-from runs/synthfaces-encoder-two-stage-r3/export --photometric-augment 0.5 --steps 3000 --minutes 50 --threads 1 --export runs/synthfaces-encoder-two-stage-r4/export
    # round five
    python -m refinestyle.train.encoder --generator hub/refinestyle-synthfaces --out runs/synthfaces-encoder-two-stage-r5 --mode two-stage --stage-one runs/synthfaces-encoder-stage-one/export --init-from runs/synthfaces-encoder-two-stage-r4/export --photometric-augment 0.5 --seed 1 --steps 3000 --minutes 45 --threads 1 --export runs/synthfaces-encoder-two-stage-r5/export
    # round six
    python -m refinestyle.train.encoder --generator hub/refinestyle-synthfaces --out runs/synthfaces-encoder-two-stage-r6 --mode two-stage --stage-one runs/synthfaces-encoder-stage-one/export --init-from runs/synthfaces-encoder-two-stage-r5/export --photometric-augment 0.5 --seed 2 --steps 3000 --minutes 45 --threads 1 --export runs/synthfaces-encoder-two-stage-r6/export
    # round seven
    python -m refinestyle.train.encoder --generator hub/refinestyle-synthfaces --out runs/synthfaces-encoder-two-stage-r7 --mode two-stage --stage-one runs/synthfaces-encoder-stage-one/export --init-from runs/synthfaces-encoder-two-stage-r6/export --photometric-augment 0.5 --seed 3 --steps 3000 --minutes 45 --threads 1 --export runs/synthfaces-encoder-two-stage-r7/export
    # round eight
    python -m refinestyle.train.encoder --generator hub/refinestyle-synthfaces --out runs/synthfaces-encoder-two-stage-r8 --mode two-stage --stage-one runs/synthfaces-encoder-stage-one/export --init-from runs/synthfaces-encoder-two-stage-r7/export --photometric-augment 0.5 --seed 4 --steps 3000 --minutes 45 --threads 1 --export runs/synthfaces-encoder-two-stage-r8/export
    # round nine
    python -m refinestyle.train.encoder --generator hub/refinestyle-synthfaces --out runs/synthfaces-encoder-two-stage-r9 --mode two-stage --stage-one runs/synthfaces-encoder-stage-one/export --init-from runs/synthfaces-encoder-two-stage-r8/export --photometric-augment 0.5 --seed 5 --steps 3000 --minutes 40 --threads 1 --export runs/synthfaces-encoder-two-stage-r9/export
    # round ten
    python -m refinestyle.train.encoder --generator hub/refinestyle-synthfaces --out runs/synthfaces-encoder-two-stage-r10 --mode two-stage --stage-one runs/synthfaces-encoder-stage-one/export --init-from runs/synthfaces-encoder-two-stage-r9/export --photometric-augment 0.5 --seed 6 --steps 3000 --minutes 40 --threads 1 --export runs/synthfaces-encoder-two-stage-r10/export
    # round eleven
    python -m refinestyle.train.encoder --generator hub/refinestyle-synthfaces --out runs/synthfaces-encoder-two-stage-r11 --mode two-stage --stage-one runs/synthfaces-encoder-stage-one/export --init-from runs/synthfaces-encoder-two-stage-r10/export --photometric-augment 0.5 --seed 7 --steps 3000 --minutes 40 --threads 1 --export runs/synthfaces-encoder-two-stage-r11/export
    # round twelve
    python -m refinestyle.train.encoder --generator hub/refinestyle-synthfaces --out runs/synthfaces-encoder-two-stage-r12 --mode two-stage --stage-one runs/synthfaces-encoder-stage-one/export --init-from runs/synthfaces-encoder-two-stage-r11/export --photometric-augment 0.5 --seed 8 --steps 3000 --minutes 33 --threads 1 --export runs/synthfaces-encoder-two-stage-r12/export
    # round fourteen, against the generator with bin inputs; PREV = this folder at commit 8406ebc (rounds twelve and four, fp16)
    python -m refinestyle.train.encoder --generator hub/refinestyle-synthfaces --out runs/s10-enc-stage-one --mode stage-one --init-from runs/synthfaces-encoder-stage-one/export --steps 1500 --minutes 12 --threads 1 --export runs/s10-enc-stage-one/export
    python -m refinestyle.train.encoder --generator hub/refinestyle-synthfaces --out runs/s10-enc-two-stage --mode two-stage --stage-one runs/s10-enc-stage-one/export --init-from $PREV/encoder --photometric-augment 0.5 --seed 9 --steps 2400 --minutes 27 --threads 1 --export runs/s10-enc-two-stage/export
    python -m refinestyle.train.encoder --generator hub/refinestyle-synthfaces --out runs/s10-enc-one-stage --mode one-stage --init-from $PREV/encoder-one-stage --photometric-augment 0.5 --seed 9 --steps 1500 --minutes 25 --threads 1 --export runs/s10-enc-one-stage/export
    # round fifteen (two-stage only)
    python -m refinestyle.train.encoder --generator hub/refinestyle-synthfaces --out runs/s10-enc-two-stage-r15 --mode two-stage --stage-one runs/s10-enc-stage-one/export --init-from runs/s10-enc-two-stage/export --photometric-augment 0.5 --seed 10 --steps 1600 --minutes 20 --threads 1 --export runs/s10-enc-two-stage-r15/export
    # round sixteen (hub/cascade.sh with TAG=s11 SEED=11), against the generator fine-tuned again; PREV = runs/s11-prev,
    # this folder's encoders at commit cec3bcb (rounds fifteen and fourteen, fp16)
    python -m refinestyle.train.encoder --generator hub/refinestyle-synthfaces --threads 1 --mode stage-one --out runs/s11-enc-stage-one --init-from $PREV/encoder --steps 1500 --minutes 12 --export runs/s11-enc-stage-one/export
    python -m refinestyle.train.encoder --generator hub/refinestyle-synthfaces --threads 1 --photometric-augment 0.5 --seed 11 --mode two-stage --out runs/s11-enc-two-stage --stage-one runs/s11-enc-stage-one/export --init-from $PREV/encoder --steps 2400 --minutes 27 --export runs/s11-enc-two-stage/export
    python -m refinestyle.train.encoder --generator hub/refinestyle-synthfaces --threads 1 --photometric-augment 0.5 --seed 11 --mode one-stage --out runs/s11-enc-one-stage --init-from $PREV/encoder-one-stage --steps 1500 --minutes 25 --export runs/s11-enc-one-stage/export
    # round seventeen (two-stage only)
    python -m refinestyle.train.encoder --generator hub/refinestyle-synthfaces --threads 1 --photometric-augment 0.5 --seed 12 --mode two-stage --out runs/s11-enc-two-stage-r17 --stage-one runs/s11-enc-stage-one/export --init-from runs/s11-enc-two-stage/export --steps 1600 --minutes 22 --export runs/s11-enc-two-stage-r17/export
    # round eighteen (hub/cascade.sh with TAG=s15 SEED=13), against the generator with its top blocks fine-tuned;
    # PREV = runs/s15-prev, this folder's encoders at commit df84140 (rounds seventeen and sixteen, fp16)
    python -m refinestyle.train.encoder --generator hub/refinestyle-synthfaces --threads 1 --mode stage-one --out runs/s15-enc-stage-one --init-from $PREV/encoder --steps 1500 --minutes 12 --export runs/s15-enc-stage-one/export
    python -m refinestyle.train.encoder --generator hub/refinestyle-synthfaces --threads 1 --photometric-augment 0.5 --seed 13 --mode two-stage --out runs/s15-enc-two-stage --stage-one runs/s15-enc-stage-one/export --init-from $PREV/encoder --steps 2400 --minutes 27 --export runs/s15-enc-two-stage/export
    python -m refinestyle.train.encoder --generator hub/refinestyle-synthfaces --threads 1 --photometric-augment 0.5 --seed 13 --mode one-stage --out runs/s15-enc-one-stage --init-from $PREV/encoder-one-stage --steps 1500 --minutes 25 --export runs/s15-enc-one-stage/export
    # round nineteen (two-stage only)
    python -m refinestyle.train.encoder --generator hub/refinestyle-synthfaces --threads 2 --photometric-augment 0.5 --seed 14 --mode two-stage --out runs/s15-enc-two-stage-r19 --stage-one runs/s15-enc-stage-one/export --init-from runs/s15-enc-two-stage/export --steps 1600 --minutes 19 --export runs/s15-enc-two-stage-r19/export
"""
        if inversion_json.exists():
            inv = json.loads(inversion_json.read_text())
            metrics["inversion"] = inv
            text += "\nMedian PSNR (dB) on held-out renders (`python bench/inversion.py`):\n\n| image set | " + \
                " | ".join(next(iter(inv.values())).keys()) + " |\n|---|" + "---|" * len(next(iter(inv.values()))) + "\n"
            for set_name, rows in inv.items():
                text += f"| {set_name} | " + " | ".join(f"{r['psnr']:.2f}" for r in rows.values()) + " |\n"
    if domain_rows:
        text += "\n## Domains\n\nEach made from a text prompt only, by the command in its own `domains/<name>/README.md` " \
                "(all listed in `hub/make_domains.sh`). Ground truth: `render(z_to_params(z), name)` on 64 held-out z; style " \
                "accuracy and content (glasses/smile/eye colour) from a CNN trained on renders (`bench/synthfaces.py`). " \
                "\"after\" is strength 1 (the tokens as optimised); the suggested strength is where the CLIPs saw the " \
                "style reached (`model.adapt` measures it; `generate(..., strength=\"suggested\")`).\n\n" \
                "| name | prompts | parameters | file | CLIP similarity to the target (16 seeds), before → after | " \
                "GT PSNR (dB), before → after | style accuracy, before → after | content | suggested strength | " \
                "GT PSNR / style accuracy at it |\n|---|---|---|---|---|---|---|---|---|---|\n" + \
                "\n".join(domain_rows) + "\n"
    text += """
## Usage

```python
from refinestyle import RefineStyleModel

model = RefineStyleModel.from_pretrained("hub/refinestyle-synthfaces")
images = model.generate(seeds=range(8), truncation_psi=0.7, domain="sketch")
softer = model.generate(seeds=range(8), truncation_psi=0.7, domain="sketch", strength="suggested")  # its card value
```

Licence: Apache-2.0 (the data is synthetic, made by the project's renderer).
"""
    (HUB / "README.md").write_text(text)
    (HUB / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"wrote {HUB / 'README.md'} and metrics.json")


def refresh_domains() -> None:
    """After a generator change that keeps the synthesis (a new mapping), re-measure each shipped domain's own card:
    its CLIP numbers (``metrics.json`` and the card line), its preview and its suggested strength. The tokens, and so
    the files, stay as made; the suggestion changes only if the CLIPs now give another one (it is printed)."""
    import re

    from refinestyle import RefineStyleModel
    from refinestyle.cli import domain_metrics, save_domain_preview

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
        metrics = domain_metrics(model, dom, target=old["target"])
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        save_domain_preview(model, dom, folder / "preview.png", seed=0)  # as `refinestyle adapt --seed 0` made it
        card_text = (folder / "README.md").read_text()
        line = (f"- CLIP similarity to the target prompt on 16 fixed seeds (1234): {metrics['clip_target_similarity_before']:.4f} "
                f"before, {metrics['clip_target_similarity_after']:.4f} after (`metrics.json`; measured again on the "
                f"generator as shipped now: the tokens are as made)")
        card_text, count = re.subn(r"^- CLIP similarity to the target prompt on 16 fixed seeds.*$", line, card_text, flags=re.M)
        if count != 1:
            raise ValueError(f"{folder / 'README.md'}: no CLIP similarity line to update; remake the domain (hub/make_domains.sh)")
        if dom.config.suggested_strength is not None:
            card_text = re.sub(r"(suggested strength: )[0-9.]+( \(`strength=)", rf"\g<1>{dom.config.suggested_strength:g}\2", card_text)
        (folder / "README.md").write_text(card_text)
        print(f"{name}: CLIP similarity after {old['clip_target_similarity_after']:.4f} → {metrics['clip_target_similarity_after']:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["assemble", "refresh-domains", "card", "index"])
    parser.add_argument("--recompute", action="store_true", help="card: re-run the evaluation even if metrics.json exists")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="assemble: only these parts")
    parser.add_argument("--encoder-runs", nargs=2, metavar=("ONE_STAGE", "TWO_STAGE"), default=None,
                        help="assemble: the run folders (under runs/) of the encoders to ship "
                             f"(default: {ENCODER_RUNS['one-stage']} {ENCODER_RUNS['two-stage']})")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.step == "card":
        card(recompute=args.recompute)
    elif args.step == "refresh-domains":
        refresh_domains()
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
