"""Read untrusted checkpoint files into plain containers and tensors, with no side effects.

``read_checkpoint(path)`` understands torch zip files (``torch.save``), pre-1.6 torch files, plain
pickles (NVlabs ``.pkl`` snapshots, whose tensors are nested torch files) and safetensors. It promises:

* **Nothing from the file runs or outlives the call.** Pickles go through ``SafeUnpickler``, the
  pure-Python unpickler with three changes: every global resolves to a stand-in made for this read
  (never a real module attribute, so nothing outside the read can be reached or modified);
  ``BUILD`` (setting state) is allowed only on objects this read created, never with dunder names;
  and the objects that can be called are a short list of constructors of plain records.
* **Sizes are checked before anything is allocated.** A storage's declared length must match the
  bytes the file really holds for it; views must fit in their storage and may not repeat elements
  (stride-0 giants); compressed zip members are refused (``torch.save`` never compresses, so a
  DEFLATE member can only be a bomb); the total number of elements is capped (``max_elements``).
* **Every failure is a ``CheckpointError``** naming the file and the problem.

torch's own ``weights_only`` loader is not used: it resolves allow-listed globals to the real
functions, and it allocates a storage as soon as its size is declared.
"""

from __future__ import annotations

import collections
import io
import json
import math
import pickle
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
DEFAULT_MAX_ELEMENTS = 400_000_000  # a config-f 1024 px training checkpoint (G, D, G_ema, Adam states) is ~210M
MAX_DEPTH = 64  # module nesting in a snapshot; StyleGAN2's is 4

STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "HalfStorage": torch.float16, "BFloat16Storage": torch.bfloat16,
    "DoubleStorage": torch.float64, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}
SAFETENSORS_DTYPES = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


class CheckpointError(ValueError):
    """A file that is not a supported checkpoint or breaks a safety rule; the message names the file and the problem."""


@dataclass
class PersistentRecord:
    """What NVlabs' ``persistence`` wrapper pickles for a module: its class name and ``__dict__``.

    The embedded source is never executed; only its length is kept, for diagnostics.
    """

    class_name: str
    state: dict
    module_src_len: int


class AttrDict(dict):
    """Stand-in for ``dnnlib.EasyDict``: a dict, nothing more."""


class PlainRecord:
    """Stand-in for ``argparse.Namespace`` (training checkpoints' hyper-parameters): attributes only."""


@dataclass
class _Storage:
    """A storage this read created: ``data`` is a flat tensor of ``numel`` elements (filled later in legacy files)."""

    data: torch.Tensor


class _Budget:
    """Elements allocated so far in one read, against ``max_elements`` and the file's own size."""

    def __init__(self, *, file_size: int, max_elements: int):
        self.file_size, self.max_elements, self.elements, self.storage_bytes = file_size, max_elements, 0, 0

    def storage(self, numel: Any, dtype: torch.dtype) -> int:
        if not isinstance(numel, int) or isinstance(numel, bool) or numel < 0:
            raise CheckpointError(f"a storage declares the length {numel!r}; expected a non-negative integer")
        nbytes = numel * _itemsize(dtype)
        self.storage_bytes += nbytes
        if self.storage_bytes > self.file_size:
            raise CheckpointError(f"storages declare {self.storage_bytes:,} bytes but the file has {self.file_size:,}: "
                                  "it is truncated or lies about its sizes")
        return nbytes

    def tensor(self, numel: int) -> None:
        self.elements += numel
        if self.elements > self.max_elements:
            raise CheckpointError(f"the checkpoint holds more than {self.max_elements:,} elements; raise max_elements "
                                  "if this is a genuine, very large checkpoint")


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _check_ints(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list, torch.Size)) or len(value) > 8:
        raise CheckpointError(f"a tensor's {what} is not a tuple of at most 8 integers")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
        raise CheckpointError(f"a tensor's {what} {tuple(value)!r} is not a tuple of non-negative integers")
    return tuple(value)


def _view(storage: Any, offset: Any, size: Any, stride: Any, budget: _Budget) -> torch.Tensor:
    """A tensor view of ``storage``, after checking that it fits and repeats no element."""
    if not isinstance(storage, _Storage):
        raise CheckpointError(f"a tensor is built on a {type(storage).__name__}, not on a storage of this file")
    size, stride = _check_ints(size, "size"), _check_ints(stride, "stride")
    if len(size) != len(stride) or not isinstance(offset, int) or offset < 0:
        raise CheckpointError(f"a tensor's view (offset {offset!r}, size {size}, stride {stride}) is malformed")
    numel = math.prod(size)
    available = storage.data.numel()
    if numel:
        extent = offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1  # last element read, plus one
        if extent > available:
            raise CheckpointError(f"a tensor of size {list(size)} reads past its storage ({extent:,} > {available:,} elements)")
        if numel > available:
            raise CheckpointError(f"a tensor of size {list(size)} ({numel:,} elements) repeats the {available:,} elements of "
                                  "its storage (stride 0): expanded views are refused, they would allocate far more than the file holds")
    budget.tensor(numel)
    return storage.data.as_strided(size, stride, offset)


