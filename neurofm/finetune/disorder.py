"""Subject-level classification (disorder vs control, or any subject label).

Every window of a subject carries the subject's label; a head classifies windows, and a
subject's prediction is the mean of its windows' log-probabilities (their logits,
aggregated). Splits are always by subject. The classical reference is functional
connectivity (Fisher-z correlation between sensors over all of a subject's windows)
with logistic regression.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from neurofm.errors import NeurofmError
from neurofm.finetune.baselines import shared_sensors
from neurofm.tokenizers.segment import Segment

logger = logging.getLogger("neurofm.finetune")


def subject_labels(segments: Sequence[Segment], label: str) -> tuple[list[Segment], np.ndarray, list[str]]:
    """Keep the segments whose subject has ``label`` in its phenotype row (see
    :func:`neurofm.datasets.join_phenotype`); return them, class indices and class names."""
    kept, values, missing = [], [], set()
    for seg in segments:
        row = seg.meta.get("phenotype") or {}
        value = row.get(label)
        if value is None:
            missing.add(str(seg.meta.get("subject")))
            continue
        kept.append(seg)
        values.append(str(value))
    if missing:
        logger.warning("%d subjects have no %r value and are left out: %s", len(missing), label,
                       sorted(missing)[:10])
    classes = sorted(set(values))
    if len(classes) < 2:
        raise NeurofmError(f"subject-level classification needs two or more values of {label!r}; "
                           f"found {classes} (check the phenotype table and its subject IDs)")
    return kept, np.array([classes.index(v) for v in values]), classes


def aggregate_subjects(prob: np.ndarray, subjects: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Window probabilities ``[n, K]`` -> subject probabilities ``[S, K]`` (softmax of the mean
    log-probability of each subject's windows); returns the subject IDs (sorted) too."""
    ids, inverse = np.unique(subjects, return_inverse=True)
    logp = np.log(np.clip(prob, 1e-12, 1.0))
    total = np.zeros((len(ids), prob.shape[1]))
    np.add.at(total, inverse, logp)
    mean = total / np.bincount(inverse)[:, None]
    mean -= mean.max(axis=1, keepdims=True)
    out = np.exp(mean)
    return ids, out / out.sum(axis=1, keepdims=True)


def connectivity_features(segments: Sequence[Segment], subjects: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Functional connectivity per subject (``subjects``: one ID per segment): Fisher-z Pearson correlation between every pair
    of sensors over all of the subject's windows, upper triangle ``[S, C(C-1)/2]``.

    Every subject must have the same sensors (names) in the same order; sensors are
    matched by ``meta['ch_names']`` (or parcel labels) and reduced to those all share.
    """
    rows = shared_sensors(segments)
    ids, inverse = np.unique(np.asarray(subjects).astype(str), return_inverse=True)
    parts: list[list[np.ndarray]] = [[] for _ in ids]
    for seg, seg_rows, k in zip(segments, rows, inverse, strict=True):
        parts[k].append(seg.signal[seg_rows])
    iu = np.triu_indices(len(rows[0]), k=1)
    corr = np.stack([np.corrcoef(np.concatenate(p, axis=1))[iu] for p in parts])
    return ids, np.arctanh(np.clip(corr, -0.999999, 0.999999))


def fc_logistic(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, seed: int = 0) -> np.ndarray:
    """Standardised, L2-regularised logistic regression on connectivity features; test probabilities."""
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=5000, random_state=seed))
    return model.fit(x_train, y_train).predict_proba(x_test)


def plant_group_difference(segments: Sequence[Segment], amplitude: float, freq_hz: float = 6.0,
                           centre_m: Sequence[float] = (0.0, 0.09, 0.10), width_m: float = 0.06,
                           seed: int = 0) -> list[Segment]:
    """Copies of ``segments`` with a known effect planted: an oscillation at ``freq_hz``
    from one source near ``centre_m`` (head frame, m; default near Fz), seen by each
    sensor with a Gaussian falloff of ``width_m``, at ``amplitude`` (scaled units, i.e.
    robust SDs) times a per-window gain in [0.5, 1.5] and a random phase.

    Used to test the subject-level path on real recordings when no labelled cohort is at
    hand: the planted group must be told apart, the other must not change.
    """
    rng = np.random.default_rng(seed)
    out = []
    for seg in segments:
        distance = np.linalg.norm(seg.positions - np.asarray(centre_m, dtype=np.float32), axis=1)
        pattern = np.exp(-0.5 * (distance / width_m) ** 2)  # [C]
        t = np.arange(seg.n_times) / seg.sfreq
        wave = np.sin(2 * np.pi * freq_hz * t + rng.uniform(0, 2 * np.pi)) * rng.uniform(0.5, 1.5)
        out.append(Segment(signal=(seg.signal + amplitude * pattern[:, None] * wave[None, :]).astype(np.float32),
                           positions=seg.positions, orientations=seg.orientations, kinds=seg.kinds,
                           meta=dict(seg.meta)))
    return out
