"""Full-size models on a small machine: 256 and 1024 px config-f generators with the real CLIP architectures.

Random weights throughout (the real ones cannot be downloaded offline): the generator is StyleGAN2 config-f
(512-d z and w, 8 mapping layers, channel_base 32768, channel_max 512), the guides are open_clip's ViT-B-32 and
ViT-B-16 built with ``pretrained=None`` (StyleGAN-NADA's pair: real shapes, preprocessing and cost). Every case runs in
its own process, so the peak memory reported is that case's (resident set size, imports and models included).

* generate, batch 1 and 8: the baseline is the plain modulated convolution as NVlabs' and rosinality's pure-PyTorch
  paths compute it (one grouped convolution per layer; ours with ``path="materialized"`` and no tokens), beside
  RefineStyle with a K = 1 domain on every layer (``path="auto"``), in float32 and bfloat16 (float16 on CUDA);
* optimisation inversion, seconds per step (batch 1, W+ steps: forward, backward, Adam);
* adaptation, seconds per step at batch 2 with one augmented view (``model.adapt``'s loop, both guides), with the
  guide reading the full image (``guide_resolution`` = the generator's) and the 256 px skip image (the default);
* agreement of the two: after ``--agree-steps`` steps each way on the 1024 px generator, the directional score of
  the final 1024 px images under the guides, ``cos(E(G_d) - E(G), E(target) - E(source))`` on 8 held-out faces,
  and the PSNR between the two domains' images.

    python bench/full_size.py [--resolutions 256 1024] [--repeats 3] [--threads 2] [--agree-steps 8]

Medians of ``--repeats`` timed runs after a warm-up (adaptation: of the steps after the first). The plot
(``--plot``, default ``bench/out/full_size.png``) shows seconds and peak memory of every call at each resolution.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

CLIP_ARCHS = ("ViT-B-32", "ViT-B-16")
SOURCE, TARGET = "a photo of a face", "a pencil sketch of a face"


def generator(resolution: int, device: str):
    """Config-f at ``resolution`` with random weights; toRGB scaled so the images mostly lie inside [-1, 1]."""
    from refinestyle import StyleGAN2Generator

    torch.manual_seed(0)
    G = StyleGAN2Generator(z_dim=512, w_dim=512, resolution=resolution, mapping_layers=8,
                           channel_base=32768, channel_max=512).eval()
    with torch.no_grad():
        G.mapping.w_avg.copy_(G.mapping.w(torch.randn(1000, 512)).mean(0))
        for _, layer, _ in G.synthesis.layers():
            if layer.is_torgb:
                layer.weight.mul_(0.25)
    return G.requires_grad_(False).to(device)


def model_with_guides(G, device: str):
    from refinestyle import RefineStyleModel
    from refinestyle.clip import CLIPGuide

    torch.manual_seed(1)
    clips = [CLIPGuide.from_open_clip(arch, None, device=device) for arch in CLIP_ARCHS]
    model = RefineStyleModel(generator=G, clip=clips[0])
    model.extra_clips = clips[1:]  # the losses average over both, as StyleGAN-NADA's do
    return model


def one_token_domain(G):
    """A K = 1 shared token set on every refined layer with a non-zero residual."""
    g = torch.Generator().manual_seed(2)
    tokens = G.init_tokens(num_tokens=1, generator=g)
    for t in tokens.layers.values():
        t.p.copy_(torch.randn(t.p.shape, generator=g) * 0.5)
    return tokens


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn, *, repeats: int, device: str) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def case_generate(*, resolution: int, batch: int, dtype: str, mode: str, repeats: int, device: str) -> dict:
    G = generator(resolution, device)
    tokens = one_token_domain(G).to(device=device) if mode == "refined" else None
    G = torch.nn.Module.to(G, getattr(torch, dtype))  # as from_pretrained(torch_dtype=...) casts
    tokens = tokens.to(dtype=getattr(torch, dtype)) if tokens is not None else None
    ws = G.mapping(torch.randn(batch, 512, generator=torch.Generator().manual_seed(3)).to(device, G.mapping.w_avg.dtype))
    path = "materialized" if mode == "baseline" else "auto"
    with torch.no_grad():
        seconds = timed(lambda: G.synthesis(ws, tokens=tokens, path=path), repeats=repeats, device=device)
    return {"seconds_per_image": seconds / batch}


def case_invert(*, resolution: int, repeats: int, device: str) -> dict:
    from refinestyle.inversion import invert_optimize

    G = generator(resolution, device)
    with torch.no_grad():
        target = G.synthesis(G.mapping(torch.randn(1, 512, generator=torch.Generator().manual_seed(4)).to(device)))
    seconds = []
    last = [time.perf_counter()]

    def tick(step, total, state):
        _sync(device)
        now = time.perf_counter()
        seconds.append(now - last[0])
        last[0] = now

    invert_optimize(G, target, w_steps=repeats + 1, token_steps=0, callback=tick)
    return {"seconds_per_step": statistics.median(seconds[1:])}


def _adapt(model, *, guide_resolution: int, steps: int, on_step=None):
    return model.adapt(SOURCE, TARGET, steps=steps, batch=2, augment_views=1, suggest_strength=False,
                       guide_resolution=guide_resolution, callback=on_step)


def case_adapt(*, resolution: int, guide_resolution: int, repeats: int, device: str) -> dict:
    model = model_with_guides(generator(resolution, device), device)
    marks = []
    _adapt(model, guide_resolution=guide_resolution, steps=repeats + 1,
           on_step=lambda step, total, state: marks.append(state.seconds))
    return {"seconds_per_step": statistics.median([b - a for a, b in zip(marks, marks[1:])])}


def case_agreement(*, resolution: int, steps: int, device: str) -> dict:
    from refinestyle.adaptation import suggest_strength
    from refinestyle.evaluation import psnr

    model = model_with_guides(generator(resolution, device), device)
    G = model.generator
    domains = {r: _adapt(model, guide_resolution=r, steps=steps) for r in (resolution, 256)}
    out = {}
    ws = G.mapping(torch.randn(4, 512, generator=torch.Generator().manual_seed(5)).to(device))
    images = {}
    for r, dom in domains.items():
        # Scored at full size (resolution=None) on held-out faces, whatever the guide read during the run.
        found = suggest_strength(G, model.clips, dom, source=SOURCE, target=TARGET, faces=8, step=1.0, max_strength=1.0)
        out[f"directional_{r}"] = found.directional[0]
        with torch.no_grad():
            images[r] = G.synthesis(ws, tokens=[(dom.token_set(), 1.0)])
        out[f"layers_{r}"] = len(dom.config.layers)
    with torch.no_grad():
        plain = G.synthesis(ws)
    out["psnr_between"] = float(psnr(images[resolution], images[256]).mean())
    out["psnr_full_vs_plain"] = float(psnr(images[resolution], plain).mean())
    out["psnr_early_vs_plain"] = float(psnr(images[256], plain).mean())
    return out


CASES = {"generate": case_generate, "invert": case_invert, "adapt": case_adapt, "agreement": case_agreement}


def _worker(name: str, kwargs: dict, threads: int, queue) -> None:
    torch.set_num_threads(threads)
    try:
        result = CASES[name](**kwargs)
        result["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes
        if kwargs.get("device") == "cuda":
            result["peak_gpu_gb"] = torch.cuda.max_memory_allocated() / 2**30
    except Exception as err:  # reported in the table, the other cases go on
        result = {"error": f"{type(err).__name__}: {err}"}
    queue.put(result)


def run_case(name: str, *, threads: int, **kwargs) -> dict:
    """One case in a fresh process (its own peak memory)."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_worker, args=(name, kwargs, threads, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def _cell(result: dict, key: str, fmt: str = "{:.2f}") -> str:
    if "error" in result:
        return f"error: {result['error'][:80]}"
    return fmt.format(result[key])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolutions", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--agree-steps", type=int, default=8, help="adaptation steps each way for the agreement (0: skip)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--calls", nargs="+", choices=["generate", "steps"], default=["generate", "steps"],
                        help="generate: the generation table; steps: inversion, adaptation and the agreement")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8], help="generation batch sizes")
    parser.add_argument("--plot", type=Path, default=Path(__file__).resolve().parent / "out" / "full_size.png")
    args = parser.parse_args()
    half = "float16" if args.device == "cuda" else "bfloat16"
    common = dict(threads=args.threads, device=args.device)
    print(f"device: {args.device}, torch {torch.__version__}, threads: {args.threads}, medians of {args.repeats}; "
          f"guides: {', '.join(CLIP_ARCHS)} (random weights)\n")

    measured: list[tuple[str, int, dict]] = []
    if "generate" in args.calls:
        measured += generation_table(args, half, common)
    if "steps" in args.calls:
        measured += step_tables(args, common)
    sys.stdout.flush()
    save_plot(measured, args.plot)


