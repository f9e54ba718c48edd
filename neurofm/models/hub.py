"""Checkpoints on the Hugging Face Hub, through ``huggingface_hub`` (the ``hub`` extra).

A neurofm model on the Hub is the folder :func:`neurofm.models.io.save_pretrained` writes:
``config.json`` (architecture, input contract, recipe), ``model.safetensors`` and the model
card ``README.md``.
"""

from __future__ import annotations

import os
from pathlib import Path

from neurofm._version import __version__
from neurofm.errors import CheckpointError, NotAvailableError
from neurofm.models.io import CARD, CONFIG, WEIGHTS


def _hub():
    try:
        import huggingface_hub
    except ImportError as err:
        raise NotAvailableError("the Hugging Face Hub needs huggingface_hub: pip install 'neurofm[hub]'") from err
    return huggingface_hub


def download(repo_id: str, *, revision: str | None = None, cache_dir: str | os.PathLike | None = None,
             token: str | None = None) -> Path:
    """The local folder of ``repo_id``'s model files, downloaded into the Hub cache if not
    there yet (with ``HF_HUB_OFFLINE=1``: from the cache only)."""
    hub = _hub()
    from huggingface_hub.errors import (
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    try:
        folder = hub.snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, token=token,
                                       allow_patterns=[CONFIG, WEIGHTS, CARD], library_name="neurofm",
                                       library_version=__version__)
    except HFValidationError as err:
        raise CheckpointError("neither a local checkpoint (no such path) nor a Hub repo id "
                              "('org/name')", repo_id) from err
    except RepositoryNotFoundError as err:
        raise CheckpointError("no such model repository on the Hub (or it is private: log in with "
                              "`huggingface-cli login` or set HF_TOKEN)", repo_id) from err
    except LocalEntryNotFoundError as err:
        raise CheckpointError("not in the local Hub cache, and the Hub cannot be reached (offline, "
                              "or HF_HUB_OFFLINE=1): download it once with network", repo_id) from err
    folder = Path(folder)
    if not (folder / WEIGHTS).exists():
        raise CheckpointError(f"the Hub repository holds no {WEIGHTS}: not a neurofm model", repo_id)
    return folder


def upload(folder: str | os.PathLike, repo_id: str, *, private: bool | None = None, token: str | None = None,
           commit_message: str = "Upload neurofm model") -> str:
    """Upload a saved model folder to ``repo_id`` (created if needed); the commit's URL."""
    hub = _hub()
    api = hub.HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    info = api.upload_folder(folder_path=os.fspath(folder), repo_id=repo_id, repo_type="model",
                             allow_patterns=[CONFIG, WEIGHTS, CARD], commit_message=commit_message)
    return str(getattr(info, "commit_url", info))
