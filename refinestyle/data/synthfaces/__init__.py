"""SynthFaces: a procedural, deterministic, vectorised renderer of cartoon faces (pure torch).

The offline world of RefineStyle (see DESIGN.md section 4): faces drawn from a parameter vector,
in a ``photo`` style (the generator's domain) and several out-of-domain styles that keep the same
geometry, with part masks, attribute labels and captions.

Examples:

```python
>>> from refinestyle.data.synthfaces import render, sample_params, caption, params_to_z
>>> params = sample_params(4, seed=0)
>>> images = render(params, style="photo", resolution=64)     # [4, 3, 64, 64] in [-1, 1]
>>> z = params_to_z(params)                                   # the generator latent of each face
>>> sketches = render(params, style="sketch", resolution=64)  # the same faces, out of domain
>>> len(caption(params, "sketch", seed=0))
4

```
"""

from __future__ import annotations

from ._params import (
    ATTRIBUTES,
    CONTINUOUS_RANGES,
    EYE_COLORS,
    GLASSES_THRESHOLD,
    HAIR_COLORS,
    HAIR_STYLES,
    OOD_FIELDS,
    SMILE_THRESHOLD,
    FaceParams,
    attribute_labels,
    categorical_z_edges,
    decode,
    params_to_z,
    sample_params,
    z_to_params,
)
from ._render import MASK_NAMES, STYLES, render, sprite_resolution
from ._text import caption, style_prompt, style_words

__all__ = [
    "ATTRIBUTES",
    "CONTINUOUS_RANGES",
    "EYE_COLORS",
    "GLASSES_THRESHOLD",
    "HAIR_COLORS",
    "HAIR_STYLES",
    "MASK_NAMES",
    "OOD_FIELDS",
    "SMILE_THRESHOLD",
    "STYLES",
    "FaceParams",
    "attribute_labels",
    "caption",
    "categorical_z_edges",
    "decode",
    "params_to_z",
    "render",
    "sample_params",
    "sprite_resolution",
    "style_prompt",
    "style_words",
    "z_to_params",
]