def save_plot(measured: list[tuple[str, int, dict]], path: Path) -> None:
    """Two panels: seconds per call (s / image for generation, s / step for the loops) and peak memory, a bar per
    call and resolution; failed cases are left out."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib missing: no plot)")
        return
    ok = [(call, res, r) for call, res, r in measured if "error" not in r]
    if not ok:
        return
    calls = list(dict.fromkeys(call for call, _, _ in ok))
    resolutions = sorted({res for _, res, _ in ok})
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    width = 0.8 / len(resolutions)
    for i, res in enumerate(resolutions):
        by_call = {call: r for call, rr, r in ok if rr == res}
        xs = [c + (i - (len(resolutions) - 1) / 2) * width for c in range(len(calls))]
        seconds = [by_call[c].get("seconds_per_image", by_call[c].get("seconds_per_step", 0.0)) if c in by_call else 0.0 for c in calls]
        memory = [by_call[c]["peak_mb"] / 1024 if c in by_call else 0.0 for c in calls]
        axes[0].bar(xs, seconds, width, label=f"{res} px")
        axes[1].bar(xs, memory, width, label=f"{res} px")
    for ax, label in ((axes[0], "seconds (per image or per step)"), (axes[1], "peak memory (GB)")):
        ax.set_xticks(range(len(calls)), calls, rotation=30, ha="right", fontsize=7)
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"\nplot: {path}")


def generation_table(args, half: str, common: dict) -> list[tuple[str, int, dict]]:
    print("| res | call | baseline: plain modconv, float32 | RefineStyle K = 1, float32 | RefineStyle K = 1, "
          f"{half} | peak MB (RefineStyle, float32) |")
    print("|---|---|---|---|---|---|")
    measured = []
    for res in args.resolutions:
        for batch in args.batches:
            base = run_case("generate", resolution=res, batch=batch, dtype="float32", mode="baseline", repeats=args.repeats, **common)
            ours = run_case("generate", resolution=res, batch=batch, dtype="float32", mode="refined", repeats=args.repeats, **common)
            ours_half = run_case("generate", resolution=res, batch=batch, dtype=half, mode="refined", repeats=args.repeats, **common)
            print(f"| {res} | generate, batch {batch}: s / image | {_cell(base, 'seconds_per_image')} | "
                  f"{_cell(ours, 'seconds_per_image')} | {_cell(ours_half, 'seconds_per_image')} | "
                  f"{_cell(ours, 'peak_mb', '{:.0f}')} |", flush=True)
            measured += [(f"generate b{batch}, plain", res, base), (f"generate b{batch}, K=1", res, ours),
                         (f"generate b{batch}, K=1 {half}", res, ours_half)]
    return measured


def step_tables(args, common: dict) -> list[tuple[str, int, dict]]:
    print("\n| res | call | s / step | peak MB |")
    print("|---|---|---|---|")
    measured = []
    for res in args.resolutions:
        inv = run_case("invert", resolution=res, repeats=args.repeats, **common)
        print(f"| {res} | optimisation inversion, batch 1 | {_cell(inv, 'seconds_per_step')} | {_cell(inv, 'peak_mb', '{:.0f}')} |",
              flush=True)
        measured.append(("inversion step", res, inv))
        for guide_res in sorted({res, min(res, 256)}, reverse=True):
            what = "full image" if guide_res == res else f"{guide_res} px skip image (default)"
            ad = run_case("adapt", resolution=res, guide_resolution=guide_res, repeats=args.repeats, **common)
            print(f"| {res} | adaptation, batch 2, guides read the {what} | {_cell(ad, 'seconds_per_step')} | "
                  f"{_cell(ad, 'peak_mb', '{:.0f}')} |", flush=True)
            measured.append(("adaptation step, full image" if guide_res == res else "adaptation step, 256 px skip", res, ad))

    big = max(args.resolutions)
    if args.agree_steps and big > 256:
        agree = run_case("agreement", resolution=big, steps=args.agree_steps, **common)
        print(f"\nAgreement at {big} px after {args.agree_steps} steps each way (scored on the final {big} px images):\n")
        if "error" in agree:
            print(f"error: {agree['error']}")
        else:
            print("| guide reads | layers refined | directional score at full size | PSNR vs the plain generator (dB) |")
            print("|---|---|---|---|")
            print(f"| full {big} px image | {agree[f'layers_{big}']} | {agree[f'directional_{big}']:.4f} | {agree['psnr_full_vs_plain']:.1f} |")
            print(f"| 256 px skip image | {agree['layers_256']} | {agree['directional_256']:.4f} | {agree['psnr_early_vs_plain']:.1f} |")
            print(f"\nPSNR between the two domains' {big} px images: {agree['psnr_between']:.1f} dB")
    return measured


if __name__ == "__main__":
    main()
