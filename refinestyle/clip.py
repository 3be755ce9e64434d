"""One interface over open_clip models: our small offline SynthFaces CLIP, or real ones (ViT-B/32 ...).

``CLIPGuide.encode_image`` takes generator-range images ``[N, 3, H, W]`` in [-1, 1] and
``encode_text`` a list of strings; both return L2-normalised embeddings, differentiable w.r.t. images.

Our CLIP is an open_clip model with a custom config registered from this package
(``refinestyle/clip_configs``), stored as ``open_clip_config.json`` + ``open_clip_model.safetensors``
+ ``vocab.json`` (a word-level tokenizer built from the SynthFaces caption vocabulary).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from .hub import (HubError, check_use_safetensors, load_safetensors, read_json, resolve_repo, save_safetensors, storage_dtype,
                  strict_load, variant_file, weights_path)

CONFIG_DIR = Path(__file__).resolve().parent / "clip_configs"
SYNTHFACES_CLIP = "RefineStyle-SynthFaces-CLIP"
SYNTHFACES_CLIP_VIT = "RefineStyle-SynthFaces-CLIP-ViT"
# Registered configs by architecture (``refinestyle.train.clip --arch``): the ResNet is the main guide,
# the ViT a second opinion (adversarial pixel patterns rarely fool both).
SYNTHFACES_CLIP_CONFIGS = {"resnet": SYNTHFACES_CLIP, "vit": SYNTHFACES_CLIP_VIT}
CLIP_CONFIG = "open_clip_config.json"
CLIP_WEIGHTS = "open_clip_model.safetensors"
VOCAB = "vocab.json"
MAX_PROMPT_CHARS = 300
_WORD_RE = re.compile(r"[a-z]+|[0-9]+")


def register_configs() -> None:
    """Make our model configs known to open_clip (idempotent)."""
    import open_clip

    if not set(SYNTHFACES_CLIP_CONFIGS.values()) <= set(open_clip.list_models()):
        open_clip.add_model_config(CONFIG_DIR)


class WordTokenizer:
    """Lower-case word tokenizer over a fixed vocabulary.

    ids: 0 pad, 1 unknown, words, then start-of-text and end-of-text last (open_clip pools the text
    tower at the highest id, which must be the end token).
    """

    def __init__(self, words: Sequence[str], *, context_length: int = 32):
        self.words = list(words)
        self.context_length = context_length
        self.index = {w: i + 2 for i, w in enumerate(self.words)}
        self.sot = len(self.words) + 2
        self.eot = self.sot + 1

    @property
    def vocab_size(self) -> int:
        return self.eot + 1

    @staticmethod
    def split(text: str) -> list[str]:
        return _WORD_RE.findall(text.lower())

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        out = torch.zeros(len(texts), self.context_length, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [self.sot] + [self.index.get(w, 1) for w in self.split(text)][: self.context_length - 2] + [self.eot]
            out[row, : len(ids)] = torch.tensor(ids)
        return out

    def to_json(self) -> dict:
        return {"words": self.words, "context_length": self.context_length}


def check_prompts(texts) -> list[str]:
    """Prompts must be a non-empty list of non-empty strings of sane length."""
    if isinstance(texts, str):
        raise TypeError("encode_text takes a list of strings, not one string: wrap it as [text]")
    texts = list(texts)
    if not texts:
        raise ValueError("no prompts given")
    for t in texts:
        if not isinstance(t, str):
            raise TypeError(f"prompts must be strings, got {type(t).__name__}")
        if not t.strip():
            raise ValueError("a prompt is empty; describe the image, e.g. 'a pencil sketch of a face'")
        if len(t) > MAX_PROMPT_CHARS:
            raise ValueError(f"a prompt has {len(t)} characters; keep prompts under {MAX_PROMPT_CHARS}")
    return texts


class CLIPGuide:
    r"""An open_clip model with its tokenizer and preprocessing, for guidance losses.

    Examples:
        ```py
        >>> from refinestyle.clip import CLIPGuide
        >>> clip = CLIPGuide.from_pretrained("hub/refinestyle-synthfaces", subfolder="clip")  # doctest: +SKIP
        >>> clip.encode_text(["a pencil sketch of a face"]).norm(dim=-1)  # doctest: +SKIP
        tensor([1.0000])
        ```
    """

    def __init__(self, *, model: torch.nn.Module, tokenizer: Callable[[Sequence[str]], torch.Tensor], image_size: int,
                 mean: Sequence[float], std: Sequence[float], name: str, model_cfg: Optional[dict] = None):
        self.model = model.eval().requires_grad_(False)
        self.model_cfg = model_cfg  # the open_clip config it was built from (saved with it); None for Hub models
        self.tokenizer = tokenizer
        self.image_size = int(image_size)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self.name = name
        self.hub_folder: Optional[str] = None  # the model-repo folder it was loaded from; saving the model reuses it
        self.open_clip_name: Optional[tuple[str, Optional[str]]] = None  # (architecture, tag) of a real open_clip model

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def unknown_words(self, text: str) -> list[str]:
        """Words of ``text`` this guide cannot read (a closed vocabulary turns each into one 'unknown' token);
        always none for a real CLIP, whose BPE tokenizer spells out any text."""
        if not isinstance(self.tokenizer, WordTokenizer):
            return []
        return [w for w in WordTokenizer.split(text) if w not in self.tokenizer.index]

    def style_words(self) -> Optional[list[str]]:
        """The words this guide learned to name styles with (a SynthFaces guide); None for a real CLIP."""
        if not isinstance(self.tokenizer, WordTokenizer):
            return None
        from .data.synthfaces import style_words

        return sorted(w for w in style_words() if w in self.tokenizer.index)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """[-1, 1] images of any size → the model's input size and normalisation (differentiable)."""
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be a [N, 3, H, W] tensor in [-1, 1], got {getattr(images, 'shape', type(images))}")
        x = (images.float() + 1) / 2
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False, antialias=True)
        return (x - self.mean.to(x.device)) / self.std.to(x.device)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model.encode_image(self.preprocess(images).to(self.device)), dim=-1)

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        tokens = self.tokenizer(check_prompts(texts)).to(self.device)
        return F.normalize(self.model.encode_text(tokens), dim=-1)

    def to(self, device) -> "CLIPGuide":
        self.model.to(device)
        return self

    # ----------------------------------------------------------------------------------------------

    @classmethod
    def create_synthfaces(cls, *, vocabulary: Sequence[str], context_length: int = 32, arch: str = "resnet") -> "CLIPGuide":
        """A fresh (untrained) SynthFaces CLIP with one of our registered configs and a word vocabulary."""
        import open_clip

        if arch not in SYNTHFACES_CLIP_CONFIGS:
            raise ValueError(f"arch must be one of {sorted(SYNTHFACES_CLIP_CONFIGS)}, got {arch!r}")
        register_configs()
        name = SYNTHFACES_CLIP_CONFIGS[arch]
        assert name in open_clip.list_models()
        tokenizer = WordTokenizer(vocabulary, context_length=context_length)
        # The registered config fixes the towers; the vocabulary size comes from our tokenizer.
        cfg = _synthfaces_cfg(tokenizer, name)
        return cls(model=_create_from_cfg(cfg), tokenizer=tokenizer, image_size=cfg["vision_cfg"]["image_size"],
                   mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), name=name, model_cfg=cfg)

    def save_pretrained(self, save_directory: str | os.PathLike, *, dtype: Optional[torch.dtype] = None,
                        variant: Optional[str] = None) -> Path:
        """Config, vocabulary and ``open_clip_model[.<variant>].safetensors`` as ``dtype`` (default: the variant's,
        else float32), as the models' ``save_pretrained``."""
        dtype = storage_dtype(dtype, variant)
        name = variant_file(CLIP_WEIGHTS, variant)
        if not isinstance(self.tokenizer, WordTokenizer) or self.model_cfg is None:
            raise TypeError("only CLIPs with our word tokenizer are saved this way; real open_clip models stay on the Hub")
        out = Path(save_directory)
        out.mkdir(parents=True, exist_ok=True)
        (out / CLIP_CONFIG).write_text(json.dumps({
            "model_cfg": self.model_cfg,
            "preprocess_cfg": {"mean": self.mean.flatten().tolist(), "std": self.std.flatten().tolist(), "image_size": self.image_size},
            "refinestyle": {"name": self.name, "tokenizer": "word"},
        }, indent=2) + "\n")
        (out / VOCAB).write_text(json.dumps(self.tokenizer.to_json()) + "\n")
        state = {k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous() for k, v in self.model.state_dict().items()}
        save_safetensors(state, out / name, metadata={"format": "pt"}, like=out / CLIP_CONFIG)
        return out

    @classmethod
    def from_pretrained(cls, path_or_repo: str | os.PathLike, *, subfolder: Optional[str] = None, revision: Optional[str] = None,
                        cache_dir: Optional[str] = None, device: str | torch.device = "cpu", variant: Optional[str] = None,
                        use_safetensors: Optional[bool] = None) -> "CLIPGuide":
        """Our CLIP from a folder (``open_clip_config.json``, ``open_clip_model[.<variant>].safetensors``, ``vocab.json``).

        It always runs in float32, whatever the weights were stored as: it only scores images (and its
        preprocessing hands it float32), so half precision would save little and cost accuracy in the losses.
        """
        check_use_safetensors(use_safetensors)
        variant_file(CLIP_WEIGHTS, variant)  # a malformed variant fails before any download
        root = resolve_repo(path_or_repo, revision=revision, cache_dir=cache_dir)
        folder = root / subfolder if subfolder else root
        if not folder.is_dir():
            raise HubError(f"{root} has no subfolder {subfolder!r}")
        config = read_json(folder / CLIP_CONFIG)
        vocab = read_json(folder / VOCAB)
        if "model_cfg" not in config or "words" not in vocab:
            raise HubError(f"{folder} is not a refinestyle CLIP folder (needs model_cfg in {CLIP_CONFIG} and words in {VOCAB})")
        tokenizer = WordTokenizer(vocab["words"], context_length=int(vocab.get("context_length", 32)))
        model = _create_from_cfg(config["model_cfg"])
        path = weights_path(folder, CLIP_WEIGHTS, variant)
        strict_load(model, load_safetensors(path), source=str(path))
        pre = config.get("preprocess_cfg", {})
        guide = cls(model=model, tokenizer=tokenizer, image_size=int(pre.get("image_size", config["model_cfg"]["vision_cfg"]["image_size"])),
                    mean=pre.get("mean", (0.5, 0.5, 0.5)), std=pre.get("std", (0.5, 0.5, 0.5)),
                    name=config.get("refinestyle", {}).get("name", SYNTHFACES_CLIP), model_cfg=config["model_cfg"])
        return guide.to(device)

    @classmethod
    def from_open_clip(cls, model_name: str, pretrained: Optional[str], *, device: str | torch.device = "cpu",
                       cache_dir: Optional[str] = None) -> "CLIPGuide":
        """A real open_clip model by architecture and pretrained tag, e.g. ``("ViT-B-32", "openai")``.

        The weights download once through open_clip (into the Hugging Face cache, or ``cache_dir``) and are read from
        the cache afterwards. With ``HF_HUB_OFFLINE=1`` nothing is attempted on the network: weights missing from the
        cache are a ``HubError`` naming the architecture, the tag and what to do. ``pretrained=None`` builds the
        architecture at random weights (shapes, preprocessing and speed are the real ones; for tests and benchmarks).
        The tokenizer is open_clip's BPE, whose vocabulary ships inside the package (it works offline).
        """
        import open_clip

        tag_cfg = check_open_clip_guide(model_name, pretrained)
        kwargs: dict = {"device": device}
        if pretrained is not None:
            # open_clip warns but builds GELU when an architecture meets a QuickGELU tag (OpenAI's): force the tag's.
            kwargs["force_quick_gelu"] = bool(tag_cfg.get("quick_gelu", False))
            cached = cached_open_clip_weights(model_name, pretrained, cache_dir=cache_dir)
            if cached is not None:  # read the file itself: no request, whatever the network
                kwargs["force_preprocess_cfg"] = {k: tag_cfg[k] for k in ("mean", "std", "interpolation", "resize_mode")
                                                  if k in tag_cfg}
                source = cached
            elif hub_offline():
                where = cache_dir or _hf_cache_dir()
                raise HubError(
                    f"could not load open_clip {model_name!r} with pretrained weights {pretrained!r}: they are not in the "
                    f"local cache ({where}) and HF_HUB_OFFLINE=1 forbids downloading them. Run once with a network to cache "
                    f"them (python -c \"import open_clip; open_clip.create_model_and_transforms('{model_name}', "
                    f"pretrained='{pretrained}')\"), point HF_HUB_CACHE at a cache that holds them, or use a model repo "
                    "with its own clip/ folder (the SynthFaces CLIP)")
            else:
                source = pretrained  # a known tag: open_clip downloads it
                kwargs["cache_dir"] = cache_dir
        else:
            source = None
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=source, **kwargs)
        except Exception as err:  # open_clip raises many kinds of errors for failed downloads and bad files
            raise HubError(f"could not load open_clip {model_name!r} with pretrained weights {pretrained!r}: {err}. "
                           "Offline, download it once where there is a network, or use the SynthFaces CLIP") from None
        size = model.visual.image_size
        size = size[0] if isinstance(size, (tuple, list)) else size
        norm = next(t for t in preprocess.transforms if type(t).__name__ == "Normalize")
        guide = cls(model=model, tokenizer=open_clip.get_tokenizer(model_name), image_size=size, mean=norm.mean, std=norm.std,
                    name=f"{model_name}/{pretrained if pretrained is not None else 'random'}")
        guide.open_clip_name = (model_name, pretrained)
        return guide


