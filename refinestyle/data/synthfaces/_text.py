"""Captions of SynthFaces images and the canonical prompt of each style."""

from __future__ import annotations

import random

from ._params import EYE_COLORS, HAIR_COLORS, FaceParams, attribute_labels, decode
from ._render import _check_style

_STYLE_PROMPTS: dict[str, str] = {
    "photo": "a photo of a face",
    "sketch": "a pencil sketch of a face",
    "popart": "a pop art painting of a face",
    "pixelart": "a pixel art image of a face",
    "zombie": "a zombie face",
    "watercolor": "a watercolor painting of a face",
}

_STYLE_PHRASES: dict[str, tuple[str, ...]] = {
    "photo": ("a photo of", "a photograph of", "a portrait photo of", "a picture of", "a close-up photo of"),
    "sketch": ("a pencil sketch of", "a sketch of", "a pencil drawing of", "a graphite sketch of", "a drawing of"),
    "popart": ("a pop art painting of", "a pop art portrait of", "a pop art image of", "a comic pop art picture of"),
    "pixelart": ("a pixel art image of", "a pixel art portrait of", "an 8-bit pixel art picture of", "a pixel art sprite of"),
    "watercolor": ("a watercolor painting of", "a watercolour portrait of", "a soft watercolor of", "a watercolor of"),
}
_ZOMBIE_NOUNS = ("a zombie", "a zombie face", "an undead zombie", "a rotting zombie face", "a scary zombie")
_NOUNS = ("face", "person", "cartoon face", "head", "character")

_HAIR_WORDS: dict[str, tuple[str, ...]] = {
    "black": ("black", "dark"),
    "brown": ("brown", "brunette"),
    "blond": ("blond", "blonde", "golden"),
    "red": ("red", "ginger"),
    "grey": ("grey", "gray", "silver"),
    "blue": ("blue", "bright blue"),
}
_HUE_NAMES = ("red", "orange", "yellow", "green", "green", "teal", "blue", "blue", "purple", "pink")


def style_prompt(style: str) -> str:
    """The canonical short prompt of a style, e.g. ``"a pencil sketch of a face"``.

    Examples:

    ```python
    >>> from refinestyle.data.synthfaces import style_prompt
    >>> style_prompt("sketch")
    'a pencil sketch of a face'

    ```
    """
    return _STYLE_PROMPTS[_check_style(style)]


def style_words() -> frozenset[str]:
    """The words the captions use to name a style ("pencil", "sketch", "watercolour", "pixel", "zombie", ...):
    a prompt needs one of them for a guide trained on these captions to know which style is meant."""
    phrases = [p for group in _STYLE_PHRASES.values() for p in group] + list(_ZOMBIE_NOUNS)
    words = {w for p in phrases for w in p.replace("-", " ").split()}
    return frozenset(words - {"a", "an", "of", "close", "up", "soft", "face", "image", "picture", "portrait"})


