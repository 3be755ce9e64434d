"""Which kernel path is faster, layer by layer: ``modulated_conv2d`` through ``materialized`` and ``lowrank`` for
every 3x3 convolution of a config-f generator (channel_base 32768, channel_max 512), at each batch size, with a
K-token residual, on this machine. ``path="auto"`` (``refinement.choose_path``) should pick the faster one.

    python bench/kernel_paths.py [--resolution 1024] [--batches 1 8] [--tokens 1] [--repeats 3] [--threads 2]

Times are medians of ``--repeats`` calls after a warm-up, in milliseconds per call. The plot (``--plot``, default
``bench/out/kernel_paths.png``) shows both paths per layer for each batch, with the layers ``auto`` picks marked.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from refinestyle.models.refinement import choose_path, modulated_conv2d
from refinestyle.models.stylegan2 import default_channels, fir_filter_2d


def median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolution", type=int, default=1024)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--tokens", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--plot", type=Path, default=Path(__file__).resolve().parent / "out" / "kernel_paths.png")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    channels = default_channels(args.resolution, 32768, 512)
    resample = fir_filter_2d()
    print(f"torch {torch.__version__}, {args.threads} threads, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
          f"K = {args.tokens}\n")
    print("| batch | layer | in → out channels | output px | materialized ms | lowrank ms | faster | auto picks |")
    print("|---|---|---|---|---|---|---|---|")
    rows: list[dict] = []
    for batch in args.batches:
        totals = {"materialized": 0.0, "lowrank": 0.0, "auto": 0.0}
        for idx in range(1, len(channels)):
            res, i, o = 4 * 2**idx, channels[idx - 1], channels[idx]
            for name, cin, up, size in (("conv0", i, True, res // 2), ("conv1", o, False, res)):
                x = torch.randn(batch, cin, size, size, generator=g)  # [N, I, H, W]
                weight = torch.randn(o, cin, 3, 3, generator=g)  # [O, I, k, k]
                styles = 1 + 0.2 * torch.randn(batch, cin, generator=g)  # [N, I]
                p = 0.1 * torch.randn(batch, args.tokens, o, generator=g)  # [N, K, O]
                q = torch.randn(batch, args.tokens, cin * 9, generator=g)  # [N, K, I*k*k]
                ms = {path: median_ms(lambda path=path: modulated_conv2d(
                    x, weight, styles, up=up, resample_filter=resample, residual_p=p, residual_q=q, path=path), args.repeats)
                    for path in ("materialized", "lowrank")}
                auto = choose_path(batch, in_channels=cin, out_channels=o, kernel_size=3, height=size, width=size)
                best = min(ms, key=ms.get)
                totals["materialized"] += ms["materialized"]
                totals["lowrank"] += ms["lowrank"]
                totals["auto"] += ms[auto]
                rows.append({"batch": batch, "layer": f"b{res}.{name}", **ms, "auto": auto})
                print(f"| {batch} | b{res}.{name} | {cin} → {o} | {res} | {ms['materialized']:.1f} | {ms['lowrank']:.1f} | "
                      f"{best} | {auto}{'' if auto == best else ' (slower)'} |", flush=True)
        print(f"| {batch} | **all 3x3 convolutions** | | | {totals['materialized']:.0f} | {totals['lowrank']:.0f} | | "
              f"auto: {totals['auto']:.0f} |", flush=True)
    save_plot(rows, args.batches, args.plot)


def save_plot(rows: list[dict], batches: list[int], path: Path) -> None:
    """Milliseconds per layer on both paths, one panel per batch; a ring marks the path ``auto`` picks."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib missing: no plot)")
        return
    fig, axes = plt.subplots(1, len(batches), figsize=(5.5 * len(batches), 3.6), squeeze=False)
    for ax, batch in zip(axes[0], batches):
        part = [r for r in rows if r["batch"] == batch]
        xs = range(len(part))
        for kernel_path, colour in (("materialized", "C0"), ("lowrank", "C1")):
            ax.plot(xs, [r[kernel_path] for r in part], marker="o", ms=3, color=colour, label=kernel_path)
        ax.scatter(xs, [r[r["auto"]] for r in part], s=60, facecolors="none", edgecolors="k", label="auto picks")
        ax.set_xticks(list(xs), [r["layer"] for r in part], rotation=70, fontsize=6)
        ax.set_yscale("log")
        ax.set_ylabel("ms per call")
        ax.set_title(f"batch {batch}", fontsize=9)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"\nplot: {path}")


if __name__ == "__main__":
    main()
