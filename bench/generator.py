"""Synthesis speed: plain vs refined (materialised and low-rank paths), K in {4, 16}, batch 1 and 8.

Prints a markdown table (medians of repeated runs) and saves a bar plot to bench/out/generator.png.
The baseline is the fused grouped-conv modulated convolution that rosinality's and NVlabs' pure-PyTorch
(CPU) paths use; in our code that is ``path="materialized"`` with no tokens.

    python bench/generator.py [--repeats 5] [--resolutions 64 256] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from refinestyle import StyleGAN2Generator


def time_call(fn, *, repeats: int, device: str) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def tokens_for(G, batch: int, k: int):
    g = torch.Generator().manual_seed(0)
    t = G.init_tokens(batch_size=batch, num_tokens=k, generator=g)
    for v in t.layers.values():
        v.p.normal_(generator=g)
    return t.to(device=G.mapping.w_avg.device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--resolutions", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--ks", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "out" / "generator.png"))
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []
    print(f"device: {args.device}, torch threads: {torch.get_num_threads()}, repeats: {args.repeats} (median)\n")
    header = "| res | batch | baseline fused (img/s) | plain auto (img/s) | " + " | ".join(
        f"K={k} materialized | K={k} lowrank | K={k} auto (overhead)" for k in args.ks) + " |"
    print(header)
    print("|" + "---|" * (4 + 3 * len(args.ks)))
    for res in args.resolutions:
        G = StyleGAN2Generator(z_dim=512, w_dim=512, resolution=res, mapping_layers=8).eval().to(args.device)
        for batch in args.batches:
            ws = G.mapping(torch.randn(batch, 512, device=args.device))
            with torch.no_grad():
                ips = lambda fn: batch / time_call(fn, repeats=args.repeats, device=args.device)  # noqa: E731
                base = ips(lambda: G.synthesis(ws, path="materialized"))
                plain = ips(lambda: G.synthesis(ws))
                cells = [f"{base:.2f}", f"{plain:.2f}"]
                row = {"res": res, "batch": batch, "baseline": base, "plain": plain}
                for k in args.ks:
                    tok = tokens_for(G, batch, k)
                    mat = ips(lambda: G.synthesis(ws, tokens=tok, path="materialized"))
                    low = ips(lambda: G.synthesis(ws, tokens=tok, path="lowrank"))
                    auto = ips(lambda: G.synthesis(ws, tokens=tok))
                    overhead = 100 * (plain / auto - 1)
                    cells += [f"{mat:.2f}", f"{low:.2f}", f"{auto:.2f} ({overhead:+.0f}%)"]
                    row.update({f"mat{k}": mat, f"low{k}": low, f"auto{k}": auto})
            rows.append(row)
            print(f"| {res} | {batch} | " + " | ".join(cells) + " |", flush=True)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, len(rows), figsize=(3.2 * len(rows), 3.2))
        for ax, row in zip(axes if len(rows) > 1 else [axes], rows):
            keys = ["baseline", "plain"] + [f"{p}{k}" for k in args.ks for p in ("mat", "low", "auto")]
            ax.bar(range(len(keys)), [row[k] for k in keys], color=["grey", "k"] + ["C0", "C1", "C2"] * len(args.ks))
            ax.set_xticks(range(len(keys)), keys, rotation=70, fontsize=7)
            ax.set_title(f"{row['res']} px, batch {row['batch']}", fontsize=9)
            ax.set_ylabel("images/s")
        fig.tight_layout()
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.out, dpi=110)
        print(f"\nplot: {args.out}")
    except ImportError:
        print("(matplotlib missing: no plot)")


if __name__ == "__main__":
    main()
