"""A GGUF header reader: metadata key/values and tensor infos, never the tensor data.

Works over any :class:`ByteSource`, so a file on a hub is sized with a few HTTP range
requests instead of a download. Format: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md
"""

from __future__ import annotations

import re
import struct
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pydantic import ValidationError

from reconciler.errors import SourceUnavailable
from reconciler.observe import MAX_BLOCKS, GGUFFacts

MAGIC = b"GGUF"
# The whole header (keys, vocabulary, tensor infos) is read into memory: a 262k-token
# vocabulary takes a few MB, so 64 MiB bounds what a hostile file can make us hold.
MAX_HEADER_BYTES = 64 * 1024 * 1024
MAX_TENSORS = 1_000_000
SKIP_WINDOW = 1024 * 1024  # bytes looked at at once while stepping over a vocabulary

# ggml type id -> (elements per block, bytes per block)
GGML_BLOCKS: dict[int, tuple[int, int]] = {
    0: (1, 4),
    1: (1, 2),
    2: (32, 18),
    3: (32, 20),
    6: (32, 22),
    7: (32, 24),
    8: (32, 34),
    9: (32, 40),
    10: (256, 84),
    11: (256, 110),
    12: (256, 144),
    13: (256, 176),
    14: (256, 210),
    15: (256, 292),
    16: (256, 66),
    17: (256, 74),
    18: (256, 98),
    19: (256, 50),
    20: (32, 18),
    21: (256, 110),
    22: (256, 82),
    23: (256, 136),
    24: (1, 1),
    25: (1, 2),
    26: (1, 4),
    27: (1, 8),
    28: (1, 8),
    29: (256, 56),
    30: (1, 2),
    34: (256, 54),
    35: (256, 66),
    39: (32, 17),
    40: (64, 36),
    41: (128, 18),
}

_SCALARS: dict[int, tuple[str, int]] = {
    0: ("<B", 1),
    1: ("<b", 1),
    2: ("<H", 2),
    3: ("<h", 2),
    4: ("<I", 4),
    5: ("<i", 4),
    6: ("<f", 4),
    7: ("<?", 1),
    10: ("<Q", 8),
    11: ("<q", 8),
    12: ("<d", 8),
}
_STRING, _ARRAY = 8, 9
_LAYER = re.compile(r"^blk\.(\d+)\.")


class GGUFError(ValueError):
    """The bytes are not a GGUF file this reader understands."""


class ByteSource(Protocol):
    def read(self, offset: int, size: int) -> bytes: ...


class BlockSource(ABC):
    """Reads fixed-size blocks once and serves any byte range from them."""

    def __init__(self, block: int = 1024 * 1024) -> None:
        self.block = block
        self.blocks: dict[int, bytes] = {}

    @abstractmethod
    def fetch(self, start: int, size: int) -> bytes:
        """The bytes of one block (fewer at the end of the file)."""

    def read(self, offset: int, size: int) -> bytes:
        out = bytearray()
        while size > 0:
            number, skip = divmod(offset, self.block)
            if number not in self.blocks:
                self.blocks[number] = self.fetch(number * self.block, self.block)
            chunk = self.blocks[number][skip : skip + size]
            if not chunk:
                break
            out += chunk
            offset += len(chunk)
            size -= len(chunk)
        return bytes(out)


class FileSource(BlockSource):
    def __init__(self, path: str | Path, block: int = 1024 * 1024) -> None:
        super().__init__(block)
        self.path = Path(path)

    def fetch(self, start: int, size: int) -> bytes:
        try:
            with self.path.open("rb") as handle:
                handle.seek(start)
                return handle.read(size)
        except OSError as exc:
            raise SourceUnavailable(f"cannot read {self.path}: {exc.strerror}") from exc


class HttpRangeSource(BlockSource):
    """A remote file read in blocks, one HTTP Range request each (``estimate.hub.Hub.range``)."""

    def __init__(self, reader: Callable[[int, int], bytes], block: int = 1024 * 1024) -> None:
        super().__init__(block)
        self.reader = reader
        self.requests = 0

    def fetch(self, start: int, size: int) -> bytes:
        self.requests += 1
        return self.reader(start, size)


