"""Load official StyleGAN2 checkpoints into ``StyleGAN2Generator`` without running code from the file.

Supported inputs (``load_stylegan2`` sniffs the format from the bytes, not the extension):

* rosinality ``.pt``: ``{'g_ema', 'latent_avg'}`` (converted weights) or training checkpoints
  ``{'g', 'd', 'g_ema', 'args', ...}`` without ``latent_avg`` (``w_avg`` is then estimated).
* NVlabs ``.pkl`` snapshots (stylegan2-ada-pytorch / stylegan3 with a StyleGAN2 generator): NVlabs'
  persistence wrapper becomes a plain record, so the source code embedded in the pickle is never
  imported or executed.
* NVlabs plain state dicts (``.pt`` with ``synthesis.b4.const`` ...): config inferred from shapes.
* safetensors files in either layout, and our own folders / Hub repos.

Every file is read by ``refinestyle.checkpoint_reader`` (safe on files from strangers; see there).

Key maps are readable tables (``rosinality_key_map``, ``nvlabs_key_map``); every conversion ends
with a parity check that the inverse map reproduces the source tensors exactly.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .checkpoint_reader import DEFAULT_MAX_ELEMENTS, MAX_DEPTH, CheckpointError, PersistentRecord, read_checkpoint
from .models.stylegan2 import StyleGAN2Generator, default_channels, fir_filter_2d

# --------------------------------------------------------------------------------------------------
# NVlabs snapshots


def record_state_dict(record: PersistentRecord, prefix: str = "", *, _seen: frozenset = frozenset()) -> dict[str, torch.Tensor]:
    """Flatten a pickled module tree (``_parameters``, ``_buffers``, ``_modules``) into a state dict.

    A pickle can make a module its own descendant; such a cycle, or nesting deeper than any real
    network, is refused rather than recursed into.
    """
    if id(record) in _seen or len(_seen) >= MAX_DEPTH:
        raise CheckpointError(f"submodule {prefix or '<root>'} contains itself or nests deeper than {MAX_DEPTH} levels")
    state = record.state
    out: dict[str, torch.Tensor] = {}
    for group in ("_parameters", "_buffers", "_modules"):
        if not isinstance(state.get(group) or {}, dict) or not all(isinstance(k, str) for k in state.get(group) or {}):
            raise CheckpointError(f"{prefix or '<root>'}{group} is not a dict of names")
    for group in ("_parameters", "_buffers"):
        for key, value in (state.get(group) or {}).items():
            if isinstance(value, torch.Tensor):
                out[prefix + key] = value
    for key, child in (state.get("_modules") or {}).items():
        if child is None:
            continue
        if not isinstance(child, PersistentRecord):
            raise CheckpointError(f"submodule {prefix + key} is a {type(child).__name__}, not a StyleGAN2 layer")
        out.update(record_state_dict(child, prefix + key + ".", _seen=_seen | {id(record)}))
    return out


# --------------------------------------------------------------------------------------------------
# Key maps


@dataclass(frozen=True)
class KeyRule:
    """One source tensor → one of our tensors, reshaped to ``shape`` (a view; no transposes needed)."""

    src: str
    dst: str


def nvlabs_key_map(config: dict) -> list[KeyRule]:
    """NVlabs layout → ours: the same names (our modules follow it); resample filters are constants."""
    G = _skeleton(config)
    return [KeyRule(k, k) for k in G.state_dict()]


def rosinality_key_map(config: dict) -> list[KeyRule]:
    """rosinality ``g_ema`` (plus top-level ``latent_avg``) → ours."""
    rules = [KeyRule(f"style.{i + 1}.{p}", f"mapping.fc{i}.{p}") for i in range(config["mapping_layers"]) for p in ("weight", "bias")]
    rules += [KeyRule("latent_avg", "mapping.w_avg"), KeyRule("input.input", "synthesis.b4.const")]

    def conv(src: str, dst: str, noise_idx: int) -> list[KeyRule]:
        return [
            KeyRule(f"{src}.conv.weight", f"{dst}.weight"),
            KeyRule(f"{src}.conv.modulation.weight", f"{dst}.affine.weight"),
            KeyRule(f"{src}.conv.modulation.bias", f"{dst}.affine.bias"),
            KeyRule(f"{src}.noise.weight", f"{dst}.noise_strength"),
            KeyRule(f"{src}.activate.bias", f"{dst}.bias"),
            KeyRule(f"noises.noise_{noise_idx}", f"{dst}.noise_const"),
        ]

    def torgb(src: str, dst: str) -> list[KeyRule]:
        return [
            KeyRule(f"{src}.conv.weight", f"{dst}.weight"),
            KeyRule(f"{src}.conv.modulation.weight", f"{dst}.affine.weight"),
            KeyRule(f"{src}.conv.modulation.bias", f"{dst}.affine.bias"),
            KeyRule(f"{src}.bias", f"{dst}.bias"),
        ]

    rules += conv("conv1", "synthesis.b4.conv1", 0) + torgb("to_rgb1", "synthesis.b4.torgb")
    for k in range(int(math.log2(config["resolution"])) - 2):
        block = f"synthesis.b{2 ** (k + 3)}"
        rules += conv(f"convs.{2 * k}", f"{block}.conv0", 2 * k + 1)
        rules += conv(f"convs.{2 * k + 1}", f"{block}.conv1", 2 * k + 2)
        rules += torgb(f"to_rgbs.{k}", f"{block}.torgb")
    return rules


def _is_constant_filter(key: str, value: torch.Tensor) -> bool:
    """NVlabs ``resample_filter`` (sum 1) and rosinality ``blur.kernel``/``upsample.kernel`` (sum 4)."""
    if not (key.endswith("resample_filter") or key.endswith(".kernel")) or value.shape != (4, 4):
        return False
    expected = fir_filter_2d() * (1 if key.endswith("resample_filter") else 4)
    if not torch.allclose(value.float(), expected, atol=1e-6):
        raise CheckpointError(f"{key} is not the [1,3,3,1] filter StyleGAN2 uses; custom filters are not supported")
    return True


def apply_key_map(source: dict[str, torch.Tensor], rules: list[KeyRule], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map ``source`` through ``rules`` onto the shapes of ``target``; name every missing or unused key."""
    out, used = {}, set()
    missing = [r.src for r in rules if r.src not in source]
    if missing:
        raise CheckpointError(f"checkpoint lacks {len(missing)} expected tensors: {missing[:8]}{' ...' if len(missing) > 8 else ''}")
    for rule in rules:
        value = source[rule.src]
        want = target[rule.dst].shape
        if value.numel() != math.prod(want):
            raise CheckpointError(f"{rule.src} has shape {list(value.shape)}, expected {list(want)} for {rule.dst}")
        out[rule.dst] = value.reshape(want).to(torch.float32).clone()
        used.add(rule.src)
    unused = [k for k, v in source.items() if k not in used and not _is_constant_filter(k, v)]
    if unused:
        raise CheckpointError(f"checkpoint has {len(unused)} tensors this StyleGAN2 does not use: {unused[:8]}"
                              f"{' ...' if len(unused) > 8 else ''}; is it another architecture?")
    # Parity check: the inverse map gives back every source tensor exactly.
    for rule in rules:
        if not torch.equal(out[rule.dst].reshape(source[rule.src].shape), source[rule.src].to(torch.float32)):
            raise AssertionError(f"key map parity failed for {rule.src} -> {rule.dst}")
    return out


