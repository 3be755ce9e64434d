"""Load official StyleGAN2 checkpoints into ``StyleGAN2Generator`` without running code from the file.

Supported inputs (``load_stylegan2`` sniffs the format from the bytes, not the extension):

* rosinality ``.pt``: ``{'g_ema', 'latent_avg'}`` (converted weights) or training checkpoints
  ``{'g', 'd', 'g_ema', 'args', ...}`` without ``latent_avg`` (``w_avg`` is then estimated).
  Read with ``torch.load(weights_only=True)``.
* NVlabs ``.pkl`` snapshots (stylegan2-ada-pytorch / stylegan3 with a StyleGAN2 generator): read
  through ``RestrictedUnpickler``, which maps NVlabs' persistence wrapper to a plain record and
  refuses every global outside a small allowlist, so the source code embedded in the pickle is
  never imported or executed.
* NVlabs plain state dicts (``.pt`` with ``synthesis.b4.const`` ...): config inferred from shapes.
* safetensors files in either layout, and our own folders / Hub repos.

Key maps are readable tables (``rosinality_key_map``, ``nvlabs_key_map``); every conversion ends
with a parity check that the inverse map reproduces the source tensors exactly.
"""

from __future__ import annotations

import collections
import io
import json
import math
import pickle
import struct
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from .models.stylegan2 import StyleGAN2Generator, default_channels, fir_filter_2d

TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class CheckpointError(ValueError):
    """A file that is not a supported StyleGAN2 checkpoint; the message says what it is and what to do."""


# --------------------------------------------------------------------------------------------------
# Restricted unpickling of NVlabs snapshots


@dataclass
class PersistentRecord:
    """What NVlabs' ``persistence`` wrapper pickles for a module: its class name and ``__dict__``.

    The embedded ``module_src`` is kept as text only for diagnostics; it is never executed.
    """

    class_name: str
    state: dict
    module_src_len: int


def _reconstruct_persistent_record(meta: dict) -> PersistentRecord:
    if not isinstance(meta, dict) or "state" not in meta:
        raise CheckpointError("malformed NVlabs persistent object (no 'state' in its metadata)")
    return PersistentRecord(
        class_name=str(meta.get("class_name", "?")),
        state=meta["state"],
        module_src_len=len(meta.get("module_src", "") or ""),
    )


class AttrDict(dict):
    """Stand-in for ``dnnlib.EasyDict``: a dict, nothing more."""


def _load_storage_from_bytes(data: bytes):
    # Tensor storages inside a plain pickle are nested torch.save blobs: read them safely too.
    return torch.load(io.BytesIO(data), weights_only=True)


def _rebuild_parameter(data, requires_grad, backward_hooks, *state):
    return data  # a plain tensor is all we need


def _numpy_global(name: str):
    import numpy

    core = getattr(numpy, "_core", None) or numpy.core
    return {"dtype": numpy.dtype, "scalar": core.multiarray.scalar, "_reconstruct": core.multiarray._reconstruct,
            "ndarray": numpy.ndarray}[name]


_TF_MODULE_PREFIXES = ("dnnlib.tflib", "tensorflow")

