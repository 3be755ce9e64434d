"""Half-precision synthesis: PSNR against float32 and seconds per image, both kernel paths, with and without a residual.

A config-f generator (channel_base 32768, channel_max 512) with random weights, as the real ones are unavailable
offline, set up so the numbers mean something:

* the conv layers' styles sit near 4 (affine bias 4), where the issue measured float16 synthesis returning all zeros
  at 512 channels (``Σ s²·W0²`` overflows float16 unless the kernel is pre-normalised);
* the toRGB weights are scaled by ``--rgb-scale`` so the float32 images mostly lie inside [-1, 1] (random toRGB
  weights saturate half the pixels, and a PSNR over clamped images would then flatter every precision);
* the residual is a shared (domain) token set of rank ``--tokens`` whose ``P`` is drawn at the layer's kernel scale,
  changing the image by several dB.

The reference is float32 on the materialised path (the two paths agree to about 1e-6 there). PSNR is over the
[-1, 1]-clamped images (data range 2); the time is the median of ``--repeats`` runs after a warm-up, batch 1.
float16 rows run on CUDA (and on the CPU with ``--cpu-fp16``); without a GPU the script says so and skips them.

    python bench/precision.py [--resolutions 256 1024] [--repeats 3] [--threads 1] [--cpu-fp16]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

from refinestyle import StyleGAN2Generator
from refinestyle.models.refinement import TokenSet

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def psnr(img: torch.Tensor, ref: torch.Tensor) -> float:
    """PSNR in dB of ``img`` against ``ref`` over the [-1, 1]-clamped images (data range 2); inf when equal."""
    mse = float((img.float().clamp(-1, 1) - ref.float().clamp(-1, 1)).square().mean())
    return math.inf if mse == 0 else 10 * math.log10(4.0 / mse)


@torch.no_grad()
def precision_generator(resolution: int, *, style_bias: float = 4.0, rgb_scale: float = 0.25, seed: int = 0) -> StyleGAN2Generator:
    """A config-f-width generator with random weights, conv styles near ``style_bias``, toRGB weights times ``rgb_scale``."""
    torch.manual_seed(seed)
    G = StyleGAN2Generator(resolution=resolution, channel_base=32768, channel_max=512).eval()
    for _, layer, _ in G.synthesis.layers():
        if layer.is_torgb:
            layer.weight.mul_(rgb_scale)
        else:
            layer.affine.bias.fill_(style_bias)  # bias_gain is 1: styles = A·w + style_bias
    return G


@torch.no_grad()
def domain_tokens(G: StyleGAN2Generator, *, num_tokens: int = 8, p_std: float = 1.0, seed: int = 1) -> TokenSet:
    """A shared token set over every 3x3 conv with ``P ~ N(0, p_std²)`` (the gain is the layer's kernel scale)."""
    g = torch.Generator().manual_seed(seed)
    tokens = G.init_tokens(num_tokens=num_tokens, generator=g)
    for t in tokens.layers.values():
        t.p.copy_(torch.randn(t.p.shape, generator=g) * p_std)
    return tokens


def cast(G: StyleGAN2Generator, dtype: torch.dtype, device: str) -> StyleGAN2Generator:
    """A copy in ``dtype`` on ``device`` (nn.Module.to, as ``from_pretrained(torch_dtype=...)`` casts)."""
    import copy

    return torch.nn.Module.to(copy.deepcopy(G), device=device, dtype=dtype)


def time_call(fn, *, repeats: int, device: str) -> tuple[float, torch.Tensor]:
    out = fn()  # warm-up
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolutions", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--tokens", type=int, default=8, help="rank of the domain residual")
    parser.add_argument("--style-bias", type=float, default=4.0)
    parser.add_argument("--rgb-scale", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cpu-fp16", action="store_true", help="also run float16 on the CPU (slow there, but torch has it)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available()
    runs = [("fp32", "cpu"), ("bf16", "cpu")] + ([("fp16", "cpu")] if args.cpu_fp16 else [])
    if cuda:
        runs += [("fp32", "cuda"), ("fp16", "cuda"), ("bf16", "cuda")]
    print(f"torch {torch.__version__}, CPU threads: {torch.get_num_threads()}, repeats: {args.repeats} (median), batch 1")
    if not cuda:
        print("fp16 on CUDA: skipped, no CUDA GPU here" + ("" if args.cpu_fp16 else " (--cpu-fp16 runs it on the CPU)"))
    print("\n| res | dtype | device | path | residual | PSNR vs fp32 (dB) | s / image |")
    print("|---|---|---|---|---|---|---|")
    for res in args.resolutions:
        G = precision_generator(res, style_bias=args.style_bias, rgb_scale=args.rgb_scale, seed=args.seed)
        tokens = domain_tokens(G, num_tokens=args.tokens)
        g = torch.Generator().manual_seed(args.seed)
        with torch.no_grad():
            ws = G.mapping(torch.randn(1, G.config.z_dim, generator=g))  # [1, num_ws, w_dim], float32
            refs = {name: G.synthesis(ws, tokens=t, path="materialized") for name, t in (("none", None), ("domain", tokens))}
        clipped = float((refs["none"].abs() > 1).float().mean())
        change = psnr(refs["domain"], refs["none"])
        print(f"| {res} | (reference: fp32 materialised; {100 * clipped:.1f} % of pixels beyond ±1; "
              f"the domain residual alone: {change:.1f} dB from the plain image) | | | | | |", flush=True)
        for dtype_name, device in runs:
            dtype = DTYPES[dtype_name]
            Gd = cast(G, dtype, device)
            ws_d = ws.to(device=device, dtype=dtype)
            tokens_d = tokens.to(device=device, dtype=dtype)
            for residual, t in (("none", None), ("domain", tokens_d)):
                for path in ("materialized", "lowrank"):
                    with torch.no_grad():
                        seconds, img = time_call(lambda: Gd.synthesis(ws_d, tokens=t, path=path),  # noqa: B023
                                                 repeats=args.repeats, device=device)
                    value = psnr(img.cpu(), refs[residual])
                    finite = bool(img.isfinite().all())
                    cell = "non-finite" if not finite else "(reference)" if value == math.inf else f"{value:.2f}"
                    print(f"| {res} | {dtype_name} | {device} | {path} | {residual} | {cell} | {seconds:.3f} |", flush=True)
            del Gd


if __name__ == "__main__":
    main()