# --------------------------------------------------------------------------------------------------
# Config inference


def _skeleton(config: dict) -> StyleGAN2Generator:
    with torch.device("meta"):
        return StyleGAN2Generator(**config)


def _channels_from_weights(weights: dict[int, torch.Tensor], resolution: int) -> list[int]:
    return [int(weights[2**i].shape[0]) for i in range(2, int(math.log2(resolution)) + 1)]


def infer_nvlabs_config(sd: dict[str, torch.Tensor], *, overrides: dict) -> dict:
    if any(k.startswith("mapping.embed") for k in sd):
        raise CheckpointError("this is a class-conditional generator (mapping.embed); only unconditional StyleGAN2 is supported")
    if any(".skip." in k for k in sd) or any(k.endswith(".fromrgb.weight") for k in sd):
        raise CheckpointError("this generator uses the 'resnet' or 'orig' architecture; only the skip (config-f) generator is supported")
    res = [int(k.split(".")[1][1:]) for k in sd if k.startswith("synthesis.b") and k.endswith(".torgb.weight")]
    if not res or "synthesis.b4.const" not in sd:
        raise CheckpointError("no synthesis.b*.torgb / synthesis.b4.const tensors: not an NVlabs StyleGAN2 generator state dict")
    resolution = max(res)
    convs = {r: sd[f"synthesis.b{r}.conv1.weight"] for r in [2**i for i in range(2, int(math.log2(resolution)) + 1)]}
    n_map = len([k for k in sd if k.startswith("mapping.fc") and k.endswith(".weight")])
    config = dict(
        z_dim=int(sd["mapping.fc0.weight"].shape[1]),
        w_dim=int(sd["synthesis.b4.conv1.affine.weight"].shape[1]),
        resolution=resolution,
        channels=_channels_from_weights(convs, resolution),
        mapping_layers=n_map,
        mapping_lr_multiplier=0.01,
        img_channels=int(sd[f"synthesis.b{resolution}.torgb.weight"].shape[0]),
        conv_clamp=None,
    )
    config.update(overrides)
    return config


