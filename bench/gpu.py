"""The CUDA path against the CPU reference, and full-size (FFHQ 1024 px) configs on a GPU.

Everything in refinestyle is pure PyTorch and runs on the CPU; this script checks that the same code
gives the same numbers on a CUDA device and measures what it costs there:

1. Parity (TF32 off, so float32 means float32; cudnn.deterministic unless --deterministic-parity 0):
   the tiny reference checkpoints in both layouts against their exact outputs; the SynthFaces model
   (generation with a domain through both kernel paths, encoder inversion, optimisation, adaptation)
   on CUDA against the same calls on the CPU; a zero residual against no tokens, bit for bit.
2. Speed of the SynthFaces model on the GPU (medians of timed repeats after warm-up).
3. Full-size configs with random weights: the 1024 px FFHQ generator (with and without a K = 8 token
   residual on every refined layer, both kernel paths), a token-gradient step (one adaptation step),
   and a ResNet-34 encoder for it at 256 px input, with peak memory.

    python bench/gpu.py [--fixtures tests/fixtures/stylegan2-tiny] [--json bench/out/gpu.json]

Without a CUDA device it says so and exits (status 0): nothing here is needed on a CPU-only machine
(``--device cpu`` runs the script itself as a dry run). Named gpu.py, not cuda.py: a script named cuda beside
it would shadow the ``cuda`` package that torch imports.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Callable

import torch

from refinestyle import RefineStyleModel, StyleGAN2Generator, load_stylegan2
from refinestyle.data.synthfaces import render, sample_params
from refinestyle.evaluation import psnr
from refinestyle.inversion import invert_optimize
from refinestyle.models.encoder import RefineStyleEncoder

ROOT = Path(__file__).resolve().parents[1]


def timed(fn: Callable[[], object], *, device: torch.device, repeats: int = 10, warmup: int = 3) -> float:
    """Median seconds of ``fn`` (synchronised on CUDA)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.detach().float().cpu() - b.detach().float().cpu()).abs().max().item()


def parity_fixtures(fixtures: Path, dev: torch.device) -> list[dict]:
    rows = []
    for r in (16, 32):
        refs = torch.load(fixtures / f"refs-tiny-{r}.pt", weights_only=True)
        for layout, name in (("rosinality", f"rosinality-tiny-{r}.pt"), ("nvlabs", f"nvlabs-tiny-{r}.state_dict.pt")):
            G = load_stylegan2(fixtures / name).to(dev)
            with torch.no_grad():
                errs = {
                    "mapping": max_err(G.mapping(refs["z"].to(dev)), refs["ws_psi1"]),
                    "image psi 0.7": max_err(G(refs["z"].to(dev), truncation_psi=0.7), refs["img_psi07"]),
                    "image noise none": max_err(G.synthesis(refs["ws"].to(dev), noise_mode="none"), refs["img_ws_noise_none"]),
                    "image const noise": max_err(G.synthesis(refs["ws"].to(dev)), refs["img_ws"]),
                }
            rows.append({"check": f"fixture {layout} {r} px vs reference outputs", "value": max(errs.values()),
                         "limit": 1e-4, "detail": errs})
    return rows


