"""User-facing errors.

Every error a user can cause with their input (a file, an atlas, a shard, a
checkpoint, a config value) is a :class:`NeurofmError`. Messages name the file
and say what to do; the CLI prints them as one line and exits with code 2
(``NEUROFM_DEBUG=1`` shows the traceback).
"""

from __future__ import annotations

import os


class NeurofmError(Exception):
    """Base class of neurofm's user-facing errors.

    Parameters
    ----------
    message : str
        What went wrong and what to do about it.
    path : str | os.PathLike | None
        The file the problem is in; prefixed to the message when given.
    """

    def __init__(self, message: str, path: str | os.PathLike | None = None):
        self.path = None if path is None else os.fspath(path)
        super().__init__(f"{self.path}: {message}" if self.path else message)


class RecordingError(NeurofmError):
    """An EEG/MEG/iEEG recording cannot be read or tokenized as asked."""


class TooShortError(NeurofmError):
    """A recording is shorter than one window; ``duration_s`` says how long it is."""

    def __init__(self, message: str, path: str | os.PathLike | None = None, duration_s: float = 0.0):
        super().__init__(message, path)
        self.duration_s = duration_s


class RecordingTooShortError(TooShortError, RecordingError):
    """An EEG/MEG/iEEG recording is shorter than one window."""


class MissingPositionsError(RecordingError):
    """Channels have no 3-D position and none could be found by name."""


class BoldError(NeurofmError):
    """A 4-D BOLD image or ROI table cannot be tokenized as asked."""


class BoldTooShortError(TooShortError, BoldError):
    """A BOLD run or ROI table is shorter than one window."""


class AtlasError(NeurofmError):
    """An atlas is not usable (not integer labels, wrong space, unknown labels)."""


class EpochsError(NeurofmError, ValueError):
    """Epochs (an array or ``mne.Epochs``) that cannot be embedded: wrong shape, empty, NaN or
    inf, complex or sparse. A ``ValueError`` too, as scikit-learn expects of bad input."""


class ShardError(NeurofmError):
    """A shard or manifest is missing, corrupt or inconsistent."""


class CheckpointError(NeurofmError):
    """A checkpoint is missing, corrupt, or not a neurofm checkpoint."""


class InputContractError(NeurofmError):
    """An input the checkpoint cannot serve (its ``input_contract``): another modality, rate or space."""


class TrainingError(NeurofmError):
    """Training cannot go on safely (a non-finite loss or weights)."""


class ConfigError(NeurofmError):
    """A configuration value is invalid."""


class NotAvailableError(NeurofmError):
    """A command or option exists in the interface but is not part of this release."""


class DiskFullError(NeurofmError):
    """A file did not fit on its filesystem; nothing was left behind, earlier files are intact.

    ``needed_bytes`` is what the file needs (an estimate), ``free_bytes`` what was free.
    """

    def __init__(self, message: str, path: str | os.PathLike | None = None, needed_bytes: int = 0,
                 free_bytes: int = 0):
        super().__init__(message, path)
        self.needed_bytes = needed_bytes
        self.free_bytes = free_bytes


class NotFittedError(NeurofmError, ValueError, AttributeError):
    """A fitted object (an ``Embedder``, an ``EpochsPreprocessor``) used before ``fit``; a
    ``ValueError`` and an ``AttributeError`` too, as scikit-learn's own ``NotFittedError``."""