def infer_rosinality_config(g: dict[str, torch.Tensor], *, overrides: dict) -> dict:
    n_rgbs = len([k for k in g if k.startswith("to_rgbs.") and k.endswith(".conv.weight")])
    if "input.input" not in g or "conv1.conv.weight" not in g:
        raise CheckpointError("no input.input / conv1.conv.weight tensors: not a rosinality StyleGAN2 generator")
    resolution = 2 ** (n_rgbs + 2)
    convs = {4: g["conv1.conv.weight"][0]}
    for k in range(n_rgbs):
        convs[2 ** (k + 3)] = g[f"convs.{2 * k + 1}.conv.weight"][0]
    config = dict(
        z_dim=int(g["style.1.weight"].shape[1]),
        w_dim=int(g["conv1.conv.modulation.weight"].shape[1]),
        resolution=resolution,
        channels=_channels_from_weights(convs, resolution),
        mapping_layers=len([k for k in g if k.startswith("style.") and k.endswith(".weight")]),
        mapping_lr_multiplier=0.01,
        img_channels=int(g["to_rgb1.conv.weight"].shape[1]),
        conv_clamp=None,
    )
    config.update(overrides)
    return config


def config_from_nvlabs_kwargs(kwargs: dict, *, overrides: dict) -> dict:
    """NVlabs ``Generator`` constructor arguments → our flat config."""
    if kwargs.get("c_dim", 0):
        raise CheckpointError(f"this is a class-conditional generator (c_dim={kwargs['c_dim']}); only unconditional StyleGAN2 is supported")
    mapping = dict(kwargs.get("mapping_kwargs") or {})
    synthesis = dict(kwargs.get("synthesis_kwargs") or {})
    arch = synthesis.get("architecture", "skip")
    if arch != "skip":
        raise CheckpointError(f"this generator uses the {arch!r} architecture; only the skip (config-f) generator is supported")
    if list(synthesis.get("resample_filter", [1, 3, 3, 1])) != [1, 3, 3, 1]:
        raise CheckpointError("custom resample filters are not supported (only [1,3,3,1])")
    if mapping.get("layer_features") not in (None, kwargs["w_dim"]):
        raise CheckpointError("mapping layer_features differing from w_dim are not supported")
    res = int(kwargs["img_resolution"])
    config = dict(
        z_dim=int(kwargs["z_dim"]),
        w_dim=int(kwargs["w_dim"]),
        resolution=res,
        channels=default_channels(res, int(synthesis.get("channel_base", 32768)), int(synthesis.get("channel_max", 512))),
        mapping_layers=int(mapping.get("num_layers", 8)),
        mapping_lr_multiplier=float(mapping.get("lr_multiplier", 0.01)),
        img_channels=int(kwargs.get("img_channels", 3)),
        conv_clamp=synthesis.get("conv_clamp"),
    )
    config.update(overrides)
    return config


# --------------------------------------------------------------------------------------------------
# Building generators


def _build(config: dict, state: dict[str, torch.Tensor]) -> StyleGAN2Generator:
    G = StyleGAN2Generator(**config)
    G.load_state_dict(state, strict=True)
    return G.eval().requires_grad_(False)


def generator_from_nvlabs_state_dict(sd: dict[str, torch.Tensor], *, config: dict | None = None,
                                     overrides: dict | None = None, max_elements: int = DEFAULT_MAX_ELEMENTS) -> StyleGAN2Generator:
    _check_state_dict(sd, "state dict")
    config = config or infer_nvlabs_config(sd, overrides=overrides or {})
    check_config_budget(config, max_elements=max_elements)
    target = _skeleton(config).state_dict()
    return _build(config, apply_key_map(sd, nvlabs_key_map(config), target))