# --------------------------------------------------------------------------------------------------
# The unpickler


_ALLOWED_BUILD_TYPES = (collections.OrderedDict, AttrDict, PlainRecord)


class SafeUnpickler(pickle._Unpickler):  # the pure-Python unpickler: its opcode table can be changed
    """An unpickler whose globals are stand-ins made for this read, and whose ``BUILD`` touches only its own objects.

    ``storage_loader(pid) -> _Storage`` resolves torch's persistent ids; ``None`` refuses them.
    """

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, stream: io.BytesIO, *, budget: _Budget, storage_loader=None, nested: bool = False):
        super().__init__(stream)
        self._budget, self._storage_loader, self._nested = budget, storage_loader, nested
        self._created: dict[int, Any] = {}  # id -> object made by this read (kept alive so ids stay unique)
        self._globals = self._make_globals()

    # -- globals: fresh stand-ins, never module attributes ---------------------------------------
    def _make_globals(self) -> dict[tuple[str, str], Any]:
        def rebuild_tensor(storage, offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
            return _view(storage, offset, size, stride, self._budget)

        def rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
            if not isinstance(data, torch.Tensor):
                raise CheckpointError(f"a parameter wraps a {type(data).__name__}, not a tensor")
            return data  # a plain tensor is all a generator needs

        def reconstruct_persistent(meta):
            if not isinstance(meta, dict) or not isinstance(meta.get("state"), dict):
                raise CheckpointError("malformed NVlabs persistent object (no 'state' dict in its metadata)")
            src = meta.get("module_src", "")
            return PersistentRecord(class_name=str(meta.get("class_name", "?"))[:200], state=meta["state"],
                                    module_src_len=len(src) if isinstance(src, (str, bytes)) else 0)

        def ordered_dict(*args):
            if args:
                raise CheckpointError("an OrderedDict is built with arguments; torch files build it empty")
            return collections.OrderedDict()

        def storage_from_bytes(data):
            if self._nested or not isinstance(data, bytes):
                raise CheckpointError("a nested storage is itself nested or not bytes")
            return _read_torch_bytes(data, budget=self._budget, nested=True)

        def torch_size(dims=()):
            return torch.Size(_check_ints(dims, "size"))

        table = {
            ("collections", "OrderedDict"): ordered_dict,
            ("builtins", "set"): lambda items=(): set(_plain_items(items)),
            ("builtins", "frozenset"): lambda items=(): frozenset(_plain_items(items)),
            ("torch._utils", "_rebuild_tensor_v2"): rebuild_tensor,
            ("torch._utils", "_rebuild_parameter"): rebuild_parameter,
            ("torch._utils", "_rebuild_parameter_with_state"): rebuild_parameter,
            ("torch.storage", "_load_from_bytes"): storage_from_bytes,
            ("torch", "Size"): torch_size,
            ("torch_utils.persistence", "_reconstruct_persistent_obj"): reconstruct_persistent,
            ("dnnlib.util", "EasyDict"): AttrDict,
            ("dnnlib", "EasyDict"): AttrDict,
            ("argparse", "Namespace"): PlainRecord,
        }
        for name in STORAGE_DTYPES:
            table[("torch", name)] = _StorageType(name)
        for module in ("numpy", "numpy.core.multiarray", "numpy._core.multiarray"):
            for name in ("dtype", "scalar", "_reconstruct", "ndarray"):
                table[(module, name)] = _NumpyStandIn(name)
        return table

    def find_class(self, module: str, name: str):
        if module.startswith(("dnnlib.tflib", "tensorflow")):
            raise CheckpointError(
                "this is a TensorFlow-era StyleGAN2 pickle (dnnlib.tflib), which needs TensorFlow 1.x to read. "
                "Convert it first (NVlabs stylegan2-ada-pytorch `legacy.py` or rosinality `convert_weight.py`), "
                "then load the resulting .pkl/.pt")
        stand_in = self._globals.get((module, name))
        if stand_in is None:
            raise CheckpointError(
                f"refusing to unpickle the global {module}.{name}: it is outside plain tensors and containers (the "
                "allowlist), and loading it could run code from the file. If this is a genuine StyleGAN2 "
                "checkpoint, convert it to a state dict or safetensors in its own code base and load that")
        return stand_in

    def persistent_load(self, pid):
        if self._storage_loader is None:
            raise CheckpointError("unexpected persistent id in a plain pickle; is this a torch file that was truncated?")
        return self._storage_loader(pid)

    # -- opcodes that call or set state ------------------------------------------------------------
    def _remember(self):
        obj = self.stack[-1]
        self._created[id(obj)] = obj

    def _load_reduce(self):
        pickle._Unpickler.load_reduce(self)
        self._remember()

    def _load_newobj(self):
        args, cls = self.stack[-1], self.stack[-2]
        if cls not in (AttrDict, PlainRecord) or args:
            raise CheckpointError(f"a pickle creates a {getattr(cls, '__name__', type(cls).__name__)} with arguments; "
                                  "only plain records are allowed")
        pickle._Unpickler.load_newobj(self)
        self._remember()

    def _load_build(self):
        state, inst = self.stack[-1], self.stack[-2]
        if id(inst) not in self._created or not isinstance(inst, _ALLOWED_BUILD_TYPES):
            raise CheckpointError(f"the pickle sets state on a {type(inst).__name__} it did not create as a plain "
                                  "record; refusing (this is how a file would modify the running program)")
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
            state = {**(state[0] or {}), **(state[1] or {})}
        if not isinstance(state, dict) or not all(isinstance(k, str) and not k.startswith("__") for k in state):
            raise CheckpointError("the pickle's BUILD state is not a dict of plain attribute names")
        self.stack.pop()
        inst.__dict__.update(state)

    def _refuse(self):
        raise CheckpointError("the pickle uses an opcode that builds objects from arbitrary classes (INST/OBJ/NEWOBJ_EX); refusing")

    dispatch[pickle.REDUCE[0]] = _load_reduce
    dispatch[pickle.NEWOBJ[0]] = _load_newobj
    dispatch[pickle.BUILD[0]] = _load_build
    for _op in (pickle.INST, pickle.OBJ, pickle.NEWOBJ_EX, pickle.EXT1, pickle.EXT2, pickle.EXT4):
        dispatch[_op[0]] = _refuse
    del _op


def _plain_items(items: Any) -> list:
    if not isinstance(items, (list, tuple)):
        raise CheckpointError(f"a set is built from a {type(items).__name__}; expected a list")
    return list(items)


class _StorageType:
    """Stand-in for ``torch.FloatStorage`` and friends: only its dtype is read."""

    def __init__(self, name: str):
        self.dtype = STORAGE_DTYPES[name]

    def __call__(self, *args):
        raise CheckpointError("a pickle calls a storage type; torch files only name it")


class _NumpyStandIn:
    """Numpy values in NVlabs snapshots (kwargs, progress counters): built through numpy, sizes checked first."""

    def __init__(self, name: str):
        self.name = name

    def __call__(self, *args):
        import numpy

        if self.name == "dtype":  # copy=True: never hand out numpy's shared singletons
            if not args or not isinstance(args[0], str) or args[0].startswith(("O", "V")):
                raise CheckpointError(f"numpy dtype {args[:1]!r} is not a plain numeric type")
            return numpy.dtype(args[0], align=False, copy=True)
        if self.name == "scalar":
            if len(args) != 2 or not isinstance(args[0], numpy.dtype) or not isinstance(args[1], bytes) \
                    or args[0].hasobject or len(args[1]) != args[0].itemsize:
                raise CheckpointError("a numpy scalar is not a plain numeric value")
            return numpy.frombuffer(args[1], dtype=args[0])[0].copy()
        raise CheckpointError(f"numpy.{self.name} (arrays) is not read from checkpoints; convert arrays to tensors")


# --------------------------------------------------------------------------------------------------
# Containers


def _storage_pid(pid: Any) -> tuple[torch.dtype, str, int]:
    if not isinstance(pid, tuple) or len(pid) < 5 or pid[0] not in ("storage", b"storage"):
        raise CheckpointError(f"unexpected persistent id {str(pid)[:80]!r}; only torch storages are read")
    storage_type, key, numel = pid[1], pid[2], pid[4]
    if not isinstance(storage_type, _StorageType):
        raise CheckpointError(f"storage type {storage_type!r} is not a plain numeric storage")
    if not isinstance(key, (str, bytes)) or len(key) > 64:
        raise CheckpointError("a storage key is not a short string")
    return storage_type.dtype, key.decode() if isinstance(key, bytes) else key, numel


def _read_zip(data: bytes | Path, *, budget: _Budget, nested: bool) -> Any:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data) if isinstance(data, bytes) else data)
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        raise CheckpointError(f"a truncated or corrupt zip archive ({err}); download or save it again") from None
    with archive:
        infos = {info.filename: info for info in archive.infolist()}
        for info in infos.values():
            if info.compress_type != zipfile.ZIP_STORED:
                raise CheckpointError(f"zip member {info.filename} is compressed; torch.save never compresses, so this is "
                                      "refused as a possible decompression bomb")
            if info.file_size > budget.file_size or info.compress_size != info.file_size:
                raise CheckpointError(f"zip member {info.filename} declares {info.file_size:,} bytes in a "
                                      f"{budget.file_size:,}-byte file")
        pickles = [name for name in infos if name.endswith("/data.pkl") and name.count("/") == 1]
        if len(pickles) != 1:
            raise CheckpointError("a zip archive that is not a torch.save file (no single '<name>/data.pkl')")
        prefix = pickles[0][: -len("data.pkl")]
        byteorder = infos.get(prefix + "byteorder")
        if byteorder is not None and archive.read(byteorder) != b"little":
            raise CheckpointError("a big-endian torch file; re-save it on a little-endian machine")
        storages: dict[str, _Storage] = {}

        def load_storage(pid):
            dtype, key, numel = _storage_pid(pid)
            if key not in storages:
                info = infos.get(f"{prefix}data/{key}")
                if info is None:
                    raise CheckpointError(f"storage {key} is declared but not in the archive; the file is truncated")
                nbytes = budget.storage(numel, dtype)
                if info.file_size != nbytes:
                    raise CheckpointError(f"storage {key} declares {numel:,} elements ({nbytes:,} bytes) but holds "
                                          f"{info.file_size:,} bytes")
                raw = bytearray(archive.read(info))
                storages[key] = _Storage(torch.frombuffer(raw, dtype=dtype) if nbytes else torch.empty(0, dtype=dtype))
            storage = storages[key]
            if storage.data.dtype != dtype:
                raise CheckpointError(f"storage {key} is read with two dtypes")
            return storage

        stream = io.BytesIO(archive.read(infos[pickles[0]]))
        return SafeUnpickler(stream, budget=budget, storage_loader=load_storage, nested=nested).load()