def parity_synthfaces(model_path: Path, dev: torch.device) -> list[dict]:
    cpu = RefineStyleModel.from_pretrained(model_path)
    if not cpu.domains:  # before loading the second copy
        raise ValueError(f"{model_path} ships no domain; the parity checks apply one (use the default model, or one with domains/)")
    gpu = RefineStyleModel.from_pretrained(model_path).to(dev)
    rows = []
    domain = sorted(cpu.domains)[0]
    with torch.no_grad():
        for path in ("materialized", "lowrank"):
            ws = cpu.generator.mapping(torch.randn(8, cpu.generator.config.z_dim, generator=torch.Generator().manual_seed(0)))
            sources = cpu.domain_sources(domain, 1.0)
            a = cpu.generator.synthesis(ws, tokens=sources, path=path)
            b = gpu.generator.synthesis(ws.to(dev), tokens=gpu.domain_sources(domain, 1.0), path=path)
            rows.append({"check": f"SynthFaces generate, domain {domain!r}, {path} path", "value": max_err(a, b), "limit": 1e-4})
    with torch.no_grad():
        # Zero residual is a no-op on the CPU, bit for bit (a test proves it); is it on this device too?
        # First: is the plain generator itself the same from run to run here?
        ws_dev = ws.to(dev)
        rows.append({"check": "plain generator, two calls, on this device, bit for bit",
                     "value": max_err(gpu.generator.synthesis(ws_dev), gpu.generator.synthesis(ws_dev)), "limit": 0.0})
        zero = gpu.generator.init_tokens(generator=torch.Generator().manual_seed(0))
        for path in ("auto", "materialized", "lowrank"):
            rows.append({"check": f"zero residual vs no tokens, {path} path, on this device, bit for bit",
                         "value": max_err(gpu.generator.synthesis(ws_dev, tokens=zero, path=path), gpu.generator.synthesis(ws_dev, path=path)),
                         "limit": 0.0})
    images = render(sample_params(8, seed=31337), style="photo", resolution=cpu.generator.config.resolution)
    if cpu.encoder is not None:
        a, b = cpu.invert(images, method="encoder"), gpu.invert(images.to(dev), method="encoder")
        kind = cpu.encoder.kind
        rows.append({"check": f"{kind} encoder inversion: W+", "value": max_err(a.ws, b.ws), "limit": 1e-3})
        rows.append({"check": f"{kind} encoder inversion: image", "value": max_err(a.images, b.images), "limit": 1e-3})
    # Optimisation is iterative, so float rounding may differ; compare the outcome, not the bits. Adam carries
    # the rounding forward (it divides each gradient by its own scale), so devices legitimately differ by several
    # hundredths of a dB on a ~28 dB median; the limit, 0.15 dB (0.5%), leaves room for that and still catches a
    # real divergence (which costs whole dB).
    a = invert_optimize(cpu.generator, images, w_steps=20, token_steps=10, seed=0)
    b = invert_optimize(gpu.generator, images.to(dev), w_steps=20, token_steps=10, seed=0)
    with torch.no_grad():
        pa = psnr(cpu.generator.synthesis(a[0], tokens=a[1]), images).median().item()
        pb = psnr(gpu.generator.synthesis(b[0], tokens=b[1]), images.to(dev)).median().item()
    rows.append({"check": "optimise 20 W+ and 10 token steps: median PSNR (dB), CPU vs CUDA", "value": abs(pa - pb),
                 "limit": 0.15, "detail": {"cpu": pa, "cuda": pb}})
    if cpu.clip is not None:
        da = cpu.adapt(target="a pencil sketch of a face", steps=8, seed=0, num_tokens=1)
        db = gpu.adapt(target="a pencil sketch of a face", steps=8, seed=0, num_tokens=1)
        # Adam divides by the gradient's own scale, so entries whose gradient is rounding noise move by
        # ±lr either way: compare the loss curve and the adapted images, not the raw tokens.
        # The first step is ill-conditioned besides: with P = 0 the refined and frozen embeddings are equal up
        # to rounding, and the directional loss normalises their difference.
        la = torch.tensor([s["loss"] for s in da.history.states])
        lb = torch.tensor([s["loss"] for s in db.history.states])
        rows.append({"check": "adapt 8 steps (the defaults: K = 1, toRGB 3, a 3-step warm-up with 8 tokens): final loss, "
                              "relative difference", "value": abs(la[-1] - lb[-1]).item() / la[-1].item(),
                     "limit": 0.05, "detail": {"cpu": la.tolist(), "cuda": lb.tolist()}})
        with torch.no_grad():
            ia = cpu.generate(ws=ws, domain=da)
            ib = gpu.generate(ws=ws.to(dev), domain=db.to(dev))
        rows.append({"check": "adapt 8 steps (the defaults): adapted images, PSNR CPU vs CUDA (dB, minimum)",
                     "value": psnr(ia, ib.cpu()).min().item(), "limit": 40.0, "higher_is_better": True})
    return rows