@torch.no_grad()
def estimate_w_avg(G: StyleGAN2Generator, *, num_samples: int = 10_000, seed: int = 0) -> torch.Tensor:
    z = torch.randn(num_samples, G.config.z_dim, generator=torch.Generator().manual_seed(seed))  # on the CPU: same z on any device
    return G.mapping.w(z.to(G.mapping.w_avg.device)).mean(dim=0)


def generator_from_rosinality(ckpt: dict, *, overrides: dict | None = None,
                              max_elements: int = DEFAULT_MAX_ELEMENTS) -> StyleGAN2Generator:
    g = ckpt.get("g_ema")
    if g is None:
        raise CheckpointError(f"rosinality checkpoint has no 'g_ema' (keys: {_describe_top_level(ckpt)})")
    _check_state_dict(g, "g_ema")
    if ckpt.get("latent_avg") is not None and not isinstance(ckpt["latent_avg"], torch.Tensor):
        raise CheckpointError(f"latent_avg is a {type(ckpt['latent_avg']).__name__}, not a tensor")
    config = infer_rosinality_config(g, overrides=overrides or {})
    check_config_budget(config, max_elements=max_elements)
    source = dict(g)
    latent_avg = ckpt.get("latent_avg")
    estimated = latent_avg is None
    source["latent_avg"] = torch.zeros(config["w_dim"]) if estimated else latent_avg.reshape(-1)
    target = _skeleton(config).state_dict()
    G = _build(config, apply_key_map(source, rosinality_key_map(config), target))
    if estimated:
        G.mapping.w_avg.copy_(estimate_w_avg(G))
        warnings.warn(
            "the checkpoint has no 'latent_avg' (a training checkpoint): w_avg was estimated as the mean of "
            "mapping(z) over 10,000 z drawn with seed 0; truncation uses that estimate",
            stacklevel=3,
        )
    return G


# --------------------------------------------------------------------------------------------------
# Sniffing and the public entry point


# The largest generator a checkpoint may declare: official StyleGAN2 stops at 1024 px and 512 channels.
MAX_RESOLUTION = 4096
MAX_CHANNELS = 2048
MAX_LATENT_DIM = 4096
MAX_MAPPING_LAYERS = 32


def check_config_budget(config: dict, *, max_elements: int = DEFAULT_MAX_ELEMENTS) -> None:
    """Refuse a declared generator that no real checkpoint has, before anything is built."""
    res = config.get("resolution")
    if not isinstance(res, int) or res < 4 or res > MAX_RESOLUTION or res & (res - 1):
        raise CheckpointError(f"resolution {res!r} is not a power of two from 4 to {MAX_RESOLUTION}")
    channels = config.get("channels") or []
    if len(channels) != int(math.log2(res)) - 1 or not all(isinstance(c, int) and 1 <= c <= MAX_CHANNELS for c in channels):
        raise CheckpointError(f"channels {list(channels)[:12]} are not one count from 1 to {MAX_CHANNELS} per block")
    for key, limit in (("z_dim", MAX_LATENT_DIM), ("w_dim", MAX_LATENT_DIM), ("mapping_layers", MAX_MAPPING_LAYERS),
                       ("img_channels", 4)):
        value = config.get(key)
        if not isinstance(value, int) or not 1 <= value <= limit:
            raise CheckpointError(f"{key} {value!r} is outside 1..{limit}")
    params = sum(p.numel() for p in _skeleton(config).parameters())  # on the meta device: nothing allocated
    if params > max_elements:
        raise CheckpointError(f"the declared generator has {params:,} parameters, over the budget of {max_elements:,}")