SAFE_GLOBALS: dict[tuple[str, str], Callable[[], Any]] = {
    ("collections", "OrderedDict"): lambda: collections.OrderedDict,
    ("builtins", "set"): lambda: set,
    ("builtins", "frozenset"): lambda: frozenset,
    ("torch._utils", "_rebuild_tensor_v2"): lambda: torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): lambda: _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): lambda: _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): lambda: _load_storage_from_bytes,
    ("torch", "Size"): lambda: torch.Size,
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): lambda: _reconstruct_persistent_record,
    ("dnnlib.util", "EasyDict"): lambda: AttrDict,
    ("dnnlib", "EasyDict"): lambda: AttrDict,
    ("numpy", "dtype"): lambda: _numpy_global("dtype"),
    ("numpy", "ndarray"): lambda: _numpy_global("ndarray"),
    ("numpy.core.multiarray", "scalar"): lambda: _numpy_global("scalar"),
    ("numpy._core.multiarray", "scalar"): lambda: _numpy_global("scalar"),
    ("numpy.core.multiarray", "_reconstruct"): lambda: _numpy_global("_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): lambda: _numpy_global("_reconstruct"),
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only allowlisted globals; anything else is refused before it runs."""

    def find_class(self, module: str, name: str):
        if module.startswith(_TF_MODULE_PREFIXES):
            raise CheckpointError(
                "this is a TensorFlow-era StyleGAN2 pickle (dnnlib.tflib), which needs TensorFlow 1.x to read. "
                "Convert it first (NVlabs stylegan2-ada-pytorch `legacy.py` or rosinality `convert_weight.py`), "
                "then pass the resulting .pkl/.pt to load_stylegan2"
            )
        factory = SAFE_GLOBALS.get((module, name))
        if factory is None:
            raise CheckpointError(
                f"refusing to unpickle the global {module}.{name}: it is not on the allowlist of plain containers "
                "and tensors, and loading it could run code from the file. If this is a genuine StyleGAN2 "
                "checkpoint, convert it to a state dict or safetensors in its own code base and load that"
            )
        return factory()

    def persistent_load(self, pid):
        raise CheckpointError("unexpected persistent id in a plain pickle; is this a torch.save file that was truncated?")


def restricted_load(data: bytes) -> Any:
    """Unpickle ``data`` with ``RestrictedUnpickler`` (never imports or runs code named in the file)."""
    try:
        return RestrictedUnpickler(io.BytesIO(data)).load()
    except CheckpointError:
        raise
    except (EOFError, pickle.UnpicklingError, struct.error, ValueError, IndexError, KeyError) as err:
        raise CheckpointError(f"the pickle is truncated or corrupt ({type(err).__name__}: {err}); download it again") from None


def record_state_dict(record: PersistentRecord, prefix: str = "") -> dict[str, torch.Tensor]:
    """Flatten a pickled module tree (``_parameters``, ``_buffers``, ``_modules``) into a state dict."""
    state = record.state
    out: dict[str, torch.Tensor] = {}
    for group in ("_parameters", "_buffers"):
        for key, value in (state.get(group) or {}).items():
            if isinstance(value, torch.Tensor):
                out[prefix + key] = value
    for key, child in (state.get("_modules") or {}).items():
        if child is None:
            continue
        if not isinstance(child, PersistentRecord):
            raise CheckpointError(f"submodule {prefix + key} is a {type(child).__name__}, not a StyleGAN2 layer")
        out.update(record_state_dict(child, prefix + key + "."))
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
                                     overrides: dict | None = None) -> StyleGAN2Generator:
    config = config or infer_nvlabs_config(sd, overrides=overrides or {})
    target = _skeleton(config).state_dict()
    return _build(config, apply_key_map(sd, nvlabs_key_map(config), target))


@torch.no_grad()
def estimate_w_avg(G: StyleGAN2Generator, *, num_samples: int = 10_000, seed: int = 0) -> torch.Tensor:
    z = torch.randn(num_samples, G.config.z_dim, generator=torch.Generator().manual_seed(seed))  # on the CPU: same z on any device
    return G.mapping_module(z.to(G.mapping_module.w_avg.device)).mean(dim=0)


def generator_from_rosinality(ckpt: dict, *, overrides: dict | None = None) -> StyleGAN2Generator:
    g = ckpt.get("g_ema")
    if g is None:
        raise CheckpointError(f"rosinality checkpoint has no 'g_ema' (keys: {sorted(ckpt)[:10]})")
    config = infer_rosinality_config(g, overrides=overrides or {})
    source = dict(g)
    latent_avg = ckpt.get("latent_avg")
    estimated = latent_avg is None
    source["latent_avg"] = torch.zeros(config["w_dim"]) if estimated else latent_avg.reshape(-1)
    target = _skeleton(config).state_dict()
    G = _build(config, apply_key_map(source, rosinality_key_map(config), target))
    if estimated:
        G.mapping_module.w_avg.copy_(estimate_w_avg(G))
        warnings.warn(
            "the checkpoint has no 'latent_avg' (a training checkpoint): w_avg was estimated as the mean of "
            "mapping(z) over 10,000 z drawn with seed 0; truncation uses that estimate",
            stacklevel=3,
        )
    return G


# --------------------------------------------------------------------------------------------------
# Sniffing and the public entry point


def describe_bytes(head: bytes) -> str:
    """A short guess at what a non-checkpoint file is, for error messages."""
    signatures = {b"\x89PNG": "a PNG image", b"\xff\xd8\xff": "a JPEG image", b"GIF8": "a GIF image",
                  b"%PDF": "a PDF document", b"\x1f\x8b": "a gzip archive", b"PK\x03\x04": "a zip archive",
                  b"\x89HDF": "an HDF5 (Keras) file"}
    for sig, what in signatures.items():
        if head.startswith(sig):
            return what
    if not head:
        return "an empty file"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return "an unrecognised binary file"
    return "a text file" if all(c.isprintable() or c in "\r\n\t" for c in text) else "an unrecognised binary file"


def _is_safetensors(head: bytes) -> bool:
    if len(head) < 10:
        return False
    n = struct.unpack("<Q", head[:8])[0]
    return 2 <= n < 100_000_000 and head[8:9] == b"{"


def _torch_load(path: Path) -> Any:
    import argparse as _argparse

    try:
        # Training checkpoints carry an argparse.Namespace of hyper-parameters: a plain record.
        with torch.serialization.safe_globals([_argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(f"{path} holds objects outside plain tensors and containers ({err}). "
                              "Only weights are read; re-save it as a state dict (torch.save(G.state_dict()))") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as err:
        raise CheckpointError(f"{path} is a truncated or corrupt torch file ({type(err).__name__}: {str(err)[:200]}); "
                              "download or save it again") from None


def _from_mapping(obj: Any, *, path: Path, overrides: dict) -> StyleGAN2Generator:
    """Dispatch a loaded dict on its keys: rosinality, NVlabs state dict, or an NVlabs snapshot."""
    if isinstance(obj, dict) and "g_ema" in obj:
        return generator_from_rosinality(obj, overrides=overrides)
    if isinstance(obj, dict) and "G_ema" in obj:
        record = obj["G_ema"]
        if not isinstance(record, PersistentRecord):
            raise CheckpointError(f"{path}: 'G_ema' is a {type(record).__name__}, expected an NVlabs network")
        sd = record_state_dict(record)
        kwargs = record.state.get("_init_kwargs")
        config = config_from_nvlabs_kwargs(dict(kwargs), overrides=overrides) if kwargs else None
        return generator_from_nvlabs_state_dict(sd, config=config, overrides=overrides)
    if isinstance(obj, dict) and "synthesis.b4.const" in obj:
        return generator_from_nvlabs_state_dict(obj, overrides=overrides)
    if isinstance(obj, dict) and "input.input" in obj:
        return generator_from_rosinality({"g_ema": obj}, overrides=overrides)
    keys = sorted(obj)[:10] if isinstance(obj, dict) else type(obj).__name__
    raise CheckpointError(f"{path} is a readable checkpoint but not a StyleGAN2 generator (top level: {keys}). "
                          "Expected rosinality {'g_ema', 'latent_avg'}, an NVlabs snapshot with 'G_ema', or a generator state dict")


def load_stylegan2(path: str | Path, *, revision: str | None = None, mapping_lr_multiplier: float | None = None,
                   conv_clamp: float | None = None) -> StyleGAN2Generator:
    """Load any supported StyleGAN2 checkpoint as a ``StyleGAN2Generator`` (float32, eval mode, on CPU).

    Never executes code from the file: torch files are read with ``weights_only=True``, NVlabs pickles
    with ``RestrictedUnpickler``.

    Args:
        path: a rosinality ``.pt``, NVlabs ``.pkl``, NVlabs state-dict ``.pt``, a safetensors file, one of
            our Hub-layout folders (or its ``generator/`` subfolder), or a Hub repo id.
        revision: Hub revision when ``path`` is a repo id.
        mapping_lr_multiplier: override for formats that do not record it (default 0.01, as official StyleGAN2).
        conv_clamp: override for formats that do not record it (state dicts; NVlabs ADA configs use 256).

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
    with open(p, "rb") as f:
        head = f.read(64)
    if head.startswith(b"PK\x03\x04"):
        return _from_mapping(_torch_load(p), path=p, overrides=overrides)
    if _is_safetensors(head):
        from safetensors.torch import load_file

        try:
            return _from_mapping(load_file(str(p)), path=p, overrides=overrides)
        except CheckpointError:
            raise
        except Exception as err:  # safetensors raises its own error types for corrupt headers
            raise CheckpointError(f"{p} is a corrupt safetensors file ({err})") from None
    if head[:1] == b"\x80" and 2 <= head[1:2][0] <= 5:
        data = p.read_bytes()
        first = restricted_load(data)
        if first == TORCH_LEGACY_MAGIC:  # a pre-1.6 torch.save file: torch's own safe loader reads it
            return _from_mapping(_torch_load(p), path=p, overrides=overrides)
        return _from_mapping(first, path=p, overrides=overrides)
    raise CheckpointError(f"{p} is {describe_bytes(head)}, not a StyleGAN2 checkpoint. Supported: rosinality .pt, "
                          "NVlabs .pkl snapshots, NVlabs state-dict .pt, safetensors, or a folder from `refinestyle convert`")