def hub_offline() -> bool:
    """Whether downloads are forbidden: ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) as huggingface_hub read it at
    import, or as the environment says now (set after the import, it still means offline to us)."""
    from huggingface_hub import constants

    now = (os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or "").strip().upper()
    return bool(constants.HF_HUB_OFFLINE) or now in ("1", "ON", "YES", "TRUE")


def _hf_cache_dir() -> str:
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def check_open_clip_guide(model_name: str, pretrained: Optional[str]) -> dict:
    """Check that open_clip knows the architecture and the pretrained tag (from its tables: no download); returns the
    tag's config (where its weights live, its preprocessing), ``{}`` for ``pretrained=None``. Raises ``ValueError``."""
    import open_clip

    if not isinstance(model_name, str) or model_name not in open_clip.list_models():
        vits = [m for m in open_clip.list_models() if m.startswith("ViT-B")]
        raise ValueError(f"open_clip has no architecture {model_name!r} (e.g. {', '.join(vits[:6])}; "
                         "all of them: open_clip.list_models())")
    if pretrained is None:
        return {}
    from open_clip.pretrained import get_pretrained_cfg, list_pretrained_tags_by_model

    cfg = get_pretrained_cfg(model_name, pretrained) if isinstance(pretrained, str) else {}
    if not cfg:
        tags = list_pretrained_tags_by_model(model_name)
        raise ValueError(f"open_clip has no pretrained weights {pretrained!r} for {model_name!r}; "
                         f"its tags: {', '.join(tags) if tags else 'none (no pretrained weights)'}")
    return cfg