def _check_state_dict(sd: Any, what: str) -> None:
    if not isinstance(sd, dict):
        raise CheckpointError(f"{what} is a {type(sd).__name__}, not a dict of tensors")
    bad = [k if isinstance(k, str) else repr(k) for k, v in sd.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{what} has {len(bad)} entries that are not named tensors: {bad[:5]}")


def _describe_top_level(obj: Any) -> str:
    if isinstance(obj, dict):
        return str([k if isinstance(k, str) else repr(k) for k in list(obj)[:10]])
    return type(obj).__name__


def _from_mapping(obj: Any, *, path: Path, overrides: dict, max_elements: int) -> StyleGAN2Generator:
    """Dispatch a loaded dict on its keys: rosinality, NVlabs state dict, or an NVlabs snapshot."""
    budget = dict(max_elements=max_elements)
    if isinstance(obj, dict) and "g_ema" in obj:
        return generator_from_rosinality(obj, overrides=overrides, **budget)
    if isinstance(obj, dict) and "G_ema" in obj:
        record = obj["G_ema"]
        if not isinstance(record, PersistentRecord):
            raise CheckpointError(f"'G_ema' is a {type(record).__name__}, expected an NVlabs network")
        sd = record_state_dict(record)
        kwargs = record.state.get("_init_kwargs")
        if kwargs is not None and not isinstance(kwargs, dict):
            raise CheckpointError(f"G_ema's constructor arguments are a {type(kwargs).__name__}, not a dict")
        config = config_from_nvlabs_kwargs(dict(kwargs), overrides=overrides) if kwargs else None
        return generator_from_nvlabs_state_dict(sd, config=config, overrides=overrides, **budget)
    if isinstance(obj, dict) and "synthesis.b4.const" in obj:
        return generator_from_nvlabs_state_dict(obj, overrides=overrides, **budget)
    if isinstance(obj, dict) and "input.input" in obj:
        return generator_from_rosinality({"g_ema": obj}, overrides=overrides, **budget)
    raise CheckpointError(f"{path} is a readable checkpoint but not a StyleGAN2 generator (top level: {_describe_top_level(obj)}). "
                          "Expected rosinality {'g_ema', 'latent_avg'}, an NVlabs snapshot with 'G_ema', or a generator state dict")


def load_stylegan2(path: str | Path, *, revision: str | None = None, mapping_lr_multiplier: float | None = None,
                   conv_clamp: float | None = None, max_elements: int = DEFAULT_MAX_ELEMENTS) -> StyleGAN2Generator:
    """Load any supported StyleGAN2 checkpoint as a ``StyleGAN2Generator`` (float32, eval mode, on CPU).

    Safe on files from strangers (see ``refinestyle.checkpoint_reader``): nothing in the file is imported,
    executed or allowed to modify the running program; declared sizes (storages against the file, views
    against their storages, resolution, channels, dims, total parameters) are checked before anything is
    allocated; every failure is a ``CheckpointError`` naming the file and the problem.

    Args:
        path: a rosinality ``.pt``, NVlabs ``.pkl``, NVlabs state-dict ``.pt``, a safetensors file, one of
            our Hub-layout folders (or its ``generator/`` subfolder), or a Hub repo id.
        revision: Hub revision when ``path`` is a repo id.
        mapping_lr_multiplier: override for formats that do not record it (default 0.01, as official StyleGAN2).
        conv_clamp: override for formats that do not record it (state dicts; NVlabs ADA configs use 256).
        max_elements: the most tensor elements a file may hold, and a generator may declare.

    Examples:
        ```py
        >>> from refinestyle import load_stylegan2
        >>> G = load_stylegan2("tests/fixtures/stylegan2-tiny/rosinality-tiny-16.pt")  # doctest: +SKIP
        ```
    """
    overrides = {}
    if mapping_lr_multiplier is not None:
        overrides["mapping_lr_multiplier"] = float(mapping_lr_multiplier)
    if conv_clamp is not None:
        overrides["conv_clamp"] = float(conv_clamp)
    p = Path(path)
    if p.is_dir() or (not p.exists() and isinstance(path, str) and path.count("/") == 1 and not path.endswith((".pt", ".pkl"))):
        from .hub import resolve_repo

        root = resolve_repo(str(path), revision=revision)
        sub = "generator" if (root / "generator" / "config.json").exists() else None
        if sub is None and not (root / "config.json").exists():
            raise CheckpointError(f"{path} is a folder without config.json or generator/config.json; "
                                  "expected a folder written by save_pretrained or `refinestyle convert`")
        return StyleGAN2Generator.from_pretrained(str(root), subfolder=sub).eval()
    if not p.exists():
        raise FileNotFoundError(f"no such checkpoint: {p}")
    obj = read_checkpoint(p, max_elements=max_elements)
    try:
        return _from_mapping(obj, path=p, overrides=overrides, max_elements=max_elements)
    except CheckpointError as err:
        message = str(err)
        raise CheckpointError(message if message.startswith(str(p)) else f"{p}: {message}") from None
    except (KeyError, IndexError, TypeError, AttributeError, ValueError, RuntimeError, RecursionError, OverflowError) as err:
        raise CheckpointError(f"{p}: not a valid StyleGAN2 checkpoint ({type(err).__name__}: {str(err)[:200]})") from None
