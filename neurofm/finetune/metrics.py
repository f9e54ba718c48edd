"""Metrics with bootstrap confidence intervals."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.metrics import (
    balanced_accuracy_score,
    cohen_kappa_score,
    f1_score,
    roc_auc_score,
)


def _auroc(y: np.ndarray, prob: np.ndarray) -> float:
    if len(np.unique(y)) < 2:
        return float("nan")
    if prob.shape[1] == 2:
        return roc_auc_score(y, prob[:, 1])
    return roc_auc_score(y, prob, multi_class="ovr", labels=np.arange(prob.shape[1]))


CLASSIFICATION = {
    "balanced_accuracy": lambda y, p: balanced_accuracy_score(y, p.argmax(1)),
    "auroc": _auroc,
    "cohen_kappa": lambda y, p: cohen_kappa_score(y, p.argmax(1)),
    "f1_weighted": lambda y, p: f1_score(y, p.argmax(1), average="weighted"),
}


def classification_metrics(y_true, y_prob, n_boot: int = 1000, seed: int = 0) -> dict[str, dict[str, float]]:
    """Balanced accuracy, AUROC, Cohen's kappa, weighted F1, each with a 95 % bootstrap CI.

    ``y_true`` are class indices, ``y_prob`` ``[n, n_classes]`` probabilities.
    """
    y, prob = np.asarray(y_true), np.asarray(y_prob)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(y), size=(n_boot, len(y)))
    out = {}
    for name, fn in CLASSIFICATION.items():
        with warnings.catch_warnings():  # a resample or a small fold may hold one class only
            warnings.simplefilter("ignore")
            boot = np.array([fn(y[d], prob[d]) for d in draws])
            value = float(fn(y, prob))
        boot = boot[np.isfinite(boot)]
        out[name] = {"value": value,
                     "ci_low": float(np.percentile(boot, 2.5)) if len(boot) else float("nan"),
                     "ci_high": float(np.percentile(boot, 97.5)) if len(boot) else float("nan")}
    return out


def pearson_per_output(y_true, y_pred) -> np.ndarray:
    """Pearson r per column of ``[n, outputs]`` arrays."""
    a = np.asarray(y_true, dtype=float)
    b = np.asarray(y_pred, dtype=float)
    a, b = a - a.mean(0), b - b.mean(0)
    return (a * b).sum(0) / np.sqrt((a * a).sum(0) * (b * b).sum(0)).clip(min=1e-12)


def per_sensor_r(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Pearson r per sensor over all held-out samples: ``[n, C, T]`` arrays -> ``[C]``."""

    t = min(truth.shape[2], pred.shape[2])
    flat = lambda a: a[:, :, :t].transpose(0, 2, 1).reshape(-1, a.shape[1])  # noqa: E731
    return pearson_per_output(flat(truth), flat(pred))


def paired_difference(a, b, n_boot: int = 10000, seed: int = 0) -> dict[str, float]:
    """Paired difference ``a - b`` of two methods scored on the same units (subjects, sites).

    ``a`` and ``b`` are 1-D arrays of one score per unit, in the same order (average over seeds
    first, so each unit counts once). Returns the mean difference, its 95 % bootstrap CI over
    units, the 95 % t-interval (``t_low``, ``t_high``: with few units the percentile bootstrap
    is too narrow), the Wilcoxon signed-rank p (two-sided; ``nan`` when every difference is 0),
    the number of units and how many of them ``a`` wins.
    """
    from scipy.stats import t as student_t
    from scipy.stats import wilcoxon

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired scores need two 1-D arrays of one shape, got {a.shape} and {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("paired scores hold NaN or inf: score every unit with both methods")
    diff = a - b
    rng = np.random.default_rng(seed)
    boot = diff[rng.integers(0, len(diff), size=(n_boot, len(diff)))].mean(1)
    with warnings.catch_warnings():  # scipy warns on ties and tiny samples; p is still defined
        warnings.simplefilter("ignore")
        p = float(wilcoxon(diff).pvalue) if np.any(diff != 0) else float("nan")
    half = (float(student_t.ppf(0.975, len(diff) - 1) * diff.std(ddof=1) / np.sqrt(len(diff)))
            if len(diff) > 1 else float("nan"))
    return {"mean": float(diff.mean()), "ci_low": float(np.percentile(boot, 2.5)),
            "ci_high": float(np.percentile(boot, 97.5)), "t_low": float(diff.mean() - half),
            "t_high": float(diff.mean() + half), "wilcoxon_p": p, "n": int(len(diff)),
            "wins": int((diff > 0).sum())}
