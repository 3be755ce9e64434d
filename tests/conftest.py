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
