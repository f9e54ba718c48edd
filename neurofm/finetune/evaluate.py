"""In-process evaluation: a model and labelled windows in, predictions and metrics out.

:func:`evaluate` runs one protocol (its splits), one mode of the model and, beside it, the
classical baselines on the same splits, and returns an :class:`Evaluation`: the predictions
table, metrics per method and per split, what ``neurofm finetune`` writes (``write``) and a
JSON-ready summary. ``neurofm finetune task=decoding|disorder`` is: discover and tokenize the
inputs, :func:`evaluate`, write; benchmarks and notebooks call :func:`evaluate` directly::

    from neurofm import load
    from neurofm.finetune.evaluate import evaluate
    from neurofm.tokenizers import tokenize_events

    segments = [w for path in runs for w in tokenize_events(path, event_id=["T1", "T2"], tmin=0.5, tmax=2.5)]
    result = evaluate(load("runs/eeg/export"), segments, [w.meta["label"] for w in segments],
                      protocol="loso", mode="linear_probe", readout="sensors")
    result.metrics["balanced_accuracy"], result.predictions.head()
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from neurofm.console import progress_over
from neurofm.embedding import as_neurofm
from neurofm.errors import ConfigError, NeurofmError
from neurofm.finetune import protocols
from neurofm.finetune.baselines import (
    TangentSpace,
    correlation_features,
    covariances,
    decoding_baselines,
    fc_logistic,
    shared_sensor_array,
    subject_series,
)
from neurofm.finetune.classifier import finetune_classifier, linear_probe
from neurofm.finetune.disorder import aggregate_subjects
from neurofm.finetune.loops import TrainingRule
from neurofm.finetune.metrics import classification_metrics
from neurofm.finetune.plots import plot_confusion
from neurofm.finetune.protocols import Split
from neurofm.io import atomic_write, write_text_atomic
from neurofm.readouts import LEARNED
from neurofm.tokenizers.segment import Segment

logger = logging.getLogger("neurofm.finetune")
PROTOCOLS = ("kfold", "kfold_subject", "loso", "logo", "few_shot")


@dataclass
class Evaluation:
    """What :func:`evaluate` returns.

    Attributes
    ----------
    classes : list of str
        Class names; ``prob_<class>`` columns of ``predictions`` follow this order.
    level : 'window' | 'subject'
        What one prediction is about.
    mode : str
        The model's method (the others are baselines).
    predictions : DataFrame
        One row per test item and method: ``method``, ``split``, ``subject``, ``label``, the
        probabilities, and (window level) ``source`` and ``onset_s``.
    methods : dict
        Per method: ``metrics`` (pooled over the test items, with bootstrap CIs) and
        ``splits`` (one row of metrics per split).
    """

    classes: list[str]
    level: str
    mode: str
    predictions: pd.DataFrame
    methods: dict[str, dict[str, Any]]
    n_windows: int
    n_subjects: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def metrics(self) -> dict[str, Any]:
        """The model's pooled metrics."""
        return self.methods[self.mode]["metrics"]

    def summary(self) -> dict[str, Any]:
        """JSON-ready: classes, sizes and every method's metrics (``metrics.json``)."""
        return {"classes": self.classes, "level": self.level, "n_windows": self.n_windows,
                "n_subjects": self.n_subjects, "methods": self.methods, "metrics": self.metrics,
                "splits": self.methods[self.mode]["splits"], **self.extra}

    def write(self, run_dir: str | Path) -> None:
        """``results.md`` (a table per method), ``predictions.csv`` and the model's
        ``confusion_matrix.png`` into ``run_dir``, each written atomically."""
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        lines = []
        for method, found in self.methods.items():
            title = f"### {method}" + (" (subject level)" if self.level == "subject" else "")
            lines += [title, "", *_metric_rows(found["splits"]), ""]
        write_text_atomic(run_dir / "results.md", "\n".join(lines), "results table")
        with atomic_write(run_dir / "predictions.csv", "predictions table") as tmp:
            self.predictions.to_csv(tmp, index=False)
        mine = self.predictions[self.predictions["method"] == self.mode]
        probs = mine[[f"prob_{c}" for c in self.classes]].to_numpy()
        truth = mine["label"].map({c: i for i, c in enumerate(self.classes)}).to_numpy()
        plot_confusion(truth, probs.argmax(1), self.classes, run_dir / "confusion_matrix.png")


