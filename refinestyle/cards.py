"""Model cards and the numbers they quote: card text, a domain's preview grid and its CLIP metrics."""

from __future__ import annotations

from pathlib import Path

from .images import save_grid


def save_domain_preview(model, domain, path: str | Path, *, seed: int) -> None:
    """A domain card's preview: 8 faces of ``seed`` (truncation 0.7) before, with the domain, and at its suggested
    strength when it has one, one row each."""
    import torch  # here, not at the top: the command line imports this module before it knows it needs torch

    z = torch.randn(8, model.generator.config.z_dim, generator=torch.Generator().manual_seed(seed))
    rows = [model.generate(z=z, truncation_psi=0.7), model.generate(z=z, truncation_psi=0.7, domain=domain)]
    if domain.config.suggested_strength is not None:
        rows.append(model.generate(z=z, truncation_psi=0.7, domain=domain, strength="suggested"))
    save_grid(torch.cat(rows), path, columns=8)


def domain_metrics(model, domain, *, target: str | None, seed: int = 1234, n: int = 16) -> dict:
    """CLIP similarity to the target prompt before/after applying ``domain`` on fixed seeds (reproducible)."""
    import torch

    if model.clip is None or not target:
        return {}
    z = torch.randn(n, model.generator.config.z_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        text = model.clip.encode_text([target])[0]
        before = model.clip.encode_image(model.generate(z=z, truncation_psi=0.7)) @ text
        after = model.clip.encode_image(model.generate(z=z, truncation_psi=0.7, domain=domain)) @ text
    return {"seed": seed, "n": n, "truncation_psi": 0.7, "target": target,
            "clip_target_similarity_before": before.mean().item(), "clip_target_similarity_after": after.mean().item()}


def describe_tokens(dom) -> str:
    """"1" or "1 (toRGB layers: 3)": K, and the layers whose K differs."""
    k = dom.config.num_tokens
    other = {name: r for name, r in dom.tokens_per_layer().items() if r != k}
    if not other:
        return str(k)
    if all(name.endswith(".torgb") for name in other) and len(set(other.values())) == 1:
        return f"{k} (toRGB layers: {next(iter(other.values()))})"
    return f"{k} (" + ", ".join(f"{name}: {r}" for name, r in other.items()) + ")"


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
        rows = [("PSNR (dB)", "psnr", ".2f"), ("SSIM", "ssim", ".3f"), ("style accuracy (the classifier)", "style_acc", ".2f"),
                ("content kept (glasses, smile, eye colour)", "content", ".2f")]
        if all("look_check" in g for _, g in cols):  # what a person sees: refinestyle.look_checks
            rows.insert(2, ("passes the style's look check (`bench/look_checks.py`)", "look_check", ".0%"))
        for label, key, fmt in rows:
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


def write_converted_card(out: Path, G, *, src: str, command: str, guides, face_alignment: str, dtype: str,
                         parity: float) -> None:
    """``out/README.md`` of a repo ``refinestyle convert`` made: what it is, how to use it, the named CLIP guides,
    how it was made."""
    cfg, folder = G.config, str(out)
    guides = [tuple(g) for g in guides]
    if face_alignment == "ffhq":
        align = ("photos are cut the way the FFHQ dataset was made before inversion (`\"face_alignment\": \"ffhq\"` in "
                 "`model_index.json`; `model.invert(photos)` does it, `align=\"none\"` turns it off; needs "
                 "`refinestyle[faces]`)")
    else:
        align = ("photos are centre-cropped before inversion (`\"face_alignment\": \"none\"`). For a checkpoint trained on "
                 "FFHQ-aligned faces (the official FFHQ ones), convert with `--face-alignment ffhq` so that photos are cut "
                 "the way the generator saw faces")
    if guides:
        from .clip import check_open_clip_guide

        rows = []
        for arch, tag in guides:
            weights = check_open_clip_guide(arch, tag)
            where = weights.get("hf_hub") or weights.get("url") or "open_clip"
            rows.append(f"| `{arch}` | `{tag}` | `{where.rstrip('/')}` |")
        guide_text = ("Text adaptation (`model.adapt`) is guided by these CLIP models, averaged as StyleGAN-NADA does. They "
                      "are **named, not stored**: `model_index.json` lists them as `open_clip_guides` (open_clip "
                      "architecture and pretrained tag), and their weights download through open_clip the first time "
                      "adaptation uses them, then load from the local cache. Loading this repo never touches them; offline "
                      "(`HF_HUB_OFFLINE=1`) a guide that is not cached yet is an error that names it: run once with a "
                      "network to cache it. Their licences are their own.\n\n"
                      "| open_clip architecture | pretrained tag | weights from |\n|---|---|---|\n" + "\n".join(rows) + "\n")
    else:
        guide_text = ("No CLIP guide is named, so `model.adapt` has nothing to guide it: convert again with "
                      "`--clip ViT-B-32:openai --clip ViT-B-16:openai` (StyleGAN-NADA's pair), or set "
                      "`model.clip = CLIPGuide.from_open_clip(\"ViT-B-32\", \"openai\")`.\n")
    usage = (f'model = RefineStyleModel.from_pretrained("{folder}")   # this folder, or its Hub repo id once pushed\n'
             'images = model.generate(seeds=range(8), truncation_psi=0.7)  # [8, 3, R, R] in [-1, 1]\n'
             'out = model.invert(["photo.jpg"])  # no encoder: W+ and tokens by optimisation (out.images, out.ws, out.tokens)')
    if guides:
        usage += ('\n\n# a domain from text: the guides above download on first use\n'
                  'dom = model.adapt(source="a photo of a face", target="a pencil sketch of a face")\n'
                  'model.add_domain(dom, name="sketch")\n'
                  'sketches = model.generate(seeds=range(8), truncation_psi=0.7, domain="sketch")\n'
                  'dom.save_pretrained("sketch")  # a few KB')
    n_params = sum(p.numel() for p in G.parameters())
    text = f"""---
library_name: refinestyle
license: other
tags:
- stylegan2
- refinestyle
- safetensors
---

# RefineStyle: StyleGAN2 {cfg.resolution}px converted from {Path(src).name}

A StyleGAN2 generator converted to a RefineStyle model repo: it draws images, inverts photos (W+ and per-image
refinement tokens, by optimisation: this repo has no encoder) and adapts to a new domain from a text prompt, stored as
a few KB of low-rank residuals of its convolution kernels (RefineStyle, Xia et al., PRCV 2024) instead of a fine-tuned
generator.

- generator: resolution {cfg.resolution}, z_dim {cfg.z_dim}, w_dim {cfg.w_dim}, channels {list(G.channels)}; parameters: {n_params:,}; weights stored as {dtype}
- face alignment: {align}

## Usage

```python
from refinestyle import RefineStyleModel

{usage}
```

On the command line: `refinestyle generate --model {folder} --seeds 0-7 --truncation 0.7`""" + (
        f""", `refinestyle adapt --model {folder} --target "a pencil sketch of a face" --out sketch`""" if guides else "") + f""".

## CLIP guides

{guide_text}
## How it was made

```bash
{command}
```

- converted by `refinestyle convert`, which reads the checkpoint's tensors without executing code from the file
- parity check after saving: max abs difference {parity:.2e} on 4 images (truncation 0.7) between the checkpoint and this repo

## Licence

The generator's licence is that of the source checkpoint ({Path(src).name}); the CLIP guides' are those of their weights.
"""
    (out / "README.md").write_text(text)
