import importlib.util
import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# Override with REFINESTYLE_TEST_THREADS=1 when something else busies the cores (avoids OpenMP thrashing).
torch.set_num_threads(int(os.environ.get("REFINESTYLE_TEST_THREADS", "2")))

REPO = Path(__file__).resolve().parents[1]
# Reference StyleGAN2 checkpoints (random weights) with their exact outputs; see its README.md.
FIXTURES = REPO / "tests" / "fixtures" / "stylegan2-tiny"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not FIXTURES.exists():
        pytest.fail(f"reference fixtures not found at {FIXTURES}")
    return FIXTURES


def tiny_config(resolution: int = 16, **overrides):
    cfg = dict(z_dim=32, w_dim=32, resolution=resolution, channel_base=256, channel_max=32, mapping_layers=2)
    cfg.update(overrides)
    return cfg


def load_bench_script(name: str):
    """``bench/<name>.py`` as a module: benchmark scripts are files, not a package, and never on ``sys.path``."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_app_module():
    """``app.py`` (the Space's entry file, not part of the package) as the module ``app``; Gradio looks its
    component classes up by module name, so it is registered in ``sys.modules``."""
    import sys

    if "app" not in sys.modules:
        spec = importlib.util.spec_from_file_location("app", REPO / "app.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["app"] = module
        spec.loader.exec_module(module)
    return sys.modules["app"]
