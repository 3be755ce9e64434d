"""Model cards and the numbers they quote: card text, a domain's preview grid and its CLIP metrics."""

from __future__ import annotations

from pathlib import Path

from .images import save_grid


def write_model_card(out: Path, *, title: str, body: str, usage: str) -> None:
    """``out/README.md``: a Hub model card (front matter for the Hub's filters, then ``body`` and a usage snippet)."""
    card = f"""---
library_name: refinestyle
license: other
tags:
- stylegan2
- refinestyle
- safetensors
---

# {title}

{body}

## Usage

```python
from refinestyle import RefineStyleModel

{usage}
```
"""
    (out / "README.md").write_text(card)


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