def _read_legacy(data: bytes, *, budget: _Budget, nested: bool) -> Any:
    """A pre-1.6 ``torch.save`` file: magic, protocol, sys info, the object, storage keys, then raw storages."""
    stream = io.BytesIO(data)

    def next_pickle(storage_loader=None):  # each pickle starts where the previous one stopped
        return SafeUnpickler(stream, budget=budget, storage_loader=storage_loader, nested=nested).load()

    if not _is_int(next_pickle(), TORCH_LEGACY_MAGIC) or not _is_int(next_pickle(), LEGACY_PROTOCOL):
        raise CheckpointError("not a torch file (wrong magic number or protocol)")
    sys_info = next_pickle()
    if not isinstance(sys_info, dict) or sys_info.get("little_endian") is not True:
        raise CheckpointError("a big-endian or malformed legacy torch file")
    storages: dict[str, _Storage] = {}

    def load_storage(pid):
        dtype, key, numel = _storage_pid(pid)
        if len(pid) > 5 and pid[5] is not None:
            raise CheckpointError("legacy storage views are not supported; re-save the checkpoint with a current torch")
        if key not in storages:
            budget.storage(numel, dtype)  # checked against the file size before this allocation
            storages[key] = _Storage(torch.empty(numel, dtype=dtype))
        return storages[key]

    result = next_pickle(load_storage)
    keys = next_pickle()
    if not isinstance(keys, list) or sorted(map(str, keys)) != sorted(storages):
        raise CheckpointError("the storage list does not match the storages the object uses")
    for key in keys:
        storage = storages[str(key)].data
        head = stream.read(8)
        if len(head) != 8 or struct.unpack("<q", head)[0] != storage.numel():
            raise CheckpointError(f"storage {key}: its recorded length does not match the declared one; the file is truncated or corrupt")
        nbytes = storage.numel() * storage.element_size()
        raw = stream.read(nbytes)
        if len(raw) != nbytes:
            raise CheckpointError(f"storage {key} is cut short; the file is truncated")
        if nbytes:
            storage.view(torch.uint8).copy_(torch.frombuffer(bytearray(raw), dtype=torch.uint8))
    return result