def protocol_splits(protocol: str, labels: np.ndarray, subjects: np.ndarray, *, groups: np.ndarray | None = None,
                    group_values: np.ndarray | None = None, folds: int = 5, shots: int = 5, repeats: int = 5,
                    seed: int = 0) -> list[Split]:
    """The splits of ``protocol``: ``kfold`` (by event ``groups``), ``kfold_subject``,
    ``loso``, ``logo`` (by ``group_values``, e.g. the site) or ``few_shot``."""
    groups = np.arange(len(labels)) if groups is None else groups
    if protocol == "kfold":
        return protocols.event_kfold(labels, groups, k=folds, seed=seed)
    if protocol == "kfold_subject":
        return protocols.subject_kfold(subjects, k=folds, labels=labels, seed=seed)
    if protocol == "loso":
        return protocols.leave_one_subject_out(subjects)
    if protocol == "logo":
        if group_values is None:
            raise ConfigError("task.protocol=logo needs task.group_by=<phenotype column or entity, "
                              "e.g. SITE_ID or site>")
        try:
            return protocols.leave_one_group_out(group_values, subjects)
        except ValueError as err:
            raise ConfigError(f"task.group_by: {err}") from err
    if protocol == "few_shot":
        return protocols.few_shot(labels, groups, shots=shots, repeats=repeats, seed=seed)
    raise ConfigError(f"task.protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")


