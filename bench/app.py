"""The app under load, as a public Space sees it: many clients, adaptations running, one cancelled.

16 clients each send 25 mixed requests (/invert and /generate, in a seeded random order) while two
adaptations run (--max-adaptations 2) and one of them is cancelled through gradio_client partway. Prints
failures (which must be 0), latency p50/p95 per endpoint, the process's RSS before and after, how long
the cancelled optimisation took to stop, and the CPU the process used in the seconds after a cancel on an
otherwise idle app. The app runs in process on 127.0.0.1 with the default model; result files are not
downloaded (``download_files=False``).

    python bench/app.py [--model hub/refinestyle-synthfaces] [--clients 16] [--requests 25] [--json bench/out/app.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import resource
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]


def load_app_module():
    """app.py is the Space's entry file, not part of the package: load it from the repository."""
    spec = importlib.util.spec_from_file_location("app", ROOT / "app.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["app"] = module  # Gradio looks its components' classes up by module name
    spec.loader.exec_module(module)
    return module


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def adapt_threads() -> int:
    return sum(t.name.startswith("adapt-") and t.is_alive() for t in threading.enumerate())


def wait_for(predicate, timeout: float) -> float | None:
    """Seconds until ``predicate()`` holds, or None after ``timeout``."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if predicate():
            return time.perf_counter() - t0
        time.sleep(0.02)
    return None


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def mixed_load(url: str, *, clients: int, requests: int, image) -> tuple[dict[str, list[float]], list[str]]:
    from gradio_client import Client

    calls = {
        "/invert": lambda c: c.predict(image, "(none)", 1.0, 150, api_name="/invert"),
        "/generate": lambda c: c.predict("0-7", 0.7, "", 1.0, api_name="/generate"),
    }
    latencies: dict[str, list[float]] = {name: [] for name in calls}
    failures: list[str] = []
    lock = threading.Lock()

    def one_client(index: int) -> None:
        client = Client(url, verbose=False, download_files=False)
        order = random.Random(index).choices(sorted(calls), k=requests)
        for name in order:
            t0 = time.perf_counter()
            try:
                calls[name](client)
            except Exception as err:  # counted, not raised: the table reports them
                with lock:
                    failures.append(f"{name}: {type(err).__name__}: {str(err)[:120]}")
                continue
            with lock:
                latencies[name].append(time.perf_counter() - t0)

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one_client, range(clients)))
    return latencies, failures


def cancel_on_idle_app(url: str, *, seconds_before_cancel: float = 3.0) -> dict:
    """One adaptation on an otherwise idle app, cancelled: time until it stops, CPU in the seconds after."""
    from gradio_client import Client

    client = Client(url, verbose=False, download_files=False)
    job = client.submit("a photo of a face", "a pencil sketch of a face", None, 300, 0, 0, "to-cancel", api_name="/adapt")
    wait_for(lambda: adapt_threads() > 0, 60)
    time.sleep(seconds_before_cancel)
    job.cancel()
    t_cancel, cpu_at_cancel = time.perf_counter(), cpu_seconds()
    stopped = wait_for(lambda: adapt_threads() == 0, 30)
    time.sleep(max(0.0, 2.0 - (time.perf_counter() - t_cancel)))
    cpu_0_2 = (cpu_seconds() - cpu_at_cancel) / (time.perf_counter() - t_cancel)
    cpu_at_2 = cpu_seconds()
    time.sleep(2.0)
    cpu_2_4 = (cpu_seconds() - cpu_at_2) / 2.0
    return {"stop_seconds": stopped, "cpu_cores_0_2s": cpu_0_2, "cpu_cores_2_4s": cpu_2_4}


def sequential_adaptations(url: str, *, count: int, steps: int = 20) -> list[float]:
    """RSS after each of ``count`` short adaptations from one visitor: does the app give memory back?"""
    from gradio_client import Client

    client = Client(url, verbose=False, download_files=False)
    rss = [rss_mb()]
    for i in range(count):
        client.predict("a photo of a face", "a zombie face", None, steps, 0, i, f"seq-{i}", api_name="/adapt")
        rss.append(rss_mb())
    return rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "hub" / "refinestyle-synthfaces"))
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=25, help="requests per client")
    parser.add_argument("--cancel-after", type=float, default=10.0, help="seconds into the load when one adaptation is cancelled")
    parser.add_argument("--sequential", type=int, default=8, help="short adaptations in a row, RSS after each")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "out" / "app.json")
    args = parser.parse_args()
    from gradio_client import Client, handle_file

    from refinestyle import RefineStyleModel

    app_module = load_app_module()
    model = RefineStyleModel.from_pretrained(args.model)
    demo = app_module.build_demo(model, max_adaptations=2)
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    image = handle_file(str(ROOT / "examples" / "photo-1.png"))
    warm = Client(demo.local_url, verbose=False, download_files=False)
    warm.predict(image, "(none)", 1.0, 150, api_name="/invert")
    warm.predict("0-7", 0.7, "", 1.0, api_name="/generate")
    rss_before = rss_mb()

    adapters = [Client(demo.local_url, verbose=False, download_files=False) for _ in range(2)]
    kept = adapters[0].submit("a photo of a face", "a pencil sketch of a face", None, 60, 0, 0, "kept", api_name="/adapt")
    dropped = adapters[1].submit("a photo of a face", "a zombie face", None, 300, 0, 1, "dropped", api_name="/adapt")
    cancel_report: dict = {}

    def cancel_later():
        time.sleep(args.cancel_after)
        running = adapt_threads()
        dropped.cancel()
        cancel_report["stop_seconds"] = wait_for(lambda: adapt_threads() < running, 30)

    canceller = threading.Thread(target=cancel_later)
    canceller.start()
    t0 = time.perf_counter()
    latencies, failures = mixed_load(demo.local_url, clients=args.clients, requests=args.requests, image=image)
    load_seconds = time.perf_counter() - t0
    canceller.join()
    try:
        kept_status = kept.result(timeout=900)[2]
    except Exception as err:
        failures.append(f"/adapt (kept): {type(err).__name__}: {err}")
        kept_status = "failed"
    rss_after = rss_mb()
    idle_cancel = cancel_on_idle_app(demo.local_url)
    sequential_rss = sequential_adaptations(demo.local_url, count=args.sequential)
    demo.close()

    total = sum(len(v) for v in latencies.values()) + len(failures)
    print(f"model {Path(args.model).name}; {args.clients} clients x {args.requests} requests ({total} in {load_seconds:.0f} s) "
          f"while 2 adaptations run and 1 is cancelled after {args.cancel_after:g} s; {os.cpu_count()} CPUs, "
          f"torch threads {__import__('torch').get_num_threads()}\n")
    print("| endpoint | requests | failures | p50 (s) | p95 (s) |")
    print("|---|---|---|---|---|")
    for name, values in latencies.items():
        fails = sum(f.startswith(name) for f in failures)
        print(f"| {name} | {len(values) + fails} | {fails} | {statistics.median(values):.3f} | {percentile(values, 0.95):.3f} |")
    print(f"\n| measure | value |\n|---|---|\n| failures (all endpoints) | {len(failures)} |")
    print(f"| kept adaptation (60 steps) | {'ready' if 'ready' in kept_status else kept_status} |")
    stop = cancel_report.get("stop_seconds")
    print(f"| cancelled adaptation stopped, under load (s) | {stop:.2f} |" if stop is not None else "| cancelled adaptation stopped | no (30 s) |")
    print(f"| RSS before / after the load (MB) | {rss_before:.0f} / {rss_after:.0f} |")
    stop_idle = idle_cancel["stop_seconds"]
    print(f"| idle app: cancelled adaptation stopped (s) | {stop_idle:.2f} |" if stop_idle is not None else "| idle app: stopped | no |")
    print(f"| idle app: CPU 0-2 s / 2-4 s after the cancel (cores) | {idle_cancel['cpu_cores_0_2s']:.2f} / "
          f"{idle_cancel['cpu_cores_2_4s']:.2f} |")
    print(f"| RSS before / after {args.sequential} more adaptations in a row, 20 steps each (MB) | "
          f"{sequential_rss[0]:.0f} / {sequential_rss[-1]:.0f} (max {max(sequential_rss):.0f}) |")
    for failure in failures[:10]:
        print("failure:", failure)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"latencies": latencies, "failures": failures, "load_seconds": load_seconds,
                                     "rss_mb": [rss_before, rss_after], "cancel_under_load": cancel_report,
                                     "cancel_idle": idle_cancel, "kept_status": kept_status,
                                     "sequential_rss_mb": sequential_rss}, indent=1))


if __name__ == "__main__":
    main()