def _read_torch_bytes(data: bytes, *, budget: _Budget, nested: bool) -> Any:
    if data.startswith(b"PK\x03\x04"):
        return _read_zip(data, budget=budget, nested=nested)
    return _read_legacy(data, budget=budget, nested=nested)


def _is_int(value: Any, expected: int) -> bool:
    return isinstance(value, int) and value == expected


def _read_pickle(data: bytes, *, budget: _Budget) -> Any:
    """A plain pickle (an NVlabs snapshot), or the first pickle of a pre-1.6 torch file."""
    obj = SafeUnpickler(io.BytesIO(data), budget=budget).load()
    if _is_int(obj, TORCH_LEGACY_MAGIC):
        return _read_legacy(data, budget=budget, nested=False)
    return obj


def _read_safetensors(path: Path, *, budget: _Budget) -> dict[str, torch.Tensor]:
    """Check the header against the file (offsets in bounds, contiguous, sizes = shapes × dtypes), then load."""
    with open(path, "rb") as f:
        head = f.read(8)
        header_len = struct.unpack("<Q", head)[0]
        if header_len > min(budget.file_size - 8, 100_000_000):
            raise CheckpointError(f"the safetensors header declares {header_len:,} bytes in a {budget.file_size:,}-byte file")
        try:
            header = json.loads(f.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise CheckpointError(f"the safetensors header is not valid JSON ({err})") from None
    if not isinstance(header, dict):
        raise CheckpointError("the safetensors header is not a JSON object")
    data_len, spans = budget.file_size - 8 - header_len, []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(entry, dict) or entry.get("dtype") not in SAFETENSORS_DTYPES:
            raise CheckpointError(f"safetensors entry {name!r} has no supported dtype")
        shape = _check_ints(entry.get("shape"), f"shape ({name})")
        offsets = entry.get("data_offsets")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            raise CheckpointError(f"safetensors entry {name!r} has malformed data_offsets")
        begin, end = offsets
        if not 0 <= begin <= end <= data_len or end - begin != math.prod(shape) * SAFETENSORS_DTYPES[entry["dtype"]]:
            raise CheckpointError(f"safetensors entry {name!r} (shape {list(shape)}, {entry['dtype']}) claims bytes "
                                  f"{begin}..{end} of a {data_len:,}-byte data section")
        budget.tensor(math.prod(shape))
        spans.append((begin, end))
    spans.sort()
    if any(a[1] > b[0] for a, b in zip(spans, spans[1:])):
        raise CheckpointError("safetensors entries overlap")
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as err:  # safetensors raises its own error types
        raise CheckpointError(f"a corrupt safetensors file ({err})") from None


def is_safetensors(head: bytes) -> bool:
    if len(head) < 10:
        return False
    n = struct.unpack("<Q", head[:8])[0]
    return 2 <= n < 100_000_000 and head[8:9] == b"{"


def read_checkpoint(path: str | Path, *, max_elements: int = DEFAULT_MAX_ELEMENTS) -> Any:
    """Read a torch / pickle / safetensors checkpoint into dicts, lists, tensors and plain records.

    Raises ``CheckpointError`` (naming ``path``) for anything unreadable, unsafe or over budget;
    The format is sniffed from the bytes, not the extension.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        budget = _Budget(file_size=size, max_elements=max_elements)
        with open(path, "rb") as f:
            head = f.read(16)
        if head.startswith(b"PK\x03\x04"):
            return _read_zip(path, budget=budget, nested=False)
        if is_safetensors(head):
            return _read_safetensors(path, budget=budget)
        if head[:1] == b"\x80" and 2 <= head[1] <= 5:
            return _read_pickle(path.read_bytes(), budget=budget)
        raise CheckpointError(f"{path} is {describe_bytes(head)}, not a StyleGAN2 checkpoint. Supported: rosinality .pt, "
                              "NVlabs .pkl snapshots, NVlabs state-dict .pt, safetensors, or a folder from `refinestyle convert`")
    except CheckpointError as err:
        message = str(err)
        raise CheckpointError(message if message.startswith(str(path)) else f"{path}: {message}") from None
    except (EOFError, pickle.UnpicklingError, struct.error, ValueError, IndexError, KeyError, TypeError,
            AttributeError, RecursionError, MemoryError, OverflowError, RuntimeError, zipfile.BadZipFile) as err:
        raise CheckpointError(f"{path}: the file is truncated or corrupt ({type(err).__name__}: {str(err)[:200]}); "
                              "download or save it again") from None


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