def evaluate(
    model,
    segments: Sequence[Segment],
    labels: Sequence,
    groups: Sequence | None = None,
    *,
    subjects: Sequence | None = None,
    protocol: str = "kfold_subject",
    splits: list[Split] | None = None,
    test_subjects: Sequence[str] | None = None,
    mode: str = "linear_probe",
    readout: str = "mean",
    baselines: bool = True,
    level: str = "window",
    group_values: Sequence | None = None,
    folds: int = 5,
    shots: int = 5,
    repeats: int = 5,
    epochs: int = 15,
    lr: float = 1e-3,
    layer_decay: float = 0.75,
    lora_rank: int = 8,
    rule: TrainingRule | None = None,
    other_modalities: bool = False,
    seed: int = 0,
) -> Evaluation:
    """Evaluate ``model`` in ``mode`` on labelled windows under ``protocol``, beside the
    classical baselines on the same splits.

    Parameters
    ----------
    model : NeuroFM | NeuroFMEncoder | None
        What :func:`neurofm.load` returns (``None`` with ``mode='scratch'``: the ``tiny``
        architecture from random weights).
    segments : list of Segment
        The windows (``tokenize_events``, ``tokenize_raw``, ``tokenize_roi_table`` ...).
    labels : sequence
        One class per window (names or numbers; classes are their sorted unique values).
    groups : sequence | None
        Windows that must stay in one fold under ``protocol='kfold'`` (an event's windows).
    subjects : sequence | None
        One subject per window (default: each segment's ``meta['subject']``).
    protocol : str
        ``kfold`` | ``kfold_subject`` | ``loso`` | ``logo`` (by ``group_values``) |
        ``few_shot``; or ``splits`` given directly.
    test_subjects : sequence | None
        Keep only the leave-one-subject-out splits that test these subjects.
    mode, readout
        The model's mode (``linear_probe`` | ``finetune`` | ``lora`` | ``scratch``) and what
        its probe or head reads (:mod:`neurofm.readouts`).
    baselines : bool
        Window level: MOABB's CSP + LDA, tangent space + LR, the filter-bank variant and ERP +
        shrinkage LDA; subject level: functional connectivity (correlation, tangent space) +
        logistic regression.
    level : 'window' | 'subject'
        Score windows, or subjects (window probabilities pooled per subject; the splits are
        by subject, and every window of a subject carries the subject's label).
    epochs, lr, layer_decay, lora_rank, rule
        Training of the trained modes (:func:`~neurofm.finetune.classifier.finetune_classifier`).
    other_modalities : bool
        Windows of a modality the model's input contract does not serve are a transfer across
        modalities, asked for (else the probe refuses them, as :meth:`NeuroFM.embed` does).
    """
    if level not in ("window", "subject"):
        raise ConfigError(f"level must be 'window' or 'subject', got {level!r}")
    segments = list(segments)
    if not segments:
        raise NeurofmError("nothing to evaluate: no windows")
    names = [str(v) for v in labels]
    if len(names) != len(segments):
        raise ConfigError(f"{len(names)} labels for {len(segments)} windows")
    classes, y = np.unique(names, return_inverse=True)
    classes = classes.tolist()
    if len(classes) < 2:
        raise NeurofmError(f"a classification needs two or more classes; found {classes}")
    subjects = np.array([str(s) for s in subjects] if subjects is not None
                        else [str(s.meta.get("subject")) for s in segments])
    groups = np.asarray(groups) if groups is not None else None
    if splits is None:
        splits = protocol_splits(protocol, y, subjects, groups=groups if level == "window" else subjects,
                                 group_values=None if group_values is None else np.asarray(group_values),
                                 folds=folds, shots=shots, repeats=repeats, seed=seed)
    if test_subjects is not None:
        splits = _only_testing(splits, subjects, [str(s) for s in test_subjects])
    frozen = mode == "linear_probe" and readout not in LEARNED
    features = (as_neurofm(model).embed(segments, readout=readout, other_modalities=other_modalities).windows
                if frozen else None)

    def model_probs(split: Split) -> np.ndarray:
        if frozen:
            return linear_probe(features[split.train], y[split.train], features[split.test], seed)
        start = time.perf_counter()
        probs, losses = finetune_classifier(model, segments, y, split.train, split.test, mode=mode, epochs=epochs,
                                            lr=lr, layer_decay=layer_decay, lora_rank=lora_rank, readout=readout,
                                            seed=seed, rule=rule)
        logger.info("%s, split %s: %d epochs on %d windows, loss %.3f -> %.3f (%.0f s)", mode, split.name, epochs,
                    len(split.train), losses[0], np.mean(losses[-10:]), time.perf_counter() - start)
        return probs

    if level == "window":
        methods, items = _window_methods(mode, model_probs, segments, y, baselines)
        unit, unit_y = np.arange(len(segments)), y
    else:
        methods, items, unit, unit_y = _subject_methods(mode, model_probs, segments, y, subjects, baselines, seed)
    items["label"] = np.array(classes, dtype=object)[unit_y]
    out: dict[str, dict] = {}
    rows = []
    for method, predict in methods.items():
        truth, probs, per_split = [], [], []
        for split in progress_over(splits, f"{method}: folds"):
            index, prob = predict(split)
            rows.append(items.iloc[index].assign(method=method, split=split.name).join(
                pd.DataFrame(prob, columns=[f"prob_{c}" for c in classes], index=items.index[index])))
            test_y = unit_y[index]
            truth.append(test_y)
            probs.append(prob)
            n_train = len(np.unique(unit[split.train])) if level == "subject" else len(split.train)
            per_split.append({"split": split.name, "n_train": int(n_train), "n_test": int(len(index)),
                              **{k: v["value"] for k, v in classification_metrics(test_y, prob, n_boot=1).items()}})
        metrics = classification_metrics(np.concatenate(truth), np.concatenate(probs))
        out[method] = {"metrics": metrics, "splits": per_split}
        ba = metrics["balanced_accuracy"]
        logger.info("%s by %s (%s, %s level): balanced accuracy %.3f [%.3f, %.3f]", classes, method, protocol,
                    level, ba["value"], ba["ci_low"], ba["ci_high"])
    columns = ["method", "split", *items.columns, *[f"prob_{c}" for c in classes]]
    predictions = pd.concat(rows, ignore_index=True)[columns]
    return Evaluation(classes=classes, level=level, mode=mode, predictions=predictions, methods=out,
                      n_windows=len(segments), n_subjects=len(np.unique(subjects)))