def speed_synthfaces(model_path: Path, dev: torch.device) -> list[dict]:
    model = RefineStyleModel.from_pretrained(model_path).to(dev)
    G = model.generator
    rows = []
    z = torch.randn(64, G.config.z_dim, device=dev)
    with torch.no_grad():
        t = timed(lambda: G(z), device=dev)
    rows.append({"what": "SynthFaces generate, batch 64", "ms_per_image": 1000 * t / 64})
    images = render(sample_params(64, seed=1), style="photo", resolution=G.config.resolution).to(dev)
    if model.encoder is not None:
        for batch in (8, 64):
            with torch.no_grad():
                t = timed(lambda: model.encoder.invert(images[:batch], generator=G), device=dev)
            rows.append({"what": f"SynthFaces {model.encoder.kind} encoder pass, batch {batch}", "ms_per_image": 1000 * t / batch})
    t = timed(lambda: invert_optimize(G, images[:8], w_steps=10, token_steps=10, seed=0), device=dev, repeats=3, warmup=1)
    rows.append({"what": "optimisation inversion, batch 8: ms per step", "ms_per_image": 1000 * t / 20})
    if model.clip is not None:
        # suggest_strength off: the one-off strength suggestion after the steps is not a per-step cost.
        t = timed(lambda: model.adapt(target="a pencil sketch of a face", steps=10, seed=0, num_tokens=8, suggest_strength=False),
                  device=dev, repeats=3, warmup=1)
        rows.append({"what": "adaptation (K = 8, batch 8): ms per step", "ms_per_image": 1000 * t / 10})
    return rows


def full_size(dev: torch.device, *, resolution: int = 1024) -> list[dict]:
    rows = []
    torch.manual_seed(0)
    # The defaults are the FFHQ config (512-d z and w, 8 mapping layers, channels 512 down to 32 at 1024 px).
    G = StyleGAN2Generator(resolution=resolution).to(dev).eval().requires_grad_(False)
    R = resolution
    n_params = sum(p.numel() for p in G.parameters())
    tokens_shared = G.init_tokens(num_tokens=8, generator=torch.Generator().manual_seed(1))
    for layer in tokens_shared.layers.values():
        layer.p.normal_(0, 0.01)  # a non-zero residual, so the refined path does real work
    for batch in (1, 8):
        z = torch.randn(batch, G.config.z_dim, device=dev)
        torch.cuda.reset_peak_memory_stats(dev) if dev.type == "cuda" else None
        with torch.no_grad():
            t = timed(lambda: G(z), device=dev, repeats=5, warmup=2)
            rows.append({"what": f"{R} px generator ({n_params / 1e6:.1f} M params), batch {batch}, no tokens",
                         "ms_per_image": 1000 * t / batch, "peak_gib": peak(dev)})
            for path in ("materialized", "lowrank"):
                ws = G.mapping(z)
                t = timed(lambda: G.synthesis(ws, tokens=tokens_shared, path=path), device=dev, repeats=5, warmup=2)
                rows.append({"what": f"{R} px generator, batch {batch}, K = 8 tokens on {len(tokens_shared.layers)} layers, {path}",
                             "ms_per_image": 1000 * t / batch, "peak_gib": peak(dev)})
    # One adaptation-like step: gradients reach the shared tokens only (the generator is frozen).
    trainable = G.init_tokens(num_tokens=1, generator=torch.Generator().manual_seed(2))
    params = [t for layer in trainable.layers.values() for t in (layer.p, layer.q)]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=1e-3)
    ws = G.mapping(torch.randn(4, G.config.z_dim, device=dev)).detach()

    def token_step():
        loss = G.synthesis(ws, tokens=trainable).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    t = timed(token_step, device=dev, repeats=5, warmup=2)
    rows.append({"what": f"{R} px token step (K = 1, batch 4, forward + backward + Adam)", "ms_per_image": 1000 * t / 4, "peak_gib": peak(dev)})
    enc = RefineStyleEncoder.from_generator(G, backbone="resnet34", input_resolution=min(256, R), token_input="image").to(dev).eval()
    x = torch.rand(8, 3, R, R, device=dev) * 2 - 1
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    with torch.no_grad():
        t = timed(lambda: enc.invert(x, generator=G), device=dev, repeats=5, warmup=2)
    rows.append({"what": f"ResNet-34 encoder ({sum(p.numel() for p in enc.parameters()) / 1e6:.1f} M params) for it, {min(256, R)} px input, batch 8",
                 "ms_per_image": 1000 * t / 8, "peak_gib": peak(dev)})
    return rows


