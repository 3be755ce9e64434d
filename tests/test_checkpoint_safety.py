"""Hostile checkpoints, crafted here: each is refused with ``CheckpointError``, nothing in it runs, the
process's torch is unchanged afterwards, and no load allocates more than a small multiple of the file."""

import collections
import io
import json
import pickle
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from refinestyle import CheckpointError, load_stylegan2
from refinestyle.checkpoint_reader import TORCH_LEGACY_MAGIC, read_checkpoint


# --------------------------------------------------------------------------------------------------
# A small pickle assembler: the hostile files are written opcode by opcode, as an attacker would.


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _str(text: str) -> bytes:
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def _int(value: int) -> bytes:
    if 0 <= value < 2**31:
        return b"J" + struct.pack("<i", value)
    data = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(data)]) + data


def _tuple(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"


def _dict(**items: bytes) -> bytes:
    return b"}(" + b"".join(_str(k) + v for k, v in items.items()) + b"u"


def _pickle(body: bytes) -> bytes:
    return b"\x80\x02" + body + b"."


def _tensor_call(pid: bytes, size: tuple, stride: tuple, offset: int = 0) -> bytes:
    """``_rebuild_tensor_v2(<persistent storage>, offset, size, stride, False, OrderedDict())``."""
    return (_global("torch._utils", "_rebuild_tensor_v2")
            + _tuple(pid + b"Q", _int(offset), _tuple(*map(_int, size)), _tuple(*map(_int, stride)), b"\x89",
                     _global("collections", "OrderedDict") + b")R")
            + b"R")


def _storage_pid(key: str, numel: int, legacy: bool = False) -> bytes:
    items = [_str("storage"), _global("torch", "FloatStorage"), _str(key), _str("cpu"), _int(numel)]
    return _tuple(*items, *([b"N"] if legacy else []))


def _torch_zip(data_pkl: bytes, storages: dict[str, bytes], *, compression=zipfile.ZIP_STORED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=compression) as zf:
        zf.writestr("archive/data.pkl", data_pkl)
        for key, raw in storages.items():
            zf.writestr(f"archive/data/{key}", raw)
        zf.writestr("archive/version", b"3\n")
    return out.getvalue()


def _torch_legacy(main: bytes, keys: list[str], raw: dict[str, bytes]) -> bytes:
    head = pickle.dumps(TORCH_LEGACY_MAGIC, protocol=2) + pickle.dumps(1001, protocol=2)
    head += pickle.dumps({"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}, protocol=2)
    tail = pickle.dumps(keys, protocol=2)
    for key in keys:
        tail += struct.pack("<q", len(raw[key]) // 4) + raw[key]
    return head + main + tail


# --------------------------------------------------------------------------------------------------
# The hostile files: name -> (bytes, what the refusal must say)


def _hostile_files(tmp_path: Path, fixtures: Path) -> dict[str, tuple[bytes, str]]:
    marker = tmp_path / "ran.txt"
    touch = f"import pathlib; pathlib.Path({str(marker)!r}).write_text('pwned')"
    files = {}
    # 1-2. Code execution through __reduce__ (os.system) and through a GLOBAL (builtins.exec).
    files["reduce.pkl"] = (_pickle(_global("os", "system") + _tuple(_str(f"touch {marker}")) + b"R"), r"global os\.system")
    files["global.pkl"] = (_pickle(_global("builtins", "exec") + _tuple(_str(touch)) + b"R"), r"global builtins\.exec")
    files["reduce-in-zip.pt"] = (_torch_zip(_pickle(_global("builtins", "eval") + _tuple(_str(touch)) + b"R"), {}),
                                 r"global builtins\.eval")
    # 3. BUILD on allow-listed functions and classes: would rewrite torch's own loader for the whole process.
    poison = _dict(__defaults__=_tuple(_dict(neg=b"\x88")))
    files["build-function.pkl"] = (_pickle(_global("torch._utils", "_rebuild_tensor_v2") + poison + b"b"), "sets state on")
    files["build-slots.pt"] = (_torch_zip(_pickle(_global("torch._utils", "_rebuild_tensor_v2") + _tuple(b"N", poison) + b"b"), {}),
                               "sets state on")
    files["build-class.pkl"] = (_pickle(_global("collections", "OrderedDict") + _dict(__init__=b"N") + b"b"), "sets state on")
    # 4. Huge declared storages: 10^12 floats in a 400-byte file, zip and pre-1.6 layouts.
    giant = 10**12
    files["huge-storage.pt"] = (_torch_zip(_pickle(_dict(w=_tensor_call(_storage_pid("0", giant), (giant,), (1,)))), {"0": b"\0" * 4}),
                                "declare")
    legacy_main = _pickle(_dict(w=_tensor_call(_storage_pid("0", giant, legacy=True), (giant,), (1,))))
    files["huge-storage-legacy.pt"] = (_torch_legacy(legacy_main, [], {}), "declare")
    # 5. Stride-0 giant: a real NVlabs state dict whose widest kernel is a 4096-channel view of one float.
    sd = torch.load(fixtures / "nvlabs-tiny-16.state_dict.pt", weights_only=True)
    sd["synthesis.b4.conv1.weight"] = torch.zeros(1).expand(4096, 4096, 3, 3)
    buf = io.BytesIO()
    torch.save(sd, buf)
    files["stride0.pt"] = (buf.getvalue(), "stride 0")
    # 6. A view reaching past its storage.
    files["past-end.pt"] = (_torch_zip(_pickle(_dict(w=_tensor_call(_storage_pid("0", 4), (4,), (1,), offset=3))), {"0": b"\0" * 16}),
                            "reads past its storage")
    # 7. A deflate bomb: 256 MB of zeros packed into a few hundred KB.
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("archive/data.pkl", _pickle(_dict(w=_tensor_call(_storage_pid("0", 64 * 2**20), (64 * 2**20,), (1,)))),
                    compress_type=zipfile.ZIP_STORED)
        with zf.open("archive/data/0", "w") as member:
            chunk = b"\0" * 2**22
            for _ in range(64):
                member.write(chunk)
    files["bomb.pt"] = (out.getvalue(), "compressed")
    # 8. A self-referencing NVlabs module tree: G_ema's own _modules holds G_ema.
    record = (_global("torch_utils.persistence", "_reconstruct_persistent_obj")
              + b"}" + _str("state") + b"}" + _str("_modules") + b"}q\x02" + b"ss" + b"\x85R" + b"q\x03"
              + b"h\x02" + _str("loop") + b"h\x03" + b"s0")
    files["self-reference.pkl"] = (_pickle(record + b"}" + _str("G_ema") + b"h\x03s"), "contains itself")
    # 9. A snapshot declaring a 2^20 px generator (nothing may be built for it).
    kwargs = _dict(z_dim=_int(32), w_dim=_int(32), c_dim=_int(0), img_resolution=_int(2**20), img_channels=_int(3))
    state = _dict(_parameters=b"}", _buffers=b"}", _modules=b"}", _init_kwargs=kwargs)
    snapshot = _global("torch_utils.persistence", "_reconstruct_persistent_obj") + _tuple(_dict(state=state)) + b"R"
    files["huge-config.pkl"] = (_pickle(b"}" + _str("G_ema") + snapshot + b"s"), "resolution 1048576")
    # 10. Truncated and mislabelled files.
    good = (fixtures / "rosinality-tiny-16.pt").read_bytes()
    files["truncated.pt"] = (good[: len(good) * 2 // 3], "truncated or corrupt")
    legacy = io.BytesIO()
    torch.save(torch.load(fixtures / "rosinality-tiny-16.pt", weights_only=True), legacy, _use_new_zipfile_serialization=False)
    files["truncated-legacy.pt"] = (legacy.getvalue()[:-5000], "truncated")
    files["image.pkl"] = (b"\x89PNG\r\n\x1a\n" + b"\0" * 64, "a PNG image")
    other_zip = io.BytesIO()
    with zipfile.ZipFile(other_zip, "w") as zf:
        zf.writestr("word/document.xml", "<w:document/>")
    files["document.pt"] = (other_zip.getvalue(), "not a torch.save file")
    # 11. safetensors headers lying about offsets and sizes.
    header = json.dumps({"w": {"dtype": "F32", "shape": [4096, 4096], "data_offsets": [0, 4096 * 4096 * 4]}}).encode()
    files["lying.safetensors"] = (struct.pack("<Q", len(header)) + header + b"\0" * 16, "claims bytes")
    header = json.dumps({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                         "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}).encode()
    files["overlap.safetensors"] = (struct.pack("<Q", len(header)) + header + b"\0" * 12, "overlap")
    # 12. Entries that are not named tensors, and numpy arrays (which could carry object arrays).
    files["not-tensors.pkl"] = (_pickle(_dict(**{"synthesis.b4.const": _str("x")})), "not named tensors")
    files["int-keys.pkl"] = (_pickle(b"}" + _int(1) + _str("x") + b"s"), "not a StyleGAN2 generator")
    files["numpy.pkl"] = (_pickle(_global("numpy.core.multiarray", "_reconstruct") + _tuple(b"N", _tuple(_int(0)), b"C\x01b") + b"R"),
                          "numpy._reconstruct")
    return files


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    from .conftest import FIXTURES

    tmp = tmp_path_factory.mktemp("hostile")
    paths = {}
    for name, (data, message) in _hostile_files(tmp, FIXTURES).items():
        (tmp / name).write_bytes(data)
        paths[name] = (tmp / name, message)
    return tmp, paths


def _torch_fingerprint():
    return (torch._utils._rebuild_tensor_v2.__defaults__, dict(vars(torch._utils._rebuild_tensor_v2)),
            sorted(vars(collections.OrderedDict)), torch.Size.__init__)


def test_every_hostile_file_is_refused_and_nothing_runs(hostile, fixtures_dir):
    tmp, paths = hostile
    assert len(paths) >= 10
    before = _torch_fingerprint()
    for name, (path, message) in paths.items():
        with pytest.raises(CheckpointError) as info:
            load_stylegan2(path)
        text = str(info.value)
        assert str(path) in text, f"{name}: the error does not name the file: {text}"
        assert __import__("re").search(message, text), f"{name}: expected {message!r} in: {text}"
        assert not (tmp / "ran.txt").exists(), f"{name} ran code"
    assert _torch_fingerprint() == before
    # torch's own loader and ours still read the reference files exactly.
    refs = torch.load(fixtures_dir / "refs-tiny-16.pt", weights_only=True)
    G = load_stylegan2(fixtures_dir / "nvlabs-tiny-16.state_dict.pt")
    with torch.no_grad():
        assert torch.allclose(G.synthesis(refs["ws"], noise_mode="const"), refs["img_ws"], atol=1e-4)
    sd = torch.load(fixtures_dir / "nvlabs-tiny-16.state_dict.pt", weights_only=True)
    ours = read_checkpoint(fixtures_dir / "nvlabs-tiny-16.state_dict.pt")
    assert sd.keys() == ours.keys() and all(torch.equal(sd[k], ours[k]) for k in sd)


def test_hostile_files_stay_within_a_small_multiple_of_their_size(hostile):
    """In a fresh process, so that the peak resident memory belongs to these loads alone."""
    tmp, paths = hostile
    script = (
        "import json, resource, sys\n"
        "from refinestyle import CheckpointError, load_stylegan2\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "refused = []\n"
        "for path in sys.argv[1:]:\n"
        "    try:\n"
        "        load_stylegan2(path)\n"
        "    except CheckpointError:\n"
        "        refused.append(path)\n"
        "print(json.dumps({'refused': len(refused), 'peak_kib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before}))\n"
    )
    files = [str(path) for path, _ in paths.values()]
    result = subprocess.run([sys.executable, "-c", script, *files], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["refused"] == len(files)
    largest = max(path.stat().st_size for path, _ in paths.values())
    # The giants would take 4 GB to 4 TB; every file here is under 1 MB.
    assert report["peak_kib"] * 1024 < 64 * 2**20 + 8 * largest, report


def test_legacy_and_nested_storages_still_read_exactly(fixtures_dir, tmp_path):
    sd = torch.load(fixtures_dir / "rosinality-tiny-32.pt", weights_only=True)
    torch.save(sd, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    ours = read_checkpoint(tmp_path / "legacy.pt")
    assert torch.equal(ours["latent_avg"], sd["latent_avg"])
    assert all(torch.equal(ours["g_ema"][k], v) for k, v in sd["g_ema"].items())
    # A storage shared by two views (as a flattened parameter buffer would be) keeps both views.
    base = torch.arange(12.0)
    torch.save({"a": base[:6].view(2, 3), "b": base[6:]}, tmp_path / "views.pt")
    views = read_checkpoint(tmp_path / "views.pt")
    assert torch.equal(views["a"], base[:6].view(2, 3)) and torch.equal(views["b"], base[6:])


def test_budget_is_a_keyword(fixtures_dir):
    with pytest.raises(CheckpointError, match="more than 1,000 elements"):
        load_stylegan2(fixtures_dir / "rosinality-tiny-16.pt", max_elements=1000)
