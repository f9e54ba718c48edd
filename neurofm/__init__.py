"""neurofm: brain foundation models across EEG, MEG and fMRI.

The public surface is small: the version, the tokenizers
(:mod:`neurofm.tokenizers`) and the shard tools (:mod:`neurofm.datasets`).
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
