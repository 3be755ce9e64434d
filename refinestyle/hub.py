"""Hub I/O shared by every model: resolving local folders or repo ids, strict safetensors loading.

Loading never unpickles: configs are JSON, weights are safetensors. Models store their weights as
``diffusion_pytorch_model.safetensors`` (the diffusers name) next to ``config.json``; a *variant* (diffusers'
``variant="fp16"``) is another copy of the weights beside it, ``diffusion_pytorch_model.fp16.safetensors``.
"""

from __future__ import annotations

import inspect
import json
import os
import re
from pathlib import Path
from typing import Optional, TypeVar

import torch

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
CONFIG_NAME = "config.json"
REPO_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# The storage dtype a variant's name promises (save_pretrained(variant="fp16") without dtype= stores float16).
VARIANT_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
VARIANT_RE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")

T = TypeVar("T")


class HubError(OSError):
    """A model folder or repo that cannot be found or read; the message says what is missing and what to do."""


def resolve_repo(path_or_repo: str | os.PathLike, *, revision: str | None = None, cache_dir: str | None = None) -> Path:
    """A local folder as is, or a Hub repo id resolved to its snapshot folder (download unless offline)."""
    path = Path(path_or_repo)
    if path.is_dir():
        return path
    repo_id = str(path_or_repo)
    if not REPO_ID_RE.match(repo_id) or path.exists():
        raise HubError(f"{repo_id!r} is neither an existing folder nor a Hub repo id of the form 'org/name'")
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    offline = constants.HF_HUB_OFFLINE
    try:
        return Path(snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, local_files_only=offline))
    except (RevisionNotFoundError,) as err:
        raise HubError(f"repo {repo_id!r} has no revision {revision!r}: {err}") from None
    except (RepositoryNotFoundError, GatedRepoError) as err:
        raise HubError(f"repo {repo_id!r} was not found or is gated (log in with `hf auth login`): {err}") from None
    except LocalEntryNotFoundError:
        where = cache_dir or constants.HF_HUB_CACHE
        why = "HF_HUB_OFFLINE=1 forbids downloading" if offline else "the Hub could not be reached"
        raise HubError(
            f"repo {repo_id!r} (revision {revision or 'main'}) is not in the local Hugging Face cache ({where}) and {why}. "
            f"Download it once where there is a network (`hf download {repo_id}`), point HF_HUB_CACHE at a cache that "
            "holds it, or pass a local folder instead"
        ) from None
    except (HfHubHTTPError, OSError) as err:
        raise HubError(f"could not fetch {repo_id!r} from the Hub: {err}") from None


