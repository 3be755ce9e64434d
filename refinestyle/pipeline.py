"""``RefineStyleModel``: the components of one Hub repo (generator, domains, ...) and what users do with them."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import torch

from .clip import CLIPGuide
from .hub import REPO_ID_RE, HubError, check_use_safetensors, read_json, resolve_repo, storage_dtype
from .images import images_to_tensor
from .inversion import ALIGNMENTS, DomainCheck, InversionOutput, domain_scores, invert_optimize
from .models.domain import DomainTokens
from .models.encoder import RefineStyleEncoder
from .models.refinement import TokenSet
from .models.stylegan2 import StyleGAN2Generator

MODEL_INDEX = "model_index.json"
FORMAT_VERSION = 1
# The only classes a model_index.json may name: nothing read from a file is ever imported.
KNOWN_CLASSES: dict[str, type] = {
    "StyleGAN2Generator": StyleGAN2Generator,
    "DomainTokens": DomainTokens,
    "RefineStyleEncoder": RefineStyleEncoder,
    "CLIPGuide": CLIPGuide,
}

# model_index.json keys that hold lists of folder names (domains/<name>/, extra CLIP folders).
NAME_LIST_KEYS = ("domains", "extra_clips")
# model_index.json key of the CLIP guides named, not stored: [[open_clip architecture, pretrained tag], ...].
OPEN_CLIP_GUIDES = "open_clip_guides"

DomainSpec = Union[None, str, os.PathLike, DomainTokens, Mapping[Union[str, os.PathLike, DomainTokens], float]]


def _check_guide_name(guide) -> tuple[str, str]:
    """A named guide as ``(open_clip architecture, pretrained tag)``: two plain names (checked against open_clip's own
    tables only when the guide is loaded, so a model loads without importing open_clip)."""
    ok = isinstance(guide, (tuple, list)) and len(guide) == 2 and all(
        isinstance(part, str) and 0 < len(part) <= 128 and all(c.isalnum() or c in "-_.@" for c in part) for part in guide)
    if not ok:
        raise ValueError(f"a named CLIP guide is [open_clip architecture, pretrained tag], e.g. ['ViT-B-32', 'openai'], "
                         f"got {guide!r}")
    return (guide[0], guide[1])


def _open_clip_name(guide: CLIPGuide) -> Optional[tuple[str, str]]:
    """``(architecture, tag)`` of a real open_clip guide with pretrained weights, else None (ours, or random weights)."""
    name = getattr(guide, "open_clip_name", None)
    return (name[0], name[1]) if name is not None and name[1] is not None else None


def _check_name(name: str, what: str = "domain names") -> str:
    if not isinstance(name, str) or not name or len(name) > 64 or not all(c.isalnum() or c in "-_" for c in name):
        raise ValueError(f"{what} must be 1-64 letters, digits, '-' or '_', got {name!r}")
    return name


class RefineStyleModel:
    r"""A RefineStyle model: a StyleGAN2 generator plus optional domains (shared token sets).

    Loaded from a Hub-layout folder or repo (``model_index.json``, ``generator/``, ``domains/<name>/``).

    Examples:
        ```py
        >>> import torch
        >>> from refinestyle import RefineStyleModel, StyleGAN2Generator
        >>> G = StyleGAN2Generator(z_dim=32, w_dim=32, resolution=16, channel_base=256, channel_max=32, mapping_layers=2)
        >>> model = RefineStyleModel(generator=G)
        >>> model.generate(z=torch.randn(2, 32)).shape
        torch.Size([2, 3, 16, 16])
        ```
    """

    def __init__(self, *, generator: StyleGAN2Generator, domains: Optional[dict[str, DomainTokens]] = None,
                 clip: Optional[CLIPGuide] = None, open_clip_guides: Sequence[tuple[str, str]] = ()):
        if not isinstance(generator, StyleGAN2Generator):
            raise TypeError(f"generator must be a StyleGAN2Generator, got {type(generator).__name__}")
        self.generator = generator.eval().requires_grad_(False)
        self.encoder = None
        self.clip = clip
        self.extra_clips: list[CLIPGuide] = []  # more CLIP models whose directional losses are averaged
        # Real CLIPs named by open_clip architecture and pretrained tag (model_index.json's "open_clip_guides"): not
        # stored in the repo, loaded through open_clip when first used (``model.clips``, ``model.clip``, ``adapt``).
        self.open_clip_guides: list[tuple[str, str]] = [_check_guide_name(g) for g in open_clip_guides]
        if len(set(self.open_clip_guides)) != len(self.open_clip_guides):
            raise ValueError(f"a CLIP guide is named twice in {self.open_clip_guides}")
        self._named_guides: dict[tuple[str, str], CLIPGuide] = {}  # the ones loaded so far
        self.domains: dict[str, DomainTokens] = {}
        self.source: Optional[str] = None  # where it was loaded from, for model cards and the app
        self.face_alignment = "none"  # how photos are cut before inversion: "ffhq" for face models (model_index.json)
        self.domain_check: Optional[DomainCheck] = None  # the calibrated in/out-of-domain test of inversions
        for name, dom in (domains or {}).items():
            self.add_domain(dom, name=name)

    # ----------------------------------------------------------------------------------------------
    # Loading and saving

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *, revision: Optional[str] = None,
                        cache_dir: Optional[str] = None, device: str | torch.device = "cpu",
                        torch_dtype: Optional[torch.dtype] = None, variant: Optional[str] = None,
                        use_safetensors: Optional[bool] = None) -> "RefineStyleModel":
        """Compose the components listed in ``model_index.json`` (local folder or Hub repo id).

        ``torch_dtype`` (default float32) is the generator's, the encoder's and the domains' (they run together, so
        they share it); the CLIPs stay float32. ``variant`` (e.g. ``"fp16"``, as ``save_pretrained(variant=...)``
        wrote it) is read for every component, and a component without it is an error naming the folder.

        CLIP guides named in ``model_index.json`` (``"open_clip_guides": [["ViT-B-32", "openai"], ...]``, as
        ``refinestyle convert --clip`` writes them) are not read here: loading works offline, and each guide loads
        through open_clip when first used (``model.clips``, ``model.clip``, ``model.adapt``).
        """
        check_use_safetensors(use_safetensors)
        weights = dict(variant=variant, use_safetensors=use_safetensors)
        root = resolve_repo(pretrained_model_name_or_path, revision=revision, cache_dir=cache_dir)
        index = read_json(root / MODEL_INDEX)
        fmt = index.get("_refinestyle_format", FORMAT_VERSION)
        if fmt != FORMAT_VERSION:
            raise HubError(f"{root / MODEL_INDEX} has format {fmt}; this refinestyle reads format {FORMAT_VERSION}: upgrade refinestyle")
        gen = index.get("generator")
        if not (isinstance(gen, list) and len(gen) == 2 and gen[1] == "StyleGAN2Generator"):
            raise HubError(f"{root / MODEL_INDEX} must name the generator as ['refinestyle', 'StyleGAN2Generator'], got {gen!r}")
        for key, value in index.items():
            if key in (*NAME_LIST_KEYS, OPEN_CLIP_GUIDES):
                continue  # lists of folder names, not [library, class] pairs
            if isinstance(value, list) and len(value) == 2 and isinstance(value[1], str) and value[1] not in KNOWN_CLASSES:
                raise HubError(f"{root / MODEL_INDEX} names an unknown class {value[1]!r} for {key!r}; "
                               f"known classes: {sorted(KNOWN_CLASSES)} (nothing is imported from files)")
        generator = StyleGAN2Generator.from_pretrained(str(root), subfolder="generator", device=device, torch_dtype=torch_dtype,
                                                       **weights)
        clip = None
        if index.get("clip"):
            clip = CLIPGuide.from_pretrained(str(root), subfolder="clip", device=device, **weights)
        named = index.get(OPEN_CLIP_GUIDES, []) or []
        if not isinstance(named, list):
            raise HubError(f"{root / MODEL_INDEX}: {OPEN_CLIP_GUIDES} must be a list of [architecture, pretrained tag] pairs, "
                           f"got {named!r}")
        try:
            model = cls(generator=generator, clip=clip, open_clip_guides=[tuple(g) if isinstance(g, list) else g for g in named])
        except ValueError as err:
            raise HubError(f"{root / MODEL_INDEX}: {err}") from None
        for folder in index.get("extra_clips", []) or []:
            extra = CLIPGuide.from_pretrained(str(root), subfolder=_check_name(folder, "extra_clips folder names"),
                                              device=device, **weights)
            extra.hub_folder = folder
            model.extra_clips.append(extra)
        if index.get("encoder"):
            encoder = RefineStyleEncoder.from_pretrained(str(root), subfolder="encoder", device=device, torch_dtype=torch_dtype,
                                                         **weights)
            encoder.check_generator(generator)
            model.encoder = encoder.requires_grad_(False)
        for name in index.get("domains", []) or []:
            model.load_domain(str(root / "domains" / _check_name(name)), name=name, variant=variant)
        model.source = str(pretrained_model_name_or_path)
        model.face_alignment = index.get("face_alignment", "none")
        if model.face_alignment not in ALIGNMENTS:
            raise HubError(f"{root / MODEL_INDEX}: face_alignment must be one of {ALIGNMENTS}, got {model.face_alignment!r}")
        if index.get("domain_check") is not None:
            try:
                model.domain_check = DomainCheck.from_dict(index["domain_check"], source=str(root / MODEL_INDEX))
            except ValueError as err:
                raise HubError(str(err)) from None
        return model

    def save_pretrained(self, save_directory: str | os.PathLike, *, dtype: Optional[torch.dtype] = None,
                        variant: Optional[str] = None) -> Path:
        """Every component in its folder, weights as ``dtype`` (default: the variant's, e.g. float16 for ``"fp16"``;
        else float32) in files named for ``variant`` (diffusers' ``diffusion_pytorch_model.fp16.safetensors``)."""
        storage_dtype(dtype, variant)  # a dtype that contradicts the variant fails before anything is written
        out = Path(save_directory)
        out.mkdir(parents=True, exist_ok=True)
        saved = dict(dtype=dtype, variant=variant)
        self.generator.save_pretrained(out / "generator", **saved)
        for name, dom in self.domains.items():
            dom.save_pretrained(out / "domains" / name, **saved)
        if self.encoder is not None:
            self.encoder.save_pretrained(out / "encoder", **saved)
        main, extras = self._stored_guides()
        if main is not None:
            main.save_pretrained(out / "clip", **saved)
        for folder, extra in zip(self.extra_clip_folders(), extras):
            extra.save_pretrained(out / folder, **saved)
        self.write_model_index(out)
        return out

    def _stored_guides(self) -> tuple[Optional[CLIPGuide], list[CLIPGuide]]:
        """``clip`` and ``extra_clips`` as saved in folders: a real open_clip model with pretrained weights (e.g.
        ``CLIPGuide.from_open_clip("ViT-B-16", "openai")`` set by hand) is saved by name instead (``_saved_names``)."""
        main = self._clip if self._clip is not None and _open_clip_name(self._clip) is None else None
        return main, [c for c in self.extra_clips if _open_clip_name(c) is None]

    def _saved_names(self) -> list[tuple[str, str]]:
        """The guides saved by name: real open_clip models set as ``clip`` or ``extra_clips``, then ``open_clip_guides``."""
        names: list[tuple[str, str]] = []
        for guide in [self._clip, *self.extra_clips]:
            name = _open_clip_name(guide) if guide is not None else None
            if name is not None and name not in names:
                names.append(name)
        return names + [g for g in self.open_clip_guides if g not in names]

    def extra_clip_folders(self) -> list[str]:
        """Each extra CLIP's folder: the one it was loaded from (so a repo saves back as it was), else clip-extra-<i>
        (real open_clip models are saved by name, in no folder)."""
        folders: list[str] = []
        for i, extra in enumerate(self._stored_guides()[1], start=1):
            folder = extra.hub_folder
            if not folder or folder in (*folders, "clip", "generator", "encoder", "domains"):
                folder = f"clip-extra-{i}"
            folders.append(folder)
        return folders

    def write_model_index(self, save_directory: str | os.PathLike) -> Path:
        """The one writer of ``model_index.json``: which components this model has and where (``save_pretrained``
        calls it; a build script that saved the components one by one calls it last)."""
        index = {"_class_name": "RefineStyleModel", "_refinestyle_format": FORMAT_VERSION,
                 "generator": ["refinestyle", "StyleGAN2Generator"], "domains": sorted(self.domains)}
        main, extras = self._stored_guides()
        if main is not None:
            index["clip"] = ["refinestyle", "CLIPGuide"]
        if extras:
            index["extra_clips"] = self.extra_clip_folders()
        named = self._saved_names()
        if named:  # named, not stored (absent when there are none, as in repos made before the key)
            index[OPEN_CLIP_GUIDES] = [list(g) for g in named]
        if self.encoder is not None:
            index["encoder"] = ["refinestyle", "RefineStyleEncoder"]
        index["face_alignment"] = self.face_alignment
        if self.domain_check is not None:
            index["domain_check"] = self.domain_check.to_dict()
        path = Path(save_directory) / MODEL_INDEX
        path.write_text(json.dumps(index, indent=2) + "\n")
        return path

    def load_domain(self, path_or_repo: str | os.PathLike, *, name: Optional[str] = None, revision: Optional[str] = None,
                    subfolder: Optional[str] = None, variant: Optional[str] = None) -> DomainTokens:
        """Register a domain under ``name`` (default: the folder's or repo's last part), resolved as
        ``resolve_domain`` does: a loaded name, a domain folder or a Hub repo id; it must fit the generator."""
        dom = self.resolve_domain(path_or_repo, revision=revision, subfolder=subfolder, variant=variant)
        return self.add_domain(dom, name=name or Path(subfolder or str(path_or_repo)).name)

    def resolve_domain(self, domain: str | os.PathLike | DomainTokens, *, session: Optional[Mapping[str, DomainTokens]] = None,
                       load: bool = True, revision: Optional[str] = None, subfolder: Optional[str] = None,
                       variant: Optional[str] = None) -> DomainTokens:
        """The one reading of a domain reference, shared by ``generate``, ``load_domain``, the CLI and the app.

        In order: a ``DomainTokens`` as is; a string naming a domain of ``session`` (a caller's own, e.g. the app's
        per-user domains) or of ``model.domains`` (``"zombie"``); then, with ``load``, a domain folder or a Hub repo
        id (``"org/name"``), loaded and not registered. A ``Path`` is always a folder. Names come first, so a
        model's own ``zombie`` wins over a ``zombie/`` folder in the working directory (``./zombie`` is the folder).
        ``load=False`` resolves names only: what a server does with names its users type, so they cannot make it
        read files or download repos. A loaded domain takes the generator's device and dtype. Raises KeyError for an
        unknown name, ValueError for a domain that does not fit the generator.
        """
        if isinstance(domain, DomainTokens):
            domain.check_compatible(self.generator)
            return domain
        if not isinstance(domain, (str, os.PathLike)):
            raise TypeError(f"a domain is a name, a folder, a Hub repo id or a DomainTokens, got {type(domain).__name__}")
        if isinstance(domain, str):
            for names in (session or {}, self.domains):
                if domain in names:
                    return names[domain]
        if load and (Path(domain).is_dir() or (isinstance(domain, str) and REPO_ID_RE.match(domain))):
            dom = DomainTokens.from_pretrained(domain, subfolder=subfolder, revision=revision, variant=variant, device=self.device,
                                               torch_dtype=self.generator.mapping_network_weight.dtype)
            dom.check_compatible(self.generator)
            return dom.eval().requires_grad_(False)
        known = sorted({*(session or {}), *self.domains})
        raise KeyError(f"unknown domain {str(domain)!r}; loaded domains: {known or 'none'}"
                       + (" (or give a domain folder or a Hub repo id; load one under a name with "
                          "model.load_domain(path, name=...))" if load else ""))

    def add_domain(self, domain: DomainTokens, *, name: str) -> DomainTokens:
        if not isinstance(domain, DomainTokens):
            raise TypeError(f"domain must be a DomainTokens, got {type(domain).__name__}")
        domain.check_compatible(self.generator)
        self.domains[_check_name(name)] = domain.eval().requires_grad_(False)
        return domain

    # ----------------------------------------------------------------------------------------------
    # Generation

    @property
    def device(self) -> torch.device:
        return self.generator.mapping.w_avg.device

    def to(self, device: str | torch.device) -> "RefineStyleModel":
        """Move every component (generator, encoder, CLIPs, domains) to ``device``; returns the model."""
        device = torch.device(device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"cannot move the model to {device}: this torch build sees no CUDA device; keep device='cpu'")
        self.generator.to(device)
        if self.encoder is not None:
            self.encoder.to(device)
        for clip in [self._clip, *self.extra_clips, *self._named_guides.values()]:
            if clip is not None:  # named guides not loaded yet load on this device when first used
                clip.to(device)
        for dom in self.domains.values():
            dom.to(device)
        return self

    @property
    def clip(self) -> Optional[CLIPGuide]:
        """The main CLIP guide: the repo's ``clip/`` folder (or one set here), else the first named open_clip guide,
        loaded when first asked for (offline and not cached: a ``HubError`` saying what to do); None without any."""
        if self._clip is None and self.open_clip_guides:
            return self.named_guide(*self.open_clip_guides[0])
        return self._clip

    @clip.setter
    def clip(self, value: Optional[CLIPGuide]) -> None:
        if value is not None and not isinstance(value, CLIPGuide):
            raise TypeError(f"clip must be a CLIPGuide or None, got {type(value).__name__}")
        self._clip = value

    @property
    def clips(self) -> list[CLIPGuide]:
        """Every CLIP that guides adaptation (their losses are averaged): ``clip`` and ``extra_clips`` from the repo's
        folders, then the named open_clip guides (``open_clip_guides``), each loaded when first needed."""
        stored = self.stored_guides
        held = {_open_clip_name(c) for c in stored}  # a named guide also set by hand counts once
        return stored + [self.named_guide(*g) for g in self.open_clip_guides if g not in held]

    @property
    def stored_guides(self) -> list[CLIPGuide]:
        """The guides in memory without loading anything: ``clip`` and ``extra_clips`` (the named ones excluded)."""
        return [c for c in [self._clip, *self.extra_clips] if c is not None]

    @property
    def guide_names(self) -> list[str]:
        """The names of every guide, without loading any: stored ones by their name, named ones as
        ``"<architecture>/<tag>"`` (what a caller shows or checks before ``clips`` loads them)."""
        stored = self.stored_guides
        held = {_open_clip_name(c) for c in stored}
        return [c.name for c in stored] + [f"{arch}/{tag}" for arch, tag in self.open_clip_guides if (arch, tag) not in held]

    def named_guide(self, arch: str, tag: str) -> CLIPGuide:
        """The open_clip guide ``arch`` with weights ``tag`` this model names, loaded once (``CLIPGuide.from_open_clip``:
        from the cache, or downloaded online) on the model's device."""
        key = _check_guide_name((arch, tag))
        if key not in self.open_clip_guides:
            raise KeyError(f"this model names no guide {arch}/{tag}; it names {self.guide_names or 'none'}")
        for guide in [self._clip, *self.extra_clips]:
            if guide is not None and _open_clip_name(guide) == key:
                return guide  # already loaded by hand
        if key not in self._named_guides:
            try:
                guide = CLIPGuide.from_open_clip(arch, tag, device=self.device)
            except (HubError, ValueError) as err:
                raise HubError(f"{self.source or 'this model'} names the CLIP guide {arch}/{tag}, which is loaded when first "
                               f"used: {err}") from None
            self._named_guides[key] = guide
        return self._named_guides[key]

    def domain_sources(self, domain: DomainSpec, strength: float | str) -> list[tuple[TokenSet, float]]:
        """Weighted residual sources for ``domain``: one domain as ``resolve_domain`` reads it (a name, a folder,
        a Hub repo id, a ``DomainTokens``), or ``{domain: weight}`` of several.

        ``strength="suggested"`` scales each domain by its own ``config.suggested_strength``."""
        suggested = isinstance(strength, str) and strength == "suggested"
        if not suggested and (isinstance(strength, bool) or not isinstance(strength, (int, float))
                              or not torch.isfinite(torch.tensor(float(strength)))):
            raise ValueError(f"strength must be a finite number or 'suggested', got {strength!r}")
        if domain is None:
            return []

        def scale(dom: DomainTokens, name: str) -> float:
            if not suggested:
                return float(strength)
            if dom.config.suggested_strength is None:
                raise ValueError(f"domain {name} has no suggested strength (it was made before model.adapt measured one, or "
                                 "with suggest_strength off): pass a number, or measure one with model.suggest_strength(domain)")
            return float(dom.config.suggested_strength)

        if isinstance(domain, (str, os.PathLike, DomainTokens)):
            domain = {domain: 1.0}
        if not isinstance(domain, Mapping):
            raise TypeError(f"domain must be a name, a folder, a Hub repo id, a DomainTokens or a {{domain: weight}} dict, "
                            f"got {type(domain).__name__}")
        out = []
        for key, weight in domain.items():
            if not isinstance(weight, (int, float)) or not torch.isfinite(torch.tensor(float(weight))):
                raise ValueError(f"domain weight for {key!r} must be a finite number, got {weight!r}")
            dom = self.resolve_domain(key)
            out.append((dom.token_set(), scale(dom, repr(key) if isinstance(key, str) else repr(dom.config.target)) * float(weight)))
        return out

    @torch.no_grad()
    def generate(
        self,
        *,
        z: Optional[torch.Tensor] = None,
        ws: Optional[torch.Tensor] = None,
        seeds: Optional[Sequence[int]] = None,
        tokens: Optional[TokenSet] = None,
        domain: DomainSpec = None,
        strength: float | str = 1.0,
        truncation_psi: float = 1.0,
        noise_mode: str = "const",
    ) -> torch.Tensor:
        """Images ``[N, 3, R, R]`` in about [-1, 1] from exactly one of ``z``, ``ws`` or ``seeds``.

        ``tokens`` (per-image, e.g. from inversion) and ``strength`` × ``domain`` residuals add up. ``strength=1``
        is a domain as optimised; ``strength="suggested"`` is each domain at its ``config.suggested_strength``, where
        the CLIPs saw the style reached (``model.adapt`` measures it; usually 0.7-0.9, and nearer the style's
        ground truth on SynthFaces).
        """
        given = [name for name, v in (("z", z), ("ws", ws), ("seeds", seeds)) if v is not None]
        if len(given) != 1:
            raise ValueError(f"pass exactly one of z, ws or seeds (got {given or 'none'})")
        G = self.generator
        if seeds is not None:
            z = torch.stack([torch.randn(G.config.z_dim, generator=torch.Generator().manual_seed(int(s))) for s in seeds]).to(self.device)
        if z is not None:
            ws = G.mapping(z, truncation_psi=truncation_psi)
        sources = ([(tokens, 1.0)] if tokens is not None else []) + self.domain_sources(domain, strength)
        return G.synthesis(ws, tokens=sources or None, noise_mode=noise_mode)

    # ----------------------------------------------------------------------------------------------
    # Inversion and adaptation

    def invert(
        self,
        images,
        *,
        method: str = "auto",
        steps: int = 300,
        token_steps: Optional[int] = None,
        seed: int = 0,
        align: str = "auto",
        callback=None,
        stop=None,
    ) -> InversionOutput:
        """Reconstruct images (PIL images, paths, bytes or ``[N,3,H,W]`` tensors in [-1, 1]).

        ``method="encoder"`` uses the trained encoder; ``"optimize"`` optimises W+ then tokens from
        ``w_avg`` (``steps`` in total, a third of them for tokens unless ``token_steps`` is given);
        ``"encoder+optimize"`` refines the encoder's W+ and tokens further by optimisation; ``"auto"``
        takes the encoder when there is one. ``stop`` (a ``threading.Event``): set it from another thread to
        end an optimisation before its next step (``refinestyle.Cancelled`` is raised).

        ``align``: ``"ffhq"`` cuts the largest face of each photo the way the FFHQ dataset was made
        (``refinestyle.faces``; ``out.aligned`` keeps what ``faces.paste_back`` needs), ``"none"`` centre-crops,
        ``"auto"`` does what the model declares (``model.face_alignment``, from ``model_index.json``).
        ``out.in_domain`` says per image whether the model can draw it (``model.domain_check``).
        """
        import time

        methods = ("auto", "encoder", "optimize", "encoder+optimize")
        if method not in methods:
            raise ValueError(f"method must be one of {methods}, got {method!r}")
        if method == "auto":
            method = "encoder" if self.encoder is not None else "optimize"
        if method.startswith("encoder") and self.encoder is None:
            raise ValueError("this model has no encoder; use method='optimize' (works with any generator)")
        if method != "encoder" and (not isinstance(steps, int) or not 1 <= steps <= 5000):
            raise ValueError(f"steps must be an integer from 1 to 5000, got {steps!r}")
        if align not in ("auto", *ALIGNMENTS):
            raise ValueError(f"align must be 'auto', 'ffhq' or 'none', got {align!r}")
        align = self.face_alignment if align == "auto" else align
        G = self.generator
        aligned = None
        if align == "ffhq":
            from .faces import align_face

            batch = list(images) if isinstance(images, (list, tuple)) or (isinstance(images, torch.Tensor) and images.dim() == 4) \
                else [images]
            aligned = [align_face(image, resolution=G.config.resolution) for image in batch]
            images = [a.image for a in aligned]
        targets = images_to_tensor(images, G.config.resolution).to(self.device)
        t0 = time.perf_counter()
        ws = tokens = None
        if method.startswith("encoder"):
            with torch.no_grad():
                ws, tokens = self.encoder.invert(targets, generator=self.generator)
        if method != "encoder":
            t_steps = steps // 3 if token_steps is None else token_steps
            ws, tokens = invert_optimize(G, targets, w_steps=steps - t_steps, token_steps=t_steps, seed=seed,
                                         init_ws=ws, init_tokens=tokens if tokens is not None and tokens.layers else None,
                                         callback=callback, stop=stop)
        seconds = time.perf_counter() - t0
        with torch.no_grad():
            refined = G.synthesis(ws, tokens=tokens)
            w_only = G.synthesis(ws)
        scores = domain_scores(images=refined, w_images=w_only, targets=targets)
        check = self.domain_check
        applies = check is not None and check.method == method
        domain_score = scores[check.score] if applies else None
        return InversionOutput(images=refined, ws=ws, tokens=tokens, w_images=w_only, targets=targets, seconds=seconds,
                               method=method, aligned=aligned, scores=scores, domain_score=domain_score,
                               in_domain=[bool(s >= check.threshold) for s in domain_score] if applies else None)

    def _reference_tensor(self, target_images):
        """Reference images (PIL, paths, bytes or a tensor) as the generator-sized tensor the CLIP losses take."""
        if target_images is None or isinstance(target_images, torch.Tensor):
            return target_images
        return images_to_tensor(target_images, self.generator.config.resolution).to(self.device)

    def suggest_strength(self, domain: DomainTokens, *, source: Optional[str] = None, target: Optional[str] = None,
                         target_images=None):
        """``adaptation.suggest_strength`` for ``domain`` with this model's generator and CLIPs: where the CLIPs see
        the images as far along the text direction as the domain takes them (a ``StrengthSuggestion``).

        ``source`` / ``target`` default to the prompts the domain records; an image-guided domain needs its
        ``target_images`` again. ``model.adapt`` already records the answer as ``domain.config.suggested_strength``.
        The CLIPs read the images as ``model.adapt``'s guides do by default (at most 256 px, or their own size).
        """
        from .adaptation import REFERENCE_IMAGES_TARGET, AdaptConfig, guide_resolution_for, suggest_strength

        if not isinstance(domain, DomainTokens):
            raise TypeError(f"domain must be a DomainTokens, got {type(domain).__name__}")
        if not self.guide_names:
            raise ValueError("this model has no CLIP (model.clip is None): the suggestion is measured with the CLIPs")
        source = source if source is not None else domain.config.source
        target_images = self._reference_tensor(target_images)
        if target_images is not None:
            target = None
        elif target is None:
            target = domain.config.target
            if target == REFERENCE_IMAGES_TARGET:
                raise ValueError("this domain was made from reference images: pass them again as target_images")
        if not source or (target_images is None and not target):
            raise ValueError("the domain records no source/target prompts: pass source= and target= (or target_images=)")
        return suggest_strength(self.generator, self.clips, domain, source=source, target=target, target_images=target_images,
                                resolution=guide_resolution_for(AdaptConfig(), self.generator, self.clips))

    def adapt(
        self,
        source: str = "a photo of a face",
        target: Optional[str] = None,
        *,
        target_images=None,
        steps: int = 300,
        lr: Optional[float] = None,
        lr_schedule: str = "cosine",
        batch: int = 8,
        seed: int = 0,
        num_tokens: Optional[int] = 1,
        torgb_tokens: Optional[int] = None,
        warmup_tokens: Optional[int] = None,
        warmup_steps: Optional[int] = None,
        layers="all",
        content_weight: float = 0.0,
        global_weight: float = 0.5,
        augment_views: int = 4,
        suggest_strength: bool = True,
        allow_unknown_words: bool = False,
        guide_resolution: Optional[int] = None,
        callback=None,
        preview_every: int = 0,
        progress: bool = False,
        stop=None,
    ) -> DomainTokens:
        """Optimise a shared token set so that images move from ``source`` toward ``target`` (or ``target_images``).

        Returns a ``DomainTokens`` (not registered: ``model.add_domain(dom, name=...)`` to use it by name).
        The defaults are the recipe of the shipped SynthFaces domains: ``num_tokens`` K = 1 per convolution (None:
        the generator's K), ``torgb_tokens`` 3 on the toRGB layers (None: max(K, 3)), and a rank warm-up
        (``warmup_tokens`` None: 8 tokens on every layer for ``warmup_steps`` None: 40% of the steps, then each
        layer's residual truncated by SVD to its final K; ``warmup_steps=0``: none), with a global CLIP term of
        weight 0.5: quick to find the style, a few KB to store (about 2% of the SynthFaces synthesis). ``lr`` None picks
        the peak learning rate from the steps (``0.75 / steps`` within [0.005, 0.01]: 0.01 for the app's 60 steps, 0.005
        from 150, where 0.01 overshoots into seed-dependent drift). ``lr_schedule="cosine"`` decays
        the learning rate once over all the steps (the part after the truncation continues it);
        ``"cosine-restart"`` starts a fresh decay there; ``"constant"``.

        ``suggest_strength`` (a few seconds after the run) records ``config.suggested_strength``: the smallest strength
        at which the CLIPs see the images as far along the text direction as the domain takes them
        (``adaptation.suggest_strength``). Use it with ``generate(..., strength="suggested")``; ``strength=1`` stays
        the tokens as optimised, which go further.

        A prompt word the guide does not know is an error naming it and the guide's style words
        (``allow_unknown_words=True``: a warning).

        ``guide_resolution`` (None: the generator's, at most 256 px or the guides' own input size if larger) is the
        image the guide reads: for a larger generator each step stops at that block's skip image, so it synthesises
        and back-propagates only the blocks up to it (a 1024 px step costs about what a 256 px one does), and the
        domain refines those layers only. Pass the generator's resolution to optimise every layer through full-size
        images.

        ``stop`` (a ``threading.Event``): set it from another thread (a Cancel button) to end the run before its next
        step; ``refinestyle.Cancelled`` is raised and no domain is returned.
        """
        from .adaptation import AdaptConfig, adapt_tokens

        if not self.guide_names:
            raise ValueError("this model has no CLIP (model.clip is None): load a repo with a clip/ folder or named guides, "
                             "or set model.clip = CLIPGuide.from_open_clip('ViT-B-32', 'openai') where it can be downloaded")
        clips = self.clips  # named open_clip guides load here, the first time
        target_images = self._reference_tensor(target_images)
        config = AdaptConfig(steps=steps, lr=lr, lr_schedule=lr_schedule, batch=batch, seed=seed, num_tokens=num_tokens,
                             torgb_tokens=torgb_tokens, warmup_tokens=warmup_tokens, warmup_steps=warmup_steps, layers=layers,
                             content_weight=content_weight, global_weight=global_weight, augment_views=augment_views,
                             suggest_strength=suggest_strength, allow_unknown_words=allow_unknown_words,
                             guide_resolution=guide_resolution)
        return adapt_tokens(self.generator, clips, source=source, target=target, target_images=target_images, config=config,
                            callback=callback, preview_every=preview_every, progress=progress, stop=stop)
