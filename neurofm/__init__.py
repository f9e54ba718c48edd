"""neurofm: brain foundation models across EEG, MEG and fMRI.

The public surface is small: :func:`load` and :meth:`NeuroFM.from_pretrained` (a checkpoint,
a folder or a Hugging Face Hub repo id, ready to ``.embed(...)``),
the tokenizers (:mod:`neurofm.tokenizers`) and the shard tools (:mod:`neurofm.datasets`).
"""

from __future__ import annotations

from neurofm._version import __version__

__all__ = ["NeuroFM", "__version__", "load"]


def load(path, device="cpu"):
    """Load a checkpoint for embedding (exported dir, Lightning ``.ckpt`` or DeepSpeed dir).

    >>> model = neurofm.load("runs/base/export")            # doctest: +SKIP
    >>> out = model.embed("sub-01_task-rest_eeg.edf")       # doctest: +SKIP
    >>> out.windows.shape, out.pooled.shape, out.times      # doctest: +SKIP

    See :class:`neurofm.embedding.NeuroFM`.
    """
    from neurofm.embedding import load as _load

    return _load(path, device=device)


def __getattr__(name):
    if name == "NeuroFM":  # imported on first use: `import neurofm` stays light
        from neurofm.embedding import NeuroFM

        return NeuroFM
    raise AttributeError(f"module 'neurofm' has no attribute {name!r}")
