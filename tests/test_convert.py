"""load_stylegan2: every supported layout against the reference outputs; unsafe and broken files refused."""

import argparse
import collections
import io
import pickle
import sys
import types
import warnings

import pytest
import torch
from safetensors.torch import save_file

from refinestyle import CheckpointError, StyleGAN2Generator, load_stylegan2

RES = [16, 32]


def _refs(fixtures_dir, r):
    return torch.load(fixtures_dir / f"refs-tiny-{r}.pt", weights_only=True)


def _assert_matches_refs(G, refs):
    with torch.no_grad():
        assert torch.allclose(G.mapping(refs["z"]), refs["ws_psi1"], atol=1e-5)
        assert torch.allclose(G(refs["z"], truncation_psi=0.7), refs["img_psi07"], atol=1e-4)
        assert torch.allclose(G.synthesis(refs["ws"], noise_mode="none"), refs["img_ws_noise_none"], atol=1e-4)
        assert torch.allclose(G.synthesis(refs["ws"]), refs["img_ws"], atol=1e-4)


@pytest.mark.parametrize("r", RES)
def test_rosinality_and_nvlabs_layouts_agree_with_refs(fixtures_dir, r):
    G_ros = load_stylegan2(fixtures_dir / f"rosinality-tiny-{r}.pt")
    G_nv = load_stylegan2(str(fixtures_dir / f"nvlabs-tiny-{r}.state_dict.pt"))
    _assert_matches_refs(G_ros, _refs(fixtures_dir, r))
    _assert_matches_refs(G_nv, _refs(fixtures_dir, r))
    a, b = G_ros.state_dict(), G_nv.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert G_ros.config.resolution == r and G_ros.num_ws == 2 * (r.bit_length() - 1) - 2


def test_safetensors_and_legacy_torch_files(fixtures_dir, tmp_path):
    sd = torch.load(fixtures_dir / "nvlabs-tiny-16.state_dict.pt", weights_only=True)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "g.safetensors"))
    _assert_matches_refs(load_stylegan2(tmp_path / "g.safetensors"), _refs(fixtures_dir, 16))
    ros = torch.load(fixtures_dir / "rosinality-tiny-16.pt", weights_only=True)
    torch.save(ros, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    _assert_matches_refs(load_stylegan2(tmp_path / "legacy.pt"), _refs(fixtures_dir, 16))


def test_rosinality_training_checkpoint_estimates_w_avg(fixtures_dir, tmp_path):
    ros = torch.load(fixtures_dir / "rosinality-tiny-32.pt", weights_only=True)
    train_ckpt = {"g": ros["g_ema"], "d": {"convs.0.weight": torch.zeros(1)}, "g_ema": ros["g_ema"],
                  "g_optim": {"state": {}, "param_groups": []}, "args": argparse.Namespace(size=32, n_mlp=2)}
    torch.save(train_ckpt, tmp_path / "train.pt")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        G = load_stylegan2(tmp_path / "train.pt")
    assert any("latent_avg" in str(w.message) for w in caught)
    # The estimate (10,000 samples) is close to the fixture's 4,096-sample mean.
    err = (G.mapping.w_avg - ros["latent_avg"]).norm() / ros["latent_avg"].norm()
    assert err < 0.05, err
    refs = _refs(fixtures_dir, 32)
    with torch.no_grad():
        assert torch.allclose(G.synthesis(refs["ws"]), refs["img_ws"], atol=1e-4)
    # The estimate runs where the generator is (GPU training checkpoints call it); "meta" stands in for a GPU.
    from refinestyle.convert import estimate_w_avg

    assert estimate_w_avg(G.to("meta"), num_samples=8).device.type == "meta"


# --- NVlabs pickles, built with the same structure as stylegan2-ada-pytorch snapshots ------------

MARKER_CODE = "import pathlib; pathlib.Path({path!r}).write_text('pwned')"


@pytest.fixture
def fake_nvlabs_modules(monkeypatch):
    """Stand-ins for torch_utils.persistence and dnnlib.util so that the test can *write* such pickles."""
    persistence = types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):  # pragma: no cover - only referenced by name in the pickle
        raise AssertionError("the loader must never call NVlabs' reconstruct function")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    dnnlib_util = types.ModuleType("dnnlib.util")

    class EasyDict(dict):
        pass

    EasyDict.__module__ = "dnnlib.util"
    EasyDict.__qualname__ = "EasyDict"
    dnnlib_util.EasyDict = EasyDict
    for name, mod in {"torch_utils": types.ModuleType("torch_utils"), "torch_utils.persistence": persistence,
                      "dnnlib": types.ModuleType("dnnlib"), "dnnlib.util": dnnlib_util}.items():
        monkeypatch.setitem(sys.modules, name, mod)
    return persistence, EasyDict


class _Persistent:
    def __init__(self, reconstruct, meta):
        self.reconstruct, self.meta = reconstruct, meta

    def __reduce__(self):
        return (self.reconstruct, (self.meta,))


def _snapshot_record(module, reconstruct, module_src, init_kwargs=None):
    state = {
        "training": False,
        "_parameters": collections.OrderedDict((k, v.detach().clone()) for k, v in module._parameters.items()),
        "_buffers": collections.OrderedDict((k, v.clone()) for k, v in module._buffers.items()),
        "_modules": collections.OrderedDict(
            (k, _snapshot_record(m, reconstruct, module_src)) for k, m in module._modules.items()),
        "_forward_hooks": collections.OrderedDict(),
    }
    if init_kwargs is not None:
        state["_init_args"] = ()
        state["_init_kwargs"] = init_kwargs
    meta = {"type": "class", "version": 4, "module_src": module_src, "class_name": "training.networks.Generator", "state": state}
    return _Persistent(reconstruct, meta)


