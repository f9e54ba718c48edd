"""Optional dependencies: which extra brings each one, and a clear error when it is missing.

``pip install neurofm`` gives the tokenizers, the encoder, ``load``/``embed``, the
scikit-learn ``Embedder`` and the Hub; pretraining and streaming shards need
``neurofm[train]`` (Lightning, DeepSpeed, WebDataset, TensorBoard).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from neurofm.errors import NeurofmError

EXTRAS = {
    "lightning": "train", "webdataset": "train", "deepspeed": "train", "tensorboard": "train",
    "peft": "lora", "pyarrow": "parquet", "huggingface_hub": "hub", "moabb": "moabb",
    "braindecode": "braindecode", "xformers": "xformers", "s3fs": "remote", "gcsfs": "remote",
}


class MissingExtraError(NeurofmError, ImportError):
    """A feature needs a package that an optional extra of neurofm installs."""


def extra_for(err: ImportError) -> str | None:
    """The extra that installs the module ``err`` could not import, if neurofm knows one."""
    name = (getattr(err, "name", None) or "").split(".")[0]
    return EXTRAS.get(name)


def missing_extra(err: ImportError, what: str) -> MissingExtraError:
    """The one-line error for ``what`` (``'neurofm pretrain'``, ``'reading shards'``) when
    ``err`` is a missing optional package."""
    name = (getattr(err, "name", None) or "?").split(".")[0]
    extra = extra_for(err)
    how = f"pip install 'neurofm[{extra}]'" if extra else f"pip install {name}"
    return MissingExtraError(f"{what} needs {name}, which this install lacks: {how}")


def require(module: str, what: str) -> ModuleType:
    """``import module``, or a :class:`MissingExtraError` naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        if extra_for(err) is None:
            raise
        raise missing_extra(err, what) from err
