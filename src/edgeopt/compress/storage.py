"""A compact, entropy-coded file for pruned + clustered models (``.eoz``), and its loader.

Deep Compression's last stage. Every Conv2d / Linear weight whose values come from a small
codebook (see :mod:`edgeopt.compress.cluster`) is stored as

* a sparsity bitmap (one bit per weight, ``np.packbits``) -- omitted when the layer is dense,
* the codebook index of each non-zero weight (one byte each, so the entropy coder sees whole
  symbols), and
* the codebook itself (float32).

Other tensors (biases, BN statistics, unclustered weights) are stored as float16 (or
float32 with ``float_bits=32``). The model's metadata (architecture as data) is JSON. The
four streams (header, bitmaps, indices, floats) are each compressed with whichever of zlib,
bz2 and raw LZMA2 (two literal-context settings) gives the fewest bytes; the stored file size
is therefore a real size, not an estimate. ``entropy_report`` gives the per-layer order-0
entropy of the index and bitmap streams, the bound a hand-written static Huffman / ANS coder
would approach. Measured on the 75%-sparse, 4-bit MLPerf ResNet-8: LZMA's adaptive range coder
is within 1% of that bound on the bitmaps and ~8% above it on the indices (about 0.6 KB of a
~17 KB file), so a hand-written coder would win at most ~3%; it is not written.

Layout: ``b"EOZ1"``, then per stream ``codec (1 byte) + length (uint32 LE)``, then the
stream bytes. Loading parses JSON and numpy buffers only: nothing is unpickled.
Cost: compression of a few hundred KB (milliseconds to a second).
"""

from __future__ import annotations

import bz2
import json
import lzma
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgeopt.compress.cluster import codebooks_of
from edgeopt.errors import EdgeoptError
from edgeopt.fileio import write_bytes_atomic
from edgeopt.model import EdgeModel, ModelMeta, build_module, register_loader

MAGIC = b"EOZ1"
PACKED_SUFFIX = ".eoz"
_LZMA_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]
_LZMA_LC0 = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, "lc": 0, "lp": 0, "pb": 0}]
_CODECS = {
    0: (lambda b: b, lambda b: b),
    1: (lambda b: zlib.compress(b, 9), zlib.decompress),
    2: (lambda b: bz2.compress(b, 9), bz2.decompress),
    3: (
        lambda b: lzma.compress(b, format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS),
        lambda b: lzma.decompress(b, format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS),
    ),
    4: (  # no literal context: better for near-random symbol streams (indices, bitmaps)
        lambda b: lzma.compress(b, format=lzma.FORMAT_RAW, filters=_LZMA_LC0),
        lambda b: lzma.decompress(b, format=lzma.FORMAT_RAW, filters=_LZMA_LC0),
    ),
}
CODEC_NAMES = {0: "none", 1: "zlib", 2: "bz2", 3: "lzma", 4: "lzma-lc0"}
STREAMS = ("header", "bitmap", "indices", "floats")


def _best(data: bytes) -> tuple[int, bytes]:
    options = [(cid, enc(data)) for cid, (enc, _dec) in _CODECS.items()]
    return min(options, key=lambda t: (len(t[1]), t[0]))


@dataclass
class PackedInfo:
    """What went into a packed file: total bytes and bytes per stream (with the codec chosen)."""

    total_bytes: int
    streams: dict[str, dict[str, Any]]
    clustered_layers: int
    nonzero_weights: int
    weights: int

    def to_json(self) -> dict[str, Any]:
        return {"total_bytes": self.total_bytes, "streams": self.streams, "clustered_layers": self.clustered_layers,
                "nonzero_weights": self.nonzero_weights, "weights": self.weights}  # fmt: skip


def pack_model(model: EdgeModel, float_bits: int = 16, max_codebook: int = 256) -> tuple[bytes, PackedInfo]:
    """Serialise ``model`` into the packed format; weights with <= ``max_codebook`` distinct values are
    stored as codebook indices. Pure: returns the bytes and their breakdown."""
    if float_bits not in (16, 32):
        raise EdgeoptError(f"float_bits must be 16 or 32, not {float_bits}")
    fdtype = np.float16 if float_bits == 16 else np.float32
    books = codebooks_of(model.module, max_codebook)
    state = {k: v.detach().cpu() for k, v in model.module.state_dict().items()}
    bitmaps, indices, floats = bytearray(), bytearray(), bytearray()
    table: list[dict[str, Any]] = []
    nonzero = weights = 0
    for key, t in state.items():
        layer = key.rsplit(".", 1)[0]
        entry: dict[str, Any] = {"name": key, "shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", "")}
        if key.endswith(".weight") and layer in books:
            book = books[layer]
            flat = book.indices.ravel()
            nz = flat >= 0
            weights += flat.size
            nonzero += int(nz.sum())
            entry["enc"] = "codebook"
            entry["k"] = int(book.centroids.size)
            entry["dense"] = bool(nz.all())
            if not entry["dense"]:
                bitmaps += np.packbits(nz).tobytes()
            dtype = np.uint8 if book.centroids.size <= 256 else np.uint16
            indices += flat[nz].astype(dtype).tobytes()
            floats += book.centroids.astype(np.float32).tobytes()
        elif t.is_floating_point():
            entry["enc"] = f"float{float_bits}"
            floats += t.numpy().astype(fdtype).tobytes()
        else:
            entry["enc"] = "raw"
            floats += t.numpy().tobytes()
        table.append(entry)
    header = json.dumps({"meta": model.meta.to_json(), "tensors": table}, separators=(",", ":")).encode()
    out = bytearray(MAGIC)
    payload = bytearray()
    streams = {}
    for name, raw in zip(STREAMS, (header, bytes(bitmaps), bytes(indices), bytes(floats)), strict=True):
        cid, enc = _best(raw)
        out += struct.pack("<BI", cid, len(enc))
        payload += enc
        streams[name] = {"raw_bytes": len(raw), "stored_bytes": len(enc), "codec": CODEC_NAMES[cid]}
    data = bytes(out + payload)
    return data, PackedInfo(len(data), streams, len(books), nonzero, weights)