def peak(dev: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "hub" / "refinestyle-synthfaces")
    parser.add_argument("--fixtures", type=Path, default=ROOT / "tests" / "fixtures" / "stylegan2-tiny")
    parser.add_argument("--device", default="cuda", help="cuda (the point of this script) or cpu (a dry run of the script itself)")
    parser.add_argument("--skip-full-size", action="store_true")
    parser.add_argument("--deterministic-parity", type=int, choices=(0, 1), default=1,
                        help="1: parity checks with cudnn.deterministic (default); 0: with cuDNN's default algorithm choice")
    parser.add_argument("--full-size-resolution", type=int, default=1024, help="smaller only for a dry run on the CPU")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "out" / "gpu.json")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device: nothing to check (the CPU path is what the test suite covers)")
        return
    dev = torch.device(args.device)
    # Parity wants float32 to mean float32 (TF32 convolutions differ from the CPU by about 1e-3), and
    # deterministic algorithms, so that a difference is the code's and not the algorithm choice's.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.deterministic = bool(args.deterministic_parity)
    torch.backends.cudnn.benchmark = False
    env = {"deterministic_parity": bool(args.deterministic_parity), "torch": torch.__version__, "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"}
    print(f"# CUDA path: torch {env['torch']}, {env['device']}\n")
    result: dict = {"env": env, "errors": {}}
    sections = [("parity", lambda: parity_fixtures(args.fixtures, dev) + parity_synthfaces(args.model, dev)),
                ("speed_synthfaces", lambda: speed_synthfaces(args.model, dev))]
    if not args.skip_full_size:
        sections.append(("full_size", lambda: full_size(dev, resolution=args.full_size_resolution)))
    for name, run in sections:
        if name == "speed_synthfaces":
            # Timings with the defaults a user gets (TF32 convolutions on, cuDNN free to pick algorithms).
            torch.backends.cudnn.allow_tf32 = True
            torch.backends.cudnn.deterministic = False
        try:
            result[name] = run()
        except Exception:  # report and go on: one broken section must not hide the others
            result["errors"][name] = traceback.format_exc()
            print(f"## {name}: FAILED\n```\n{result['errors'][name]}```\n")
            continue
        if name == "parity":
            print("| check | value (max abs error unless named) | limit | ok |\n|---|---|---|---|")
            for row in result[name]:
                row["ok"] = row["value"] >= row["limit"] if row.get("higher_is_better") else row["value"] <= row["limit"]
                print(f"| {row['check']} | {row['value']:.3g} | {row['limit']:g} | {'yes' if row['ok'] else 'NO'} |")
        else:
            print(f"\n| {name} | ms / image | peak GiB |\n|---|---|---|")
            for row in result[name]:
                gib = row.get("peak_gib")
                print(f"| {row['what']} | {row['ms_per_image']:.2f} | {'' if gib is None else f'{gib:.2f}'} |")
        sys.stdout.flush()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    bad = [r["check"] for r in result.get("parity", []) if not r["ok"]]
    verdict = ("not measured (the section failed)" if "parity" in result["errors"] else
               "all within tolerance" if not bad else "FAILED: " + "; ".join(bad))
    print(f"\nparity: {verdict}; errors in sections: {sorted(result['errors']) or 'none'}")
    sys.exit(1 if bad or result["errors"] else 0)


if __name__ == "__main__":
    main()