def _hue_name(h: float) -> str:
    return _HUE_NAMES[int(h * len(_HUE_NAMES)) % len(_HUE_NAMES)]


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def caption(params: FaceParams, style: str = "photo", *, seed: int | None = None) -> list[str]:
    """One caption per face, with varied wording.

    Glasses are always mentioned when worn ("with glasses", "wearing glasses") and otherwise either
    omitted or negated ("without glasses", "no glasses"); the expression (smiling / neutral), hair
    and eye colour and the background are mentioned or omitted at random; hats, face paint and
    exotic colours are always mentioned when present (strength > 0.5).

    Args:
        params (`FaceParams`): the faces.
        style (`str`, defaults to `"photo"`): one of `STYLES`.
        seed (`int`, *optional*): wording seed. Captions are a deterministic function of
            (seed, style, face); `None` means seed 0. Change it (e.g. per epoch) for new wordings.

    Examples:

    ```python
    >>> from refinestyle.data.synthfaces import caption, sample_params
    >>> caps = caption(sample_params(3, seed=0), "sketch", seed=1)
    >>> len(caps), caps == caption(sample_params(3, seed=0), "sketch", seed=1)
    (3, True)

    ```
    """
    if not isinstance(params, FaceParams):
        raise TypeError(f"params must be a FaceParams, got {type(params).__name__}")
    style = _check_style(style)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"seed must be an int or None, got {type(seed).__name__}")
    seed = 0 if seed is None else seed
    labels = {k: v.tolist() for k, v in attribute_labels(params).items()}
    dec = decode(params.to("cpu"))
    smile_val = dec["smile"].tolist()
    bg_hue = dec["background_hue"].tolist()
    u_rows = params.u.cpu().tolist()
    out = []
    for i in range(params.n):
        key = f"{seed}|{style}|" + ",".join(f"{x:.6f}" for x in u_rows[i])
        rng = random.Random(key)
        hair_color = HAIR_COLORS[labels["hair_color"][i]]
        hair_style = ("short", "long", "bob", "buzz")[labels["hair_style"][i]]
        extras: list[str] = []
        # hair
        if rng.random() < 0.8 or labels["exotic_color"][i]:
            word = rng.choice(_HAIR_WORDS[hair_color])
            if labels["exotic_color"][i]:
                word = "brightly dyed"
            if hair_style == "bob":
                extras.append(rng.choice((f"a {word} bob", f"{word} bob-cut hair")))
            elif hair_style == "buzz":
                extras.append(rng.choice((f"a {word} buzz cut", f"very short {word} hair")))
            else:
                extras.append(rng.choice((f"{hair_style} {word} hair", f"{word} hair")))
        # eyes
        if rng.random() < 0.35:
            extras.append(f"{EYE_COLORS[labels['eye_color'][i]]} eyes")
        # glasses
        if labels["glasses"][i]:
            extras.append(rng.choice(("glasses", "eyeglasses", "a pair of glasses")))
            glasses_verb = rng.random() < 0.4
        else:
            glasses_verb = False
            if rng.random() < 0.7:
                extras.append(rng.choice(("no glasses", "without glasses")))
        # out of domain
        if labels["hat"][i]:
            extras.append("a hat")
        if labels["face_paint"][i]:
            extras.append(rng.choice(("face paint", "painted stripes on the cheeks")))
        if labels["exotic_color"][i]:
            extras.append(f"{_hue_name((bg_hue[i] + 0.37) % 1.0)} skin")
        rng.shuffle(extras)
        # glasses "without"/"no" phrases must not be swallowed by a "with": keep them last
        extras.sort(key=lambda e: e in ("no glasses", "without glasses"))
        # expression
        smiling = bool(labels["smile"][i])
        expr = None
        if rng.random() < 0.8:
            if smiling:
                expr = rng.choice(("smiling", "happy", "grinning" if smile_val[i] > 0.7 else "smiling", "cheerful"))
            else:
                expr = rng.choice(("neutral", "serious", "unsmiling", "calm"))
        # subject
        if style == "zombie":
            subject = rng.choice(_ZOMBIE_NOUNS)
            if expr is not None and rng.random() < 0.5:
                art = "an" if expr[0] in "aeiou" else "a"
                subject = subject.replace("a zombie", f"{art} {expr} zombie").replace("an undead", f"{art} {expr} undead")
                subject = subject.replace("a rotting", f"{art} {expr} rotting").replace("a scary", f"a scary {expr}")
                expr = None
        else:
            noun = rng.choice(_NOUNS)
            lead = rng.choice(_STYLE_PHRASES[style])
            if expr is not None and rng.random() < 0.75:
                art = "an" if expr[0] in "aeiou" else "a"
                subject = f"{lead} {art} {expr} {noun}"
                expr = None
            else:
                art = "an" if noun[0] in "aeiou" else "a"
                subject = f"{lead} {art} {noun}"
        text = subject
        negative = [e for e in extras if e in ("no glasses", "without glasses")]
        positive = [e for e in extras if e not in negative]
        if positive:
            if glasses_verb:
                glasses = [e for e in positive if "glasses" in e]
                rest = [e for e in positive if "glasses" not in e]
                text += (" with " + _join(rest) + "," if rest else "") + " wearing " + glasses[0]
            else:
                text += " with " + _join(positive)
        if negative:
            text += ", " + negative[0] if positive else " " + rng.choice(("with no glasses", "without glasses"))
        if expr is not None:
            if expr in ("smiling", "grinning", "unsmiling"):
                text += f", {expr}"
            else:
                text += rng.choice((f", {expr}", f", looking {expr}"))
        if rng.random() < 0.25:
            text += f", on a {_hue_name(bg_hue[i])} background"
        out.append(text)
    return out


__all__ = ["caption", "style_prompt"]