def read_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise HubError(f"missing {path.name} in {path.parent}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise HubError(f"{path} is not valid JSON ({err}); the folder is corrupt, re-download or re-save it") from None
    if not isinstance(data, dict):
        raise HubError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def variant_file(weights_name: str, variant: Optional[str]) -> str:
    """diffusers' variant naming: ``("diffusion_pytorch_model.safetensors", "fp16")`` → ``diffusion_pytorch_model.fp16.safetensors``."""
    if variant is None:
        return weights_name
    if not isinstance(variant, str) or not VARIANT_RE.match(variant):
        raise ValueError(f"variant must be 1-32 letters, digits, '-' or '_' (e.g. 'fp16'), got {variant!r}")
    stem, ext = weights_name.rsplit(".", 1)
    return f"{stem}.{variant}.{ext}"


def weights_path(folder: Path, weights_name: str, variant: Optional[str]) -> Path:
    """The weights file of ``variant`` in ``folder``; a missing variant is named along with the ones there are."""
    path = folder / variant_file(weights_name, variant)
    if variant is not None and not path.exists():
        stem, ext = weights_name.rsplit(".", 1)
        found = sorted(f.name[len(stem) + 1:-len(ext) - 1] for f in folder.glob(f"{stem}.*.{ext}")) if folder.is_dir() else []
        plain = (folder / weights_name).exists()
        have = ", ".join([*(repr(v) for v in found), *(["the default (no variant=)"] if plain else [])]) or "no weights at all"
        raise HubError(f"{folder} has no {variant!r} variant ({path.name}); it has {have}. Load another, or write this one "
                       f"with save_pretrained(..., variant={variant!r})")
    return path


def check_use_safetensors(use_safetensors: Optional[bool]) -> None:
    """diffusers' ``use_safetensors``: None and True read safetensors; False would read pickles, which we never do."""
    if use_safetensors is False:
        raise HubError("use_safetensors=False asks for pickled weights, which refinestyle never loads (a pickle can run "
                       "code); convert them to safetensors, e.g. with `refinestyle convert`")
    if use_safetensors not in (None, True):
        raise ValueError(f"use_safetensors must be None or True, got {use_safetensors!r}")


def storage_dtype(dtype: Optional[torch.dtype], variant: Optional[str]) -> torch.dtype:
    """What ``save_pretrained`` stores floats as: ``dtype``; else the dtype the variant's name promises; else float32."""
    promised = VARIANT_DTYPES.get(variant) if variant is not None else None
    if dtype is None:
        return promised or torch.float32
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
    if promised is not None and dtype != promised:
        raise ValueError(f"variant {variant!r} names {promised} weights, but dtype={dtype}; drop one of them")
    return dtype


def load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.exists():
        others = sorted(p.name for p in path.parent.glob("*")) if path.parent.exists() else []
        hint = " (pickled weights are never loaded; convert them to safetensors)" if any(o.endswith((".bin", ".pt", ".pkl")) for o in others) else ""
        raise HubError(f"missing weights {path.name} in {path.parent}{hint}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise HubError(f"{path} is not a readable safetensors file ({err}); re-download or re-save it") from None


def save_safetensors(state: dict[str, torch.Tensor], path: Path, *, metadata: dict[str, str], like: Path) -> None:
    """``safetensors.torch.save_file``, then the permissions of ``like`` (a file just written beside it):
    safetensors writes its files owner-only (0600), which other users of a shared model folder could not read."""
    from safetensors.torch import save_file

    save_file(state, str(path), metadata=metadata)
    os.chmod(path, like.stat().st_mode & 0o777)


def strict_load(model: torch.nn.Module, state: dict[str, torch.Tensor], *, source: str) -> None:
    """``load_state_dict`` that casts dtypes and names every missing, unexpected or misshaped key."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [f"{k} {list(state[k].shape)} != {list(own[k].shape)}" for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:8]}{' ...' if len(missing) > 8 else ''}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}")
        if wrong:
            parts.append(f"shape mismatches {wrong[:8]}")
        raise HubError(f"weights in {source} do not fit {type(model).__name__} with its config: " + "; ".join(parts))
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)


class HubModelMixin:
    """``save_pretrained`` / ``from_pretrained`` over config.json + safetensors for our ``ModelMixin`` models.

    The arguments are diffusers' (``subfolder``, ``revision``, ``variant``, ``torch_dtype``, ``use_safetensors``, plus
    ``device``) and the files are diffusers' (``config.json``, ``diffusion_pytorch_model[.<variant>].safetensors``),
    so diffusers tools read our folders. The loading is our own, not ``ModelMixin.from_pretrained``: that one falls
    back to pickled ``.bin`` files, ignores unknown config keys, and only warns about unexpected weights, where we
    refuse pickles, name every unknown config key and every missing, unexpected or misshaped weight.
    """

    def save_pretrained(self, save_directory: str | os.PathLike, *, dtype: Optional[torch.dtype] = None,
                        variant: Optional[str] = None) -> Path:
        """``config.json`` and the weights as ``dtype`` (default: the variant's, e.g. float16 for ``"fp16"``; else
        float32) in ``diffusion_pytorch_model[.<variant>].safetensors``; another variant in the folder stays."""
        dtype = storage_dtype(dtype, variant)
        name = variant_file(WEIGHTS_NAME, variant)
        out = Path(save_directory)
        out.mkdir(parents=True, exist_ok=True)
        self.save_config(out)
        state = {k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous() for k, v in self.state_dict().items()}
        save_safetensors(state, out / name, metadata={"format": "pt", "class": type(self).__name__}, like=out / CONFIG_NAME)
        return out

    def push_to_hub(self, repo_id: str, *, token: Optional[str] = None, private: Optional[bool] = None,
                    commit_message: str = "Upload with refinestyle", dtype: Optional[torch.dtype] = None,
                    variant: Optional[str] = None) -> str:
        """Save to a temporary folder and upload it as the Hub repo ``repo_id``; returns the repo URL."""
        import tempfile

        from huggingface_hub import HfApi

        if not REPO_ID_RE.match(repo_id):
            raise HubError(f"repo_id must look like 'user/name', got {repo_id!r}")
        api = HfApi(token=token)
        with tempfile.TemporaryDirectory() as tmp:
            self.save_pretrained(tmp, dtype=dtype, variant=variant)
            url = api.create_repo(repo_id, private=private, exist_ok=True)
            api.upload_folder(repo_id=repo_id, folder_path=tmp, commit_message=commit_message)
        return str(url)

    @classmethod
    def validated_config(cls, config: dict, *, source: str) -> dict:
        """Only the constructor's own arguments (private ``_`` keys dropped); unknown keys are an error."""
        params = inspect.signature(cls.__init__).parameters
        known = {k for k in params if k != "self"}
        unknown = sorted(k for k in config if not k.startswith("_") and k not in known)
        if unknown:
            raise HubError(f"{source} has config keys {unknown} that {cls.__name__} does not know; "
                           "was it written by a newer refinestyle or for another model?")
        cls_name = config.get("_class_name")
        if cls_name is not None and cls_name != cls.__name__:
            raise HubError(f"{source} holds a {cls_name}, not a {cls.__name__}")
        return {k: v for k, v in config.items() if k in known}

    @classmethod
    def from_pretrained(
        cls: type[T],
        pretrained_model_name_or_path: str | os.PathLike,
        *,
        subfolder: Optional[str] = None,
        revision: Optional[str] = None,
        cache_dir: Optional[str] = None,
        torch_dtype: Optional[torch.dtype] = None,
        device: str | torch.device = "cpu",
        variant: Optional[str] = None,
        use_safetensors: Optional[bool] = None,
    ) -> T:
        """A model from a folder or Hub repo (``subfolder`` inside it), its weights cast to ``torch_dtype`` (default
        float32, whatever they were stored as) on ``device``; ``variant="fp16"`` reads
        ``diffusion_pytorch_model.fp16.safetensors``. Every weight must match the config's model exactly."""
        check_use_safetensors(use_safetensors)
        name = variant_file(WEIGHTS_NAME, variant)  # a malformed variant fails before any download
        root = resolve_repo(pretrained_model_name_or_path, revision=revision, cache_dir=cache_dir)
        folder = root / subfolder if subfolder else root
        if not folder.is_dir():
            raise HubError(f"{root} has no subfolder {subfolder!r}")
        config = cls.validated_config(read_json(folder / CONFIG_NAME), source=str(folder / CONFIG_NAME))
        path = weights_path(folder, WEIGHTS_NAME, variant)
        try:
            model = cls(**config)
        except (TypeError, ValueError) as err:
            raise HubError(f"invalid config in {folder / CONFIG_NAME}: {err}") from None
        strict_load(model, load_safetensors(path), source=str(folder / name))
        # nn.Module.to: diffusers' override warns about fp32 modules we do not have.
        return torch.nn.Module.to(model, device=device, dtype=torch_dtype or torch.float32).eval()
