"""Evaluation splits that never leak a subject (cross-subject) or an event (within subject)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import GroupKFold, LeaveOneGroupOut, StratifiedGroupKFold

from neurofm.errors import ConfigError


@dataclass(frozen=True)
class Split:
    """Indices of one fold: ``train`` and ``test`` never share a group."""

    name: str
    train: np.ndarray
    test: np.ndarray


def _check(splits: list[Split], groups: np.ndarray) -> list[Split]:
    for split in splits:
        shared = set(groups[split.train]) & set(groups[split.test])
        if shared:
            raise AssertionError(f"{split.name}: groups {sorted(shared)[:5]} in train and test")
    return splits


def subject_kfold(subjects, k: int = 5, labels=None, seed: int = 0) -> list[Split]:
    """Cross-subject k-fold: each subject's windows are all in one fold.

    With ``labels`` (one per window; constant within a subject, as for a diagnosis), the
    folds are stratified so every fold's training set holds every class.
    """
    subjects = np.asarray(subjects)
    k = min(k, len(np.unique(subjects)))
    if k < 2:
        raise ValueError(f"cross-subject folds need at least 2 subjects; found {len(np.unique(subjects))}")
    if labels is None:
        folds = GroupKFold(n_splits=k).split(subjects, groups=subjects)
    else:
        labels = np.asarray(labels)
        folds = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed).split(
            subjects, labels, groups=subjects)
    return _check([Split(f"fold{i}", tr, te) for i, (tr, te) in enumerate(folds)], subjects)


def leave_one_subject_out(subjects) -> list[Split]:
    """One fold per subject."""
    subjects = np.asarray(subjects)
    folds = LeaveOneGroupOut().split(subjects, groups=subjects)
    return _check([Split(f"loso-{subjects[te[0]]}", tr, te) for tr, te in folds], subjects)


def leave_one_group_out(groups, subjects) -> list[Split]:
    """One fold per group (a site, a scanner, a cohort): train on the others, test on it.
    A subject in two groups would leak, and is an error."""
    groups, subjects = np.asarray(groups).astype(str), np.asarray(subjects).astype(str)
    per_subject = {}
    for g, s in zip(groups.tolist(), subjects.tolist(), strict=True):
        if per_subject.setdefault(s, g) != g:
            raise ValueError(f"subject {s!r} is in groups {per_subject[s]!r} and {g!r}: splits by "
                             "group would put it in train and test")
    if len(np.unique(groups)) < 2:
        raise ValueError(f"leave-one-group-out needs 2 or more groups; found {np.unique(groups).tolist()}")
    members: dict[str, set] = {}
    for s, g in per_subject.items():
        members.setdefault(g, set()).add(s)
    lonely = {g: sorted(m)[0] for g, m in sorted(members.items()) if len(m) < 2}
    if lonely:
        raise ValueError(f"groups {lonely} hold one subject each: a test fold of one subject has no "
                         "balanced accuracy or AUROC; merge such groups or leave them out of inputs")
    folds = LeaveOneGroupOut().split(groups, groups=groups)
    return _check(_check([Split(f"logo-{groups[te[0]]}", tr, te) for tr, te in folds], groups), subjects)


def event_kfold(labels, groups, k: int = 5, seed: int = 0) -> list[Split]:
    """Within-subject, stratified k-fold over events: all windows of an event in one fold."""
    labels, groups = np.asarray(labels), np.asarray(groups)
    folds = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed).split(labels, labels, groups)
    return _check([Split(f"fold{i}", tr, te) for i, (tr, te) in enumerate(folds)], groups)


def few_shot(labels, groups, shots: int, repeats: int = 5, seed: int = 0) -> list[Split]:
    """``shots`` training events per class (drawn ``repeats`` times); every other event is test."""
    labels, groups = np.asarray(labels), np.asarray(groups)
    rng = np.random.default_rng(seed)
    splits = []
    for r in range(repeats):
        chosen = set()
        for label in np.unique(labels):
            events = np.unique(groups[labels == label])
            if len(events) <= shots:
                raise ValueError(f"class {label!r} has {len(events)} events, not more than shots={shots}")
            chosen |= set(rng.choice(events, shots, replace=False).tolist())
        train = np.flatnonzero(np.isin(groups, list(chosen)))
        test = np.flatnonzero(~np.isin(groups, list(chosen)))
        splits.append(Split(f"{shots}shot-{r}", train, test))
    return _check(splits, groups)


def time_splits(n_windows: int, protocol: str = "kfold_time", folds: int = 5,
                test_fraction: float = 0.2) -> list[Split]:
    """Held-out time: ``heldout_time`` tests on the last ``test_fraction`` of the windows,
    ``kfold_time`` on each of ``folds`` contiguous blocks in turn."""
    if protocol == "heldout_time":
        n_test = max(1, int(round(test_fraction * n_windows)))
        return [Split("heldout", np.arange(n_windows - n_test), np.arange(n_windows - n_test, n_windows))]
    if protocol == "kfold_time":
        blocks = np.array_split(np.arange(n_windows), folds)
        return [Split(f"block{k}", np.setdiff1d(np.arange(n_windows), b), b) for k, b in enumerate(blocks)]
    raise ConfigError(f"encoding protocol must be heldout_time or kfold_time, got {protocol!r}")
