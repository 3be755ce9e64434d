"""RefineStyle: dynamic convolution refinement for StyleGAN2, the Hugging Face way."""

from .convert import CheckpointError, load_stylegan2
from .hub import HubError
from .loops import Cancelled
from .models.domain import DomainTokens
from .models.refinement import LayerTokens, TokenSet
from .models.stylegan2 import StyleGAN2Generator
from .pipeline import RefineStyleModel

__version__ = "0.1.0"
__all__ = [
    "Cancelled",
    "CheckpointError",
    "DomainTokens",
    "HubError",
    "LayerTokens",
    "RefineStyleModel",
    "StyleGAN2Generator",
    "TokenSet",
    "load_stylegan2",
    "__version__",
]