def packed_path(path: str | Path) -> Path:
    """Where a packed model is written: ``path`` itself when it ends in ``.eoz``, ``path.eoz`` when it
    has no suffix; any other suffix is refused (the file would then not load as a packed model)."""
    path = Path(path)
    if path.suffix == PACKED_SUFFIX:
        return path
    if path.suffix:
        raise EdgeoptError(
            f"'{path}' does not end in {PACKED_SUFFIX}: a packed model loads only from a {PACKED_SUFFIX} file",
            f"write it to {path.with_suffix(PACKED_SUFFIX)}",
        )
    return path.with_name(path.name + PACKED_SUFFIX)


def save_packed(model: EdgeModel, path: str | Path, float_bits: int = 16) -> tuple[Path, PackedInfo]:
    """Write the packed file (atomic); the returned info's ``total_bytes`` equals the file size."""
    path = packed_path(path)
    data, info = pack_model(model, float_bits)
    write_bytes_atomic(path, data)
    return path, info


def unpack_model(data: bytes) -> EdgeModel:
    """Rebuild the model from packed bytes (JSON + numpy buffers; nothing executes)."""
    bad = EdgeoptError("not a valid packed edgeopt model (.eoz)", "re-create it with edgeopt compress")
    if data[:4] != MAGIC:
        raise bad
    try:
        heads = [struct.unpack_from("<BI", data, 4 + 5 * i) for i in range(len(STREAMS))]
        pos = 4 + 5 * len(STREAMS)
        parts = []
        for cid, n in heads:
            parts.append(_CODECS[cid][1](data[pos : pos + n]))
            pos += n
        header = json.loads(parts[0])
        meta = ModelMeta.from_json(header["meta"])
    except (struct.error, KeyError, ValueError, lzma.LZMAError, OSError, zlib.error) as e:
        raise bad from e
    bitmaps, indices, floats = (memoryview(p) for p in parts[1:])
    bpos = ipos = fpos = 0
    state: dict[str, torch.Tensor] = {}
    try:
        for e in header["tensors"]:
            shape, n = tuple(e["shape"]), int(np.prod(e["shape"], dtype=np.int64))
            if e["enc"] == "codebook":
                k = e["k"]
                if e["dense"]:
                    nz = np.ones(n, bool)
                else:
                    nb = (n + 7) // 8
                    nz = np.unpackbits(np.frombuffer(bitmaps[bpos : bpos + nb], np.uint8))[:n].astype(bool)
                    bpos += nb
                cnt = int(nz.sum())
                idt = np.uint8 if k <= 256 else np.uint16
                idx = np.frombuffer(indices[ipos : ipos + cnt * np.dtype(idt).itemsize], idt)
                ipos += cnt * np.dtype(idt).itemsize
                cents = np.frombuffer(floats[fpos : fpos + 4 * k], np.float32)
                fpos += 4 * k
                w = np.zeros(n, np.float32)
                w[nz] = cents[idx]
                state[e["name"]] = torch.from_numpy(w.reshape(shape))
            else:
                dt = np.dtype(e["dtype"]) if e["enc"] == "raw" else np.dtype(e["enc"])
                size = n * np.dtype(dt).itemsize
                arr = np.frombuffer(floats[fpos : fpos + size], dt).reshape(shape)
                fpos += size
                target = getattr(torch, e["dtype"])
                values = arr.astype(np.float32) if e["enc"] != "raw" else arr.copy()
                state[e["name"]] = torch.from_numpy(values).to(target)
    except (ValueError, KeyError, TypeError, AttributeError) as ex:
        raise bad from ex
    module = build_module(meta.arch)
    module.load_state_dict(state)
    return EdgeModel(module.eval(), meta)


def load_packed(path: str | Path) -> EdgeModel:
    """Read a ``.eoz`` file back into an EdgeModel."""
    path = Path(path)
    if not path.is_file():
        raise EdgeoptError(f"packed model not found: {path}", "check the path")
    return unpack_model(path.read_bytes())


register_loader(".eoz", load_packed)


def entropy_report(model: EdgeModel) -> dict[str, float]:
    """Order-0 entropy (bytes) of the codebook indices and of the sparsity bitmaps: what an ideal
    Huffman/ANS coder of independent symbols would need, to compare with the stored streams."""
    books = codebooks_of(model.module)
    idx_bits = map_bits = 0.0
    for book in books.values():
        flat = book.indices.ravel()
        nz = flat >= 0
        if nz.any():
            p = np.bincount(flat[nz]) / nz.sum()
            p = p[p > 0]
            idx_bits += float(-(p * np.log2(p)).sum() * nz.sum())
        q = nz.mean()
        if 0 < q < 1:
            map_bits += float(-(q * np.log2(q) + (1 - q) * np.log2(1 - q)) * flat.size)
    return {"indices_entropy_bytes": idx_bits / 8, "bitmap_entropy_bytes": map_bits / 8}