class _Cursor:
    def __init__(self, source: ByteSource) -> None:
        self.source, self.offset = source, 0

    def take(self, size: int) -> bytes:
        if self.offset + size > MAX_HEADER_BYTES:
            raise GGUFError(f"header longer than {MAX_HEADER_BYTES} bytes (at byte {self.offset}, {size} more)")
        data = self.source.read(self.offset, size)
        if len(data) != size:
            raise GGUFError(f"file ends at byte {self.offset + len(data)} inside the header")
        self.offset += size
        return data

    def scalar(self, kind: int) -> Any:
        fmt, size = _SCALARS[kind]
        return struct.unpack(fmt, self.take(size))[0]

    def skip(self, kind: int) -> int | None:
        """Step over a value without decoding it; an array's item count."""
        if kind in _SCALARS:
            self.advance(_SCALARS[kind][1])
        elif kind == _STRING:
            self.advance(self.scalar(10))
        elif kind == _ARRAY:
            item_kind = self.scalar(4)
            count: int = self.scalar(10)
            if count > MAX_HEADER_BYTES:
                raise GGUFError(f"array of {count} items at {self.offset}")
            if item_kind in _SCALARS:
                self.advance(_SCALARS[item_kind][1] * count)
            elif item_kind == _STRING:
                self.skip_strings(count)
            else:
                for _ in range(count):
                    self.skip(item_kind)
            return count
        else:
            raise GGUFError(f"unknown value type {kind} at byte {self.offset}")
        return None

    def advance(self, size: int) -> None:
        if self.offset + size > MAX_HEADER_BYTES:
            raise GGUFError(f"header longer than {MAX_HEADER_BYTES} bytes (at byte {self.offset}, {size} more)")
        self.offset += size

    def skip_strings(self, count: int) -> None:
        """Step over ``count`` strings reading only their lengths, a window of bytes at a time."""
        window, base = b"", self.offset
        for _ in range(count):
            at = self.offset - base
            if at + 8 > len(window):
                base, window, at = self.offset, self.source.read(self.offset, SKIP_WINDOW), 0
                if len(window) < 8:
                    raise GGUFError(f"file ends at byte {self.offset + len(window)} inside the header")
            self.advance(8 + struct.unpack_from("<Q", window, at)[0])

    def string(self) -> str:
        return self.take(self.scalar(10)).decode("utf-8", errors="replace")

    def value(self, kind: int) -> Any:
        if kind in _SCALARS:
            return self.scalar(kind)
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            item_kind, count = self.scalar(4), self.scalar(10)
            if count > MAX_HEADER_BYTES:  # each item takes a byte at least
                raise GGUFError(f"array of {count} items at {self.offset}")
            if item_kind in _SCALARS:
                fmt, size = _SCALARS[item_kind]
                raw = self.take(size * count)
                return list(struct.unpack(f"<{count}{fmt[1]}", raw))
            return [self.value(item_kind) for _ in range(count)]
        raise GGUFError(f"unknown value type {kind} at byte {self.offset}")


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int

    @property
    def elements(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count

    @property
    def nbytes(self) -> int:
        if self.ggml_type not in GGML_BLOCKS:
            raise GGUFError(f"tensor {self.name}: unknown ggml type {self.ggml_type}")
        block, size = GGML_BLOCKS[self.ggml_type]
        return self.elements // block * size


@dataclass(frozen=True)
class GGUFHeader:
    version: int
    metadata: dict[str, Any]
    tensors: tuple[TensorInfo, ...]
    lengths: dict[str, int] = field(default_factory=dict)  # item counts of the arrays not kept

    def get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(key, default)

    def facts(self) -> GGUFFacts:
        """The numbers the estimate needs, named the same for every architecture."""
        arch = str(self.get("general.architecture", "llama"))

        def number(name: str, default: int = 0) -> int:
            value = self.get(f"{arch}.{name}", default)
            if isinstance(value, list):  # per-layer values (e.g. head_count_kv): take the largest
                value = max(value) if value and all(isinstance(v, int) for v in value) else default
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if not isinstance(value, int) or not 0 <= value < 2**63:
                raise GGUFError(f"{arch}.{name} is {value!r}, not a count")
            return value

        embedding = number("embedding_length")
        heads = number("attention.head_count")
        head_dim = embedding // heads if heads else 0
        layers = number("block_count")
        if layers > MAX_BLOCKS:
            raise GGUFError(f"{arch}.block_count is {layers}; no model has more than {MAX_BLOCKS} layers")
        layer_bytes = [0] * layers
        output = embedding_bytes = other = 0
        for tensor in self.tensors:
            match = _LAYER.match(tensor.name)
            if match and int(match.group(1)) < layers:
                layer_bytes[int(match.group(1))] += tensor.nbytes
            elif tensor.name.startswith("output"):
                output += tensor.nbytes
            elif tensor.name.startswith("token_embd"):
                embedding_bytes += tensor.nbytes
            else:
                other += tensor.nbytes
        tokens = self.get("tokenizer.ggml.tokens")
        vocab = len(tokens) if isinstance(tokens, list) else self.lengths.get("tokenizer.ggml.tokens", 0)
        try:
            return GGUFFacts(
                architecture=arch,
                block_count=layers,
                embedding_length=embedding,
                head_count=heads,
                head_count_kv=number("attention.head_count_kv", heads),
                key_length=number("attention.key_length", head_dim),
                value_length=number("attention.value_length", head_dim),
                context_length=number("context_length"),
                vocab_size=vocab or number("vocab_size"),
                sliding_window=number("attention.sliding_window"),
                has_chat_template=bool(self.get("tokenizer.chat_template")),
                layer_bytes=layer_bytes,
                output_bytes=output,
                embedding_bytes=embedding_bytes,
                other_bytes=other,
            )
        except ValidationError as exc:  # tensor sizes past 8 EiB and the like
            error = exc.errors()[0]
            raise GGUFError(f"implausible header: {'.'.join(map(str, error['loc']))}: {error['msg']}") from exc


def read_header(source: ByteSource, keep: Callable[[str], bool] = lambda _key: True) -> GGUFHeader:
    """Parse the header; ``keep`` filters which metadata values are decoded (of the others,
    only an array's length is kept)."""
    cursor = _Cursor(source)
    if cursor.take(4) != MAGIC:
        raise GGUFError("not a GGUF file (bad magic)")
    version = cursor.scalar(4)
    if version not in (2, 3):
        raise GGUFError(f"GGUF version {version} is not supported (2 and 3 are)")
    tensor_count, kv_count = cursor.scalar(10), cursor.scalar(10)
    if tensor_count > MAX_TENSORS or kv_count > MAX_TENSORS:
        raise GGUFError(f"implausible counts: {tensor_count} tensors, {kv_count} keys")
    metadata: dict[str, Any] = {}
    lengths: dict[str, int] = {}
    for _ in range(kv_count):
        key = cursor.string()
        if keep(key):
            metadata[key] = cursor.value(cursor.scalar(4))
        elif (count := cursor.skip(cursor.scalar(4))) is not None:
            lengths[key] = count
    tensors = []
    for _ in range(tensor_count):
        name = cursor.string()
        dims = cursor.scalar(4)
        if dims > 8:
            raise GGUFError(f"tensor {name} has {dims} dimensions")
        shape = tuple(cursor.scalar(10) for _ in range(dims))
        tensors.append(TensorInfo(name, shape, cursor.scalar(4), cursor.scalar(10)))
    return GGUFHeader(version, metadata, tuple(tensors), lengths)


def _keep(key: str) -> bool:
    # The vocabulary (tokens, scores, types, merges) is large and unused: only its length
    # counts, and decoding 262k tokens in Python took most of a second.
    return not key.startswith("tokenizer.ggml.")


def read_facts(source: ByteSource) -> GGUFFacts:
    return read_header(source, _keep).facts()


def pick_mmproj(files: list[str]) -> str | None:
    """The ``*mmproj*.gguf`` companion to load, preferring f32 over f16 over the rest."""
    candidates = sorted(f for f in files if "mmproj" in f.lower() and f.lower().endswith(".gguf"))
    for precision in ("f32", "f16"):
        for name in candidates:
            if precision in name.lower():
                return name
    return candidates[0] if candidates else None
