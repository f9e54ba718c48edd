"""``neurofm embed ckpt=... input=... out=emb.npy [+tokenizer.montage=... any tokenizer option]``."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from neurofm.configs.schema import EmbedConfig, typed
from neurofm.console import logger
from neurofm.datasets.options import FMRI_OPTIONS, MEEG_OPTIONS
from neurofm.embedding import load
from neurofm.errors import NeurofmError
from neurofm.io import atomic_write
from neurofm.options import check_keywords, spelled_as

OUT_SUFFIXES = (".npy", ".parquet")


def run_embed(cfg) -> int:
    """Embeddings of one input to ``.npy`` (+ ``<name>_times.npy``) or ``.parquet``."""
    conf: EmbedConfig = typed(cfg)
    out = Path(conf.out)
    if out.suffix not in OUT_SUFFIXES:  # before any work
        raise NeurofmError(f"out must end in {' or '.join(OUT_SUFFIXES)}", out)
    if out.suffix == ".parquet" and importlib.util.find_spec("pyarrow") is None:
        raise NeurofmError("writing .parquet needs pyarrow: pip install 'neurofm[parquet]', "
                           "or use out=*.npy", out)
    valid = ["sfreq", *dict.fromkeys([*MEEG_OPTIONS, *FMRI_OPTIONS])]
    options = check_keywords(conf.tokenizer, valid, "+tokenizer.{}=")
    device = conf.device if conf.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    model = load(conf.ckpt, device=device)
    with spelled_as({k: f"+tokenizer.{k}" for k in valid}):
        result = model.embed(conf.input, atlas=conf.atlas, batch_size=conf.batch_size,
                             window_s=conf.window_s, **options)
    if out.suffix == ".parquet":
        import pandas as pd

        table = pd.DataFrame(result.windows, columns=[f"e{k}" for k in range(result.windows.shape[1])])
        table.insert(0, "onset_s", result.times)
        with atomic_write(out, "embeddings table", expected_bytes=result.windows.nbytes) as tmp:
            table.to_parquet(tmp)
    else:
        with atomic_write(out, "embeddings array", expected_bytes=result.windows.nbytes) as tmp:
            np.save(tmp, result.windows)
        with atomic_write(out.with_name(out.stem + "_times.npy"), "embedding times array") as tmp:
            np.save(tmp, result.times)
    logger.info("embedded %d windows (dim %d) of %s -> %s", len(result.windows), result.windows.shape[1],
                conf.input, out)
    return 0
