"""App latency through gradio_client: /invert and /generate round trips (medians), and throughput with
8 concurrent clients. Starts the app in process on 127.0.0.1 with the default model. Result files are not
downloaded (``download_files=False``): the round trip ends when the server has answered with their URLs.

    python bench/app.py [--model hub/refinestyle-synthfaces] [--repeats 10] [--clients 8]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "hub" / "refinestyle-synthfaces"))
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--invert-steps", type=int, default=150, help="optimisation steps when the model has no encoder")
    args = parser.parse_args()
    import app as app_module
    from gradio_client import Client, handle_file

    from refinestyle import RefineStyleModel

    model = RefineStyleModel.from_pretrained(args.model)
    demo = app_module.build_demo(model, invert_steps=args.invert_steps)
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    image = handle_file(str(ROOT / "examples" / "photo-1.png"))
    calls = {
        "/invert": lambda c: c.predict(image, "(none)", 1.0, args.invert_steps, api_name="/invert"),
        "/generate (8 seeds)": lambda c: c.predict("0-7", 0.7, "", 1.0, api_name="/generate"),
    }
    method = "encoder" if model.encoder is not None else f"optimisation, {args.invert_steps} steps"
    print(f"model {args.model} (inversion: {method})\n")
    print(f"| endpoint | median latency (s) | min (s) | throughput with {args.clients} clients (req/s) |")
    print("|---|---|---|---|")
    client = Client(demo.local_url, verbose=False, download_files=False)
    for name, call in calls.items():
        call(client)  # warm-up
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            call(client)
            times.append(time.perf_counter() - t0)
        clients = [Client(demo.local_url, verbose=False, download_files=False) for _ in range(args.clients)]
        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            list(pool.map(call, clients * 2))
        throughput = 2 * args.clients / (time.perf_counter() - t0)
        print(f"| {name} | {statistics.median(times):.3f} | {min(times):.3f} | {throughput:.2f} |", flush=True)
    demo.close()


if __name__ == "__main__":
    main()