Predict = Callable[[Split], tuple[np.ndarray, np.ndarray]]


def _window_methods(mode: str, model_probs, segments: list[Segment], y: np.ndarray, baselines: bool
                    ) -> tuple[dict[str, Predict], pd.DataFrame]:
    """Each window-level method (split -> test window indices, probabilities) and the items
    table (one row per window)."""
    items = pd.DataFrame({
        "subject": [str(s.meta.get("subject")) for s in segments],
        "source": [Path(str(s.meta.get("source", ""))).name for s in segments],
        "onset_s": [s.meta.get("event_onset_s", s.meta.get("onset_s", 0.0)) for s in segments]})
    methods: dict[str, Predict] = {mode: lambda split: (split.test, model_probs(split))}
    if baselines:
        for name, predict in decoding_baselines(shared_sensor_array(segments), segments[0].sfreq).items():
            methods[name] = lambda split, p=predict: (split.test, p(split.train, y[split.train], split.test))
    return methods, items


def _subject_methods(mode: str, model_probs, segments: list[Segment], y: np.ndarray, subjects: np.ndarray,
                     baselines: bool, seed: int
                     ) -> tuple[dict[str, Predict], pd.DataFrame, np.ndarray, np.ndarray]:
    """Each subject-level method (split -> test subject positions, probabilities), the items
    table (one row per subject, sorted), each window's subject position and each subject's class."""
    ids, position = np.unique(subjects, return_inverse=True)
    y_subject = np.zeros(len(ids), dtype=int)
    y_subject[position] = y
    items = pd.DataFrame({"subject": ids})

    def mine(split: Split) -> tuple[np.ndarray, np.ndarray]:
        test_ids, probs = aggregate_subjects(model_probs(split), subjects[split.test])
        return np.searchsorted(ids, test_ids), probs

    methods: dict[str, Predict] = {mode: mine}
    if baselines:
        series = subject_series(segments, subjects)[1]
        fc = correlation_features(series)
        tangent = TangentSpace(covariances(series, standardize=True))  # once per cohort, not per fold

        def masks(split: Split) -> tuple[np.ndarray, np.ndarray]:
            return np.isin(ids, subjects[split.train]), np.isin(ids, subjects[split.test])

        def fc_correlation(split: Split) -> tuple[np.ndarray, np.ndarray]:
            train, test = masks(split)
            return np.flatnonzero(test), fc_logistic(fc[train], y_subject[train], fc[test], seed)

        def fc_tangent(split: Split) -> tuple[np.ndarray, np.ndarray]:
            train, test = masks(split)
            f_train, f_test = tangent.features(np.flatnonzero(train), np.flatnonzero(test))
            return np.flatnonzero(test), fc_logistic(f_train, y_subject[train], f_test, seed)

        methods.update(fc_logistic=fc_correlation, fc_tangent=fc_tangent)
    return methods, items, position, y_subject


def _only_testing(splits: list[Split], subjects: np.ndarray, wanted: list[str]) -> list[Split]:
    """The leave-one-subject-out splits that test ``wanted``."""
    unknown = sorted(set(wanted) - set(subjects.tolist()))
    if unknown:
        raise ConfigError(f"task.test_subjects names {unknown}, which are not among the subjects of "
                          f"the inputs ({sorted(set(subjects.tolist()))})")
    return [s for s in splits if subjects[s.test[0]] in wanted]


def _metric_rows(per_split: list[dict]) -> list[str]:
    lines = ["| split | n_train | n_test | balanced acc. | AUROC | kappa | F1 w |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['split']} | {r['n_train']} | {r['n_test']} | {r['balanced_accuracy']:.3f} | "
              f"{r['auroc']:.3f} | {r['cohen_kappa']:.3f} | {r['f1_weighted']:.3f} |" for r in per_split]
    return lines
