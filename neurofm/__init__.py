"""neurofm: brain foundation models across EEG, MEG and fMRI.

The public surface is small: :func:`load` (a checkpoint ready to ``.embed(...)``),
the tokenizers (:mod:`neurofm.tokenizers`) and the shard tools (:mod:`neurofm.datasets`).
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "load"]


def load(path, device="cpu"):
    """Load a checkpoint for embedding (exported dir, Lightning ``.ckpt`` or DeepSpeed dir).

    >>> model = neurofm.load("runs/base/export")            # doctest: +SKIP
    >>> out = model.embed("sub-01_task-rest_eeg.edf")       # doctest: +SKIP
    >>> out.windows.shape, out.pooled.shape, out.times      # doctest: +SKIP

    See :class:`neurofm.embedding.NeuroFM`.
    """
    from neurofm.embedding import load as _load

    return _load(path, device=device)