def cached_open_clip_weights(model_name: str, pretrained: str, *, cache_dir: Optional[str] = None) -> Optional[str]:
    """The cached weights file of an open_clip architecture + tag, where open_clip itself would have downloaded it (the
    Hugging Face cache for tags on the Hub, ``~/.cache/clip`` for URL-only tags), or None. Never touches the network."""
    cfg = check_open_clip_guide(model_name, pretrained)
    if cfg.get("hf_hub"):
        from huggingface_hub import try_to_load_from_cache
        from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

        repo_id, filename = os.path.split(cfg["hf_hub"])  # as open_clip reads it: 'org/name/' means its default file
        filename = filename or HF_WEIGHTS_NAME
        candidates = [filename]
        if filename == HF_WEIGHTS_NAME:
            candidates.insert(0, HF_SAFE_WEIGHTS_NAME)  # open_clip prefers the safetensors file when the repo has one
        elif filename.endswith((".bin", ".pth")):
            candidates.insert(0, filename[:-4] + ".safetensors")
        for name in candidates:
            found = try_to_load_from_cache(repo_id, name, cache_dir=cache_dir)
            if isinstance(found, str) and os.path.isfile(found):
                return found
        return None
    if cfg.get("url"):
        path = Path(cache_dir or os.path.expanduser("~/.cache/clip")) / os.path.basename(cfg["url"])
        return str(path) if path.is_file() else None
    if cfg.get("file"):
        return cfg["file"] if os.path.isfile(cfg["file"]) else None
    return None


def _synthfaces_cfg(tokenizer: WordTokenizer, name: str) -> dict:
    cfg = json.loads((CONFIG_DIR / f"{name}.json").read_text())
    cfg["text_cfg"]["vocab_size"] = tokenizer.vocab_size
    cfg["text_cfg"]["context_length"] = tokenizer.context_length
    return cfg


def _create_from_cfg(model_cfg: dict) -> torch.nn.Module:
    """Build an open_clip ``CLIP`` from a config dict (never downloads, never unpickles)."""
    from open_clip.model import CLIP

    cfg = dict(model_cfg)
    known = {"embed_dim", "vision_cfg", "text_cfg", "quick_gelu", "init_logit_scale", "init_logit_bias"}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise HubError(f"CLIP config has unsupported keys {unknown}")
    return CLIP(**cfg)
