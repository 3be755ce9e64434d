"""RefineStyle: dynamic convolution refinement for StyleGAN2, the Hugging Face way."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# Public name → the module that defines it, imported on first use. The models subclass diffusers' ModelMixin, and
# any diffusers import costs more than a second beyond torch (diffusers.utils imports torch._dynamo and scans the
# installed packages), which `refinestyle --help` and `import refinestyle.images` need not pay.
_EXPORTS = {
    "Cancelled": ".loops",
    "CheckpointError": ".convert",
    "load_stylegan2": ".convert",
    "HubError": ".hub",
    "DomainTokens": ".models.domain",
    "LayerTokens": ".models.refinement",
    "TokenSet": ".models.refinement",
    "StyleGAN2Generator": ".models.stylegan2",
    "RefineStyleModel": ".pipeline",
}
__all__ = [*sorted(_EXPORTS), "__version__"]

if TYPE_CHECKING:  # what type checkers and IDEs see
    from .convert import CheckpointError, load_stylegan2
    from .hub import HubError
    from .loops import Cancelled
    from .models.domain import DomainTokens
    from .models.refinement import LayerTokens, TokenSet
    from .models.stylegan2 import StyleGAN2Generator
    from .pipeline import RefineStyleModel


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups find it without coming here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
