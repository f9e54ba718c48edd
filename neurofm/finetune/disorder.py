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

from neurofm.errors import NeurofmError
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


