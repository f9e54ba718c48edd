"""The shard sample codec: one :class:`~neurofm.tokenizers.Segment` <-> the files of one
WebDataset sample::

    <key>.signal.npy        float16 (default) or float32 [C, T]
    <key>.positions.npy     float32 [C, 3]
    <key>.orientations.npy  float32 [C, 3]
    <key>.meta.json         meta + kinds

Decoding checks what a torn or edited shard could hold (non-finite signal, shapes that
disagree, meta a writer would not write) and names the sample.
"""

from __future__ import annotations

import ast
import io
import json
from functools import lru_cache
from typing import Any

import numpy as np

from neurofm.errors import ShardError
from neurofm.tokenizers.segment import MODALITIES, Segment

FIELDS = ("signal.npy", "positions.npy", "orientations.npy", "meta.json")



def json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")



def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()



def encode_segment(seg: Segment, dtype: str = "float16") -> dict[str, bytes]:
    """The four files of one sample (without ``__key__``)."""
    # checked on the source values (two reductions, 3x cheaper than isfinite on float16);
    # NaN fails the comparison too
    if not max(seg.signal.max(), -seg.signal.min()) <= np.finfo(dtype).max:
        raise ShardError(f"segment at {seg.meta.get('onset_s')} s of {seg.meta.get('source')} "
                         f"is not finite or overflows {dtype} (|x| > {np.finfo(dtype).max:g})"
                         + ("; use dtype='float32'" if dtype == "float16" else ""))
    signal = seg.signal.astype(dtype)
    meta = dict(seg.meta, kinds=list(seg.kinds))
    return {
        "signal.npy": _npy(signal),
        "positions.npy": _npy(seg.positions.astype(np.float32)),
        "orientations.npy": _npy(seg.orientations.astype(np.float32)),
        "meta.json": json.dumps(meta, sort_keys=True, default=json_default).encode(),
    }



@lru_cache(maxsize=4096)
def _npy_header(header: bytes) -> tuple[np.dtype, tuple[int, ...], bool]:
    # shards repeat a handful of headers (dtype, shape): parse each once
    info = ast.literal_eval(header.decode("latin1"))
    return np.dtype(info["descr"]), tuple(info["shape"]), bool(info["fortran_order"])



def load_npy(data: bytes) -> np.ndarray:
    """A ``.npy`` file's bytes -> array (a writable copy), for the formats ``np.save`` writes."""
    if data[:6] != b"\x93NUMPY":
        raise ValueError("not a .npy file")
    major = data[6]
    size_bytes = 2 if major == 1 else 4
    hlen = int.from_bytes(data[8 : 8 + size_bytes], "little")
    start = 8 + size_bytes
    dtype, shape, fortran = _npy_header(bytes(data[start : start + hlen]))
    count = int(np.prod(shape)) if shape else 1
    array = np.frombuffer(data, dtype=dtype, count=count, offset=start + hlen)
    return array.reshape(shape, order="F" if fortran else "C").copy()



def decode_sample(sample: dict[str, Any]) -> Segment:
    """A WebDataset sample (raw bytes per field) -> :class:`Segment` (float32 signal)."""
    try:
        meta = json.loads(sample["meta.json"])
        kinds = tuple(meta.pop("kinds"))
        arrays = {k: load_npy(sample[k]) for k in ("signal.npy", "positions.npy", "orientations.npy")}
    except (KeyError, ValueError, OSError) as err:
        where = sample.get("__url__", "?")
        raise ShardError(f"sample {sample.get('__key__')!r} is incomplete or corrupt ({err})", where) from err
    signal = arrays["signal.npy"]
    where, key = sample.get("__url__", "?"), sample.get("__key__")
    if not np.isfinite(signal).all():  # a flipped bit in an exponent: corrupt, never trained on
        raise ShardError(f"sample {key!r} has {int((~np.isfinite(signal)).sum())} "
                         "non-finite values (corrupt)", where)
    problem = _meta_problem(meta, kinds, signal, arrays["positions.npy"])
    if problem:
        raise ShardError(f"sample {key!r}: {problem} (corrupt or edited metadata)", where)
    meta["key"] = key
    return Segment(arrays["signal.npy"].astype(np.float32, copy=False), arrays["positions.npy"],
                   arrays["orientations.npy"], kinds, meta)



def _meta_problem(meta: dict, kinds: tuple, signal: np.ndarray, positions: np.ndarray) -> str | None:
    """What makes a sample unusable for the model, or None."""
    if meta.get("modality") not in MODALITIES:
        return f"unknown modality {meta.get('modality')!r}"
    sfreq = meta.get("sfreq")
    if not isinstance(sfreq, int | float) or not np.isfinite(sfreq) or sfreq <= 0:
        return f"sfreq {sfreq!r} is not a positive rate"
    if signal.ndim != 2 or len(kinds) != signal.shape[0] or positions.shape != (signal.shape[0], 3):
        return (f"signal {signal.shape}, {len(kinds)} kinds and positions {positions.shape} "
                "do not agree")
    return None