def _write_snapshot(path, G, kwargs, fake):
    reconstruct, EasyDict = fake
    marker = path.parent / "pwned.txt"
    record = _snapshot_record(G, reconstruct._reconstruct_persistent_obj, MARKER_CODE.format(path=str(marker)),
                              init_kwargs=EasyDict(kwargs))
    data = {"G": record, "D": None, "G_ema": record, "training_set_kwargs": EasyDict(resolution=G.config.resolution)}
    path.write_bytes(pickle.dumps(data, protocol=4))
    return marker


@pytest.mark.parametrize("r", RES)
def test_nvlabs_pickle_snapshot_without_running_its_code(fixtures_dir, tmp_path, fake_nvlabs_modules, r):
    import json

    kwargs = json.loads((fixtures_dir / f"nvlabs-tiny-{r}.json").read_text())
    source = load_stylegan2(fixtures_dir / f"nvlabs-tiny-{r}.state_dict.pt")
    marker = _write_snapshot(tmp_path / "snapshot.pkl", source, kwargs, fake_nvlabs_modules)
    # Reading must not need the fake modules: remove them as a real user's environment would.
    for name in ("torch_utils", "torch_utils.persistence", "dnnlib", "dnnlib.util"):
        sys.modules.pop(name)
    G = load_stylegan2(tmp_path / "snapshot.pkl")
    assert not marker.exists()
    assert G.config.mapping_lr_multiplier == 0.01 and G.config.resolution == r
    _assert_matches_refs(G, _refs(fixtures_dir, r))


def test_conditional_snapshot_is_refused(fixtures_dir, tmp_path, fake_nvlabs_modules):
    source = load_stylegan2(fixtures_dir / "nvlabs-tiny-16.state_dict.pt")
    kwargs = dict(z_dim=32, c_dim=10, w_dim=32, img_resolution=16, img_channels=3)
    _write_snapshot(tmp_path / "cond.pkl", source, kwargs, fake_nvlabs_modules)
    with pytest.raises(CheckpointError, match="class-conditional"):
        load_stylegan2(tmp_path / "cond.pkl")


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_code_running_pickle_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "ran.txt"
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"G_ema": _Evil(marker)}, protocol=2))
    with pytest.raises(CheckpointError, match=r"refusing to unpickle the global (posix|os|nt)\.system"):
        load_stylegan2(tmp_path / "evil.pkl")
    assert not marker.exists()
    # The same object inside a torch zip file is refused by torch's weights-only loader.
    torch.save({"g_ema": _Evil(marker)}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="outside plain tensors"):
        load_stylegan2(tmp_path / "evil.pt")
    assert not marker.exists()


def test_unsupported_and_broken_files(fixtures_dir, tmp_path):
    cases = {
        "tf.pkl": (b"\x80\x02cdnnlib.tflib.network\nNetwork\n)\x81.", "TensorFlow-era"),
        "empty.pt": (b"", "an empty file"),
        "notes.txt": (b"hello, not weights\n", "a text file"),
        "image.png": (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "a PNG image"),
        "noise.bin": (bytes(range(7, 256)) * 3, "unrecognised binary"),
        "trunc.pkl": (pickle.dumps({"G_ema": list(range(100))}, protocol=4)[:40], "truncated or corrupt"),
    }
    data = (fixtures_dir / "rosinality-tiny-16.pt").read_bytes()
    cases["truncated.pt"] = (data[: len(data) // 2], "truncated or corrupt")
    cases["other.pt"] = (None, "not a StyleGAN2 generator")
    for name, (content, message) in cases.items():
        path = tmp_path / name
        if content is None:
            torch.save({"model": {"fc.weight": torch.zeros(2, 2)}}, path)
        else:
            path.write_bytes(content)
        with pytest.raises(CheckpointError, match=message):
            load_stylegan2(path)
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        load_stylegan2(tmp_path / "missing.pt")


def test_missing_and_extra_tensors_are_named(fixtures_dir, tmp_path):
    sd = torch.load(fixtures_dir / "nvlabs-tiny-16.state_dict.pt", weights_only=True)
    sd.pop("synthesis.b8.conv1.bias")
    torch.save(sd, tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match=r"lacks 1 expected tensors: \['synthesis.b8.conv1.bias'\]"):
        load_stylegan2(tmp_path / "missing.pt")
    ros = torch.load(fixtures_dir / "rosinality-tiny-16.pt", weights_only=True)
    ros["g_ema"]["extra.weight"] = torch.zeros(3)
    torch.save(ros, tmp_path / "extra.pt")
    with pytest.raises(CheckpointError, match=r"does not use: \['extra.weight'\]"):
        load_stylegan2(tmp_path / "extra.pt")


def test_our_folders_load(fixtures_dir, tmp_path):
    G = load_stylegan2(fixtures_dir / "rosinality-tiny-16.pt")
    G.save_pretrained(tmp_path / "gen")
    again = load_stylegan2(tmp_path / "gen")
    assert isinstance(again, StyleGAN2Generator)
    _assert_matches_refs(again, _refs(fixtures_dir, 16))
