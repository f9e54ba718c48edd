"""``neurofm finetune``: decoding, encoding or subject-level classification under an
evaluation protocol; metrics to JSON, a results table, and a PNG."""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from neurofm.console import make_progress, progress_over
from neurofm.datasets import discover, join_phenotype, read_phenotype
from neurofm.datasets.options import FMRI_OPTIONS, MEEG_OPTIONS, PrepareOptions
from neurofm.datasets.tokenize import check_needs, tokenize_file
from neurofm.embedding import load
from neurofm.errors import ConfigError, NeurofmError
from neurofm.finetune import protocols
from neurofm.finetune.baselines import (
    TangentSpace,
    correlation_features,
    covariances,
    decoding_baselines,
    fc_logistic,
    ridge_trf,
    shared_sensor_array,
    subject_series,
)
from neurofm.finetune.config import FinetuneConfig, finetune_spelling
from neurofm.finetune.disorder import aggregate_subjects, subject_labels
from neurofm.finetune.encoding import encoding_data, event_features, fit_encoding, predict_encoding
from neurofm.finetune.metrics import classification_metrics, per_sensor_r
from neurofm.finetune.plots import plot_confusion, plot_sensor_r
from neurofm.finetune.protocols import time_splits
from neurofm.finetune.tasks import finetune_classifier, linear_probe, window_features
from neurofm.io import atomic_write, write_text_atomic
from neurofm.models.contract import check_segments, tokenizer_defaults
from neurofm.options import check_keywords, option_name, spelled_as
from neurofm.readouts import LEARNED
from neurofm.tokenizers import read_recording, tokenize_events
from neurofm.tokenizers.naming import entities_from_name
from neurofm.tokenizers.options import MeegOptions

logger = logging.getLogger("neurofm.finetune")



def _splits(task, labels: np.ndarray, groups: np.ndarray, subjects: np.ndarray, seed: int,
            group_values: np.ndarray | None = None):

    name = task.protocol
    if name == "kfold":
        return protocols.event_kfold(labels, groups, k=task.folds, seed=seed)
    if name == "kfold_subject":
        return protocols.subject_kfold(subjects, k=task.folds, labels=labels, seed=seed)
    if name == "loso":
        return protocols.leave_one_subject_out(subjects)
    if name == "logo":
        if group_values is None:
            raise ConfigError("task.protocol=logo needs task.group_by=<phenotype column or entity, "
                              "e.g. SITE_ID or site>")
        try:
            return protocols.leave_one_group_out(group_values, subjects)
        except ValueError as err:
            raise ConfigError(f"task.group_by={task.group_by}: {err}") from err
    if name == "few_shot":
        return protocols.few_shot(labels, groups, shots=task.shots, repeats=task.repeats, seed=seed)
    raise ConfigError(f"task.protocol must be kfold, kfold_subject, loso, logo or few_shot, got {name!r}")


def _only_testing(splits, subjects: np.ndarray, wanted: list[str]):
    """The leave-one-subject-out folds that test ``wanted`` (``task.test_subjects``)."""
    unknown = sorted(set(wanted) - set(subjects.tolist()))
    if unknown:
        raise ConfigError(f"task.test_subjects names {unknown}, which are not among the subjects of "
                          f"the inputs ({sorted(set(subjects.tolist()))})")
    return [s for s in splits if subjects[s.test[0]] in wanted]


def _classifier_probs(task, model, segments, labels, embeddings, split, seed: int) -> np.ndarray:
    """Test probabilities of one split, per window, in the task's mode."""

    if _frozen_probe(task):
        return linear_probe(embeddings[split.train], labels[split.train], embeddings[split.test], seed)
    start = time.perf_counter()
    probs, losses = finetune_classifier(
        model, segments, labels, split.train, split.test, mode=task.mode, epochs=task.epochs, lr=task.lr,
        layer_decay=task.layer_decay, lora_rank=task.lora_rank, readout=task.readout, seed=seed)
    logger.info("%s, split %s: %d epochs on %d windows, loss %.3f -> %.3f (%.0f s)", task.mode, split.name,
                task.epochs, len(split.train), losses[0], np.mean(losses[-10:]), time.perf_counter() - start)
    return probs


def _frozen_probe(task) -> bool:
    """A logistic regression on frozen features; a learned readout (spatial, attention) trains
    with its head instead (``finetune_classifier(mode="linear_probe")``)."""
    return task.mode == "linear_probe" and task.readout not in LEARNED


def _metric_rows(per_split: list[dict]) -> list[str]:
    lines = ["| split | n_train | n_test | balanced acc. | AUROC | kappa | F1 w |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['split']} | {r['n_train']} | {r['n_test']} | {r['balanced_accuracy']:.3f} | "
              f"{r['auroc']:.3f} | {r['cohen_kappa']:.3f} | {r['f1_weighted']:.3f} |" for r in per_split]
    return lines


def _modality_check(task) -> dict:
    """How :func:`check_segments` treats a modality the checkpoint was not pretrained on."""
    return {"other_modalities": task.cross_modal,
            "hint": f" (to transfer across modalities anyway: {option_name('task.cross_modal')}=true)"}


def _decoding(conf: FinetuneConfig, model, run_dir: Path, contract: dict | None = None) -> dict:

    task = conf.task
    options = MeegOptions.of(conf.tokenizer, "+tokenizer.{}=")
    by_subject = task.protocol in ("kfold_subject", "loso")
    segments = []
    for path in _inputs(conf):
        entities = entities_from_name(path, task.subject_pattern, stem_fallback=not by_subject)
        if "subject" not in entities:
            raise ConfigError(f"task.protocol={task.protocol} splits by subject, but no subject can be read "
                              "from this file name (its whole stem would count as one subject, so two runs "
                              "of one person would leak across folds): name files with BIDS entities "
                              "(sub-01_task-x_eeg.edf) or give task.subject_pattern (a regex whose first "
                              "group is the subject)", path)
        segments += list(tokenize_events(path, event_id=task.event_id, tmin=task.tmin_s,
                                         tmax=task.tmax_s, entities=entities, options=options))
    if not segments:
        raise NeurofmError("no event-locked windows: check task.event_id and the recordings' events")
    check_segments(contract, segments, **_modality_check(task))
    classes = sorted({s.meta["label"] for s in segments})
    if len(classes) < 2:
        raise NeurofmError(f"decoding needs two or more classes; found {classes}")
    labels = np.array([classes.index(s.meta["label"]) for s in segments])
    groups = np.array([f"{s.meta['source']}@{s.meta['event_onset_s']:.3f}" for s in segments])
    subjects = np.array([str(s.meta.get("subject")) for s in segments])
    if by_subject and len(set(subjects)) < 2:
        raise ConfigError(f"task.protocol={task.protocol} splits by subject, but every file reads as "
                          f"subject {subjects[0]!r}: name files with BIDS entities (sub-01_...) or "
                          "give task.subject_pattern (a regex whose first group is the subject)",
                          _inputs(conf)[0])
    splits = _splits(task, labels, groups, subjects, conf.seed)
    if task.test_subjects is not None:
        splits = _only_testing(splits, subjects, [str(s) for s in task.test_subjects])
    embeddings = window_features(model, segments, task.readout) if _frozen_probe(task) else None
    methods = {task.mode: lambda split: _classifier_probs(task, model, segments, labels, embeddings,
                                                              split, conf.seed)}
    if task.baseline:
        for name, predict in decoding_baselines(shared_sensor_array(segments), segments[0].sfreq).items():
            methods[name] = lambda split, p=predict: p(split.train, labels[split.train], split.test)
    out = {"classes": classes, "n_windows": len(segments), "methods": {}}
    lines, predictions = [], []
    for method, predict in methods.items():
        y_all, p_all, per_split = [], [], []
        for split in progress_over(splits, f"{method}: folds"):
            prob = predict(split)
            predictions += [{"method": method, "split": split.name, "subject": subjects[i],
                             "source": Path(segments[i].meta["source"]).name,
                             "onset_s": segments[i].meta["event_onset_s"], "label": classes[labels[i]],
                             **{f"prob_{c}": float(q) for c, q in zip(classes, row, strict=True)}}
                            for i, row in zip(split.test, prob, strict=True)]
            y_all.append(labels[split.test])
            p_all.append(prob)
            per_split.append({"split": split.name, "n_train": int(len(split.train)),
                              "n_test": int(len(split.test)),
                              **{k: v["value"] for k, v in classification_metrics(
                                  labels[split.test], prob, n_boot=1).items()}})
        y, prob = np.concatenate(y_all), np.concatenate(p_all)
        metrics = classification_metrics(y, prob)
        out["methods"][method] = {"metrics": metrics, "splits": per_split}
        lines += [f"### {method}", "", *_metric_rows(per_split), ""]
        if method == task.mode:
            out.update(metrics=metrics, splits=per_split)
            plot_confusion(y, prob.argmax(1), classes, run_dir / "confusion_matrix.png")
        ba = metrics["balanced_accuracy"]
        logger.info("decoding %s by %s (%s): balanced accuracy %.3f [%.3f, %.3f]", classes, method,
                    task.protocol, ba["value"], ba["ci_low"], ba["ci_high"])
    write_text_atomic(run_dir / "results.md", "\n".join(lines), "results table")
    _write_predictions(predictions, run_dir)
    return out


def _prepare_options(conf: FinetuneConfig, window_s: float) -> PrepareOptions:
    """The tokenizer options of a finetune run, as ``neurofm prepare`` would take them."""
    task, extra = conf.task, dict(conf.tokenizer)
    valid = ["sfreq", *MEEG_OPTIONS, *FMRI_OPTIONS]
    check_keywords(extra, valid, "+tokenizer.{}=")
    return PrepareOptions(
        window_s=window_s, fmri_window_s=window_s, sfreq=extra.pop("sfreq", MeegOptions().sfreq),
        atlas=task.atlas, roi_coords=task.roi_coords, roi_tr_s=task.roi_tr_s,
        subject_pattern=task.subject_pattern,
        meeg={k: v for k, v in extra.items() if k in MEEG_OPTIONS},
        fmri={k: v for k, v in extra.items() if k in FMRI_OPTIONS and k not in MEEG_OPTIONS})


def _cohort(conf: FinetuneConfig) -> list:
    """Windows of every recording under ``inputs``, with each subject's phenotype row."""

    task = conf.task
    inputs = _inputs(conf)
    phenotype = task.phenotype
    if phenotype is None:
        roots = [Path(p) for p in inputs if (Path(p) / "participants.tsv").exists()]
        if not roots:
            raise ConfigError("task.phenotype is not set and no input is a BIDS root with "
                              "participants.tsv: pass task.phenotype=<participants.tsv or CSV>")
        phenotype = roots[0] / "participants.tsv"
    extra = [task.group_by] if task.group_by and task.group_by != task.label else []
    try:
        table = read_phenotype(phenotype, label_columns=[task.label, *extra])
    except NeurofmError:
        if not extra:
            raise
        table = read_phenotype(phenotype, label_columns=[task.label])  # group_by is an entity
    options = _prepare_options(conf, task.window_s)
    sources = discover(inputs)
    check_needs(sources, options)
    segments, failed = [], []
    with make_progress() as progress:
        bar = progress.add_task("tokenizing the cohort", total=len(sources))
        for source in sources:
            try:
                segments += tokenize_file(source, options)
            except ConfigError:
                raise
            except NeurofmError as err:
                failed.append(f"{source.path}: {err}")
            progress.advance(bar)
    if failed:
        logger.warning("%d recordings could not be used:\n  %s", len(failed), "\n  ".join(failed[:20]))
    if not segments:
        raise NeurofmError(f"no windows from {inputs}" + (f" ({len(failed)} files failed)" if failed else ""))
    return join_phenotype(segments, table)


def _disorder(conf: FinetuneConfig, model, run_dir: Path, contract: dict | None = None) -> dict:

    task = conf.task
    cohort = _cohort(conf)
    check_segments(contract, cohort, **_modality_check(task))
    segments, labels, classes = subject_labels(cohort, task.label)
    subjects = np.array([str(s.meta.get("subject")) for s in segments])
    groups = _group_values(segments, task.group_by) if task.protocol == "logo" else None
    splits = _splits(task, labels, subjects, subjects, conf.seed, groups)
    embeddings = window_features(model, segments, task.readout) if _frozen_probe(task) else None
    ids = np.unique(subjects)
    y_subject = np.array([labels[subjects == s][0] for s in ids])
    series = subject_series(segments, subjects)[1] if task.baseline else None
    fc = correlation_features(series) if series is not None else None
    # covariances once per cohort, not once per fold
    tangent = TangentSpace(covariances(series, standardize=True)) if series is not None else None
    methods = [task.mode] + (["fc_logistic", "fc_tangent"] if fc is not None else [])
    results = {method: ([], [], []) for method in methods}  # subject labels, probabilities, split rows
    predictions: list[dict] = []
    for split in progress_over(splits, f"{task.mode}{' and FC baselines' if fc is not None else ''}: folds"):
        prob = _classifier_probs(task, model, segments, labels, embeddings, split, conf.seed)
        test_ids, subject_prob = aggregate_subjects(prob, subjects[split.test])
        train_mask, test_mask = np.isin(ids, subjects[split.train]), np.isin(ids, test_ids)
        runs = {task.mode: subject_prob}
        if fc is not None:
            runs["fc_logistic"] = fc_logistic(fc[train_mask], y_subject[train_mask], fc[test_mask], conf.seed)
            f_train, f_test = tangent.features(np.flatnonzero(train_mask), np.flatnonzero(test_mask))
            runs["fc_tangent"] = fc_logistic(f_train, y_subject[train_mask], f_test, conf.seed)
        for method, p in runs.items():
            y = y_subject[test_mask]
            predictions += [{"method": method, "split": split.name, "subject": sid, "label": classes[t],
                             **{f"prob_{c}": float(q) for c, q in zip(classes, row, strict=True)}}
                            for sid, t, row in zip(ids[test_mask], y, p, strict=True)]
            results[method][0].append(y)
            results[method][1].append(p)
            results[method][2].append({
                "split": split.name, "n_train": int(train_mask.sum()), "n_test": int(test_mask.sum()),
                **{k: v["value"] for k, v in classification_metrics(y, p, n_boot=1).items()}})
    out = {"classes": classes, "n_subjects": len(ids), "n_windows": len(segments), "methods": {}}
    lines = []
    for method, (ys, ps, per_split) in results.items():
        y, prob = np.concatenate(ys), np.concatenate(ps)
        metrics = classification_metrics(y, prob)
        out["methods"][method] = {"metrics": metrics, "splits": per_split}
        lines += [f"### {method} (subject level)", "", *_metric_rows(per_split), ""]
        if method == task.mode:
            plot_confusion(y, prob.argmax(1), classes, run_dir / "confusion_matrix.png")
        ba = metrics["balanced_accuracy"]
        logger.info("%s by %s over %d subjects (%s, %s): balanced accuracy %.3f [%.3f, %.3f]",
                    task.label, method, len(ids), task.protocol, classes, ba["value"],
                    ba["ci_low"], ba["ci_high"])
    write_text_atomic(run_dir / "results.md", "\n".join(lines), "results table")
    _write_predictions(predictions, run_dir)
    return out


def _write_predictions(rows: list[dict], run_dir: Path) -> None:
    """``predictions.csv``: one row per test item and method (temp file + rename)."""
    with atomic_write(run_dir / "predictions.csv", "predictions table") as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)


def _group_values(segments: list, column: str | None) -> np.ndarray | None:
    """Each window's group for leave-one-group-out: a phenotype column, else a file entity."""
    if column is None:
        return None
    values = []
    for seg in segments:
        value = (seg.meta.get("phenotype") or {}).get(column, seg.meta.get(column))
        if value is None:
            raise ConfigError(f"task.group_by={column}: subject {seg.meta.get('subject')!r} has no "
                              f"{column!r} in the phenotype table or its file name; name a column "
                              "every subject has (e.g. SITE_ID) or an entity (site, session)",
                              seg.meta.get("source"))
        values.append(str(value))
    return np.array(values)


def _read_features(path: str, source: str) -> tuple[np.ndarray, list[str] | None]:
    if path.endswith(".npy"):
        return np.load(path, allow_pickle=False), None
    if path.endswith((".csv", ".tsv", ".txt")):

        table = pd.read_csv(path, sep=None, engine="python")
        return table.to_numpy(dtype=np.float64), [str(c) for c in table.columns]
    raise NeurofmError(f"stimulus features must be .npy, .csv or .tsv (for {source})", path)


def _encoding(conf: FinetuneConfig, model, run_dir: Path, contract: dict | None = None) -> dict:

    task = conf.task
    inputs = _inputs(conf)
    if len(inputs) != 1:
        raise ConfigError(f"encoding fits one recording (one subject) per run; got {len(inputs)} inputs")
    raw = read_recording(inputs[0])
    if task.features is not None:
        features, names = _read_features(os.fspath(task.features), inputs[0])
    else:
        features, names = event_features(raw, task.events)
    data = encoding_data(raw, features, feature_names=names, features_sfreq=task.features_sfreq,
                         lags_s=tuple(task.lags_s), window_s=task.window_s, **conf.tokenizer)
    check_segments(contract, data.segments, inputs[0], **_modality_check(task))
    splits = time_splits(len(data.segments), task.protocol, task.folds, task.test_fraction)
    truth = data.brain()
    methods = {task.mode: lambda s: predict_encoding(fit_encoding(
        model, data, s.train, mode=task.mode, components=task.components, epochs=task.epochs,
        lr=task.lr, lora_rank=task.lora_rank, seed=conf.seed)[0], data, s.test)}
    if task.baseline:
        methods["ridge_trf"] = lambda s: ridge_trf(data, s.train, s.test)
    seg = data.segments[0]
    names_out = seg.meta.get("ch_names") or seg.meta.get("parcel_labels") or list(range(seg.n_sensors))
    out = {"features": data.feature_names, "n_windows": len(data.segments), "sensors": list(map(str, names_out)),
           "methods": {}}
    lines = ["| method | mean r | median r | max r | sensors with r > 0.1 |", "|---|---:|---:|---:|---:|"]
    for method, fn in methods.items():
        pred = np.zeros_like(truth)
        for split in splits:
            pred[split.test] = fn(split)
        tested = np.concatenate([s.test for s in splits])
        r = per_sensor_r(truth[tested], pred[tested])
        out["methods"][method] = {"pearson_r": r.tolist(), "mean_r": float(r.mean()),
                                  "median_r": float(np.median(r))}
        lines.append(f"| {method} | {r.mean():.3f} | {np.median(r):.3f} | {r.max():.3f} | "
                     f"{int((r > 0.1).sum())}/{len(r)} |")
        plot_sensor_r(seg, r, run_dir / f"pearson_r_{method}.png", title=method)
        logger.info("encoding %s -> %d sensors by %s (%s): Pearson r mean %.3f, median %.3f, max %.3f",
                    data.feature_names, len(r), method, task.protocol, r.mean(), np.median(r), r.max())
    write_text_atomic(run_dir / "results.md", "\n".join(lines) + "\n", "results table")
    return out


def _inputs(conf: FinetuneConfig) -> list[str]:
    inputs = conf.inputs if isinstance(conf.inputs, list) else [conf.inputs]
    return [os.fspath(p) for p in inputs]


TASKS = {"decoding": _decoding, "disorder": _disorder, "encoding": _encoding}


def finetune(conf: FinetuneConfig) -> dict:
    """Run ``conf.task`` with the checkpoint ``conf.ckpt``: its splits, the checkpoint's mode
    and the classical baselines; writes ``metrics.json``, ``results.md``, predictions and
    figures into ``conf.run_dir`` and returns the metrics."""

    task = conf.task
    loaded = load(conf.ckpt)
    # the checkpoint's input contract sets the tokenizer where the command line does not
    sections = ("meeg", "fmri") if task.name == "disorder" else ("meeg",)
    conf.tokenizer = {**{k: v for s in sections for k, v in tokenizer_defaults(loaded.contract, s).items()},
                      **conf.tokenizer}
    run_dir = Path(conf.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with spelled_as(finetune_spelling()):  # errors name options as this command spells them
        result = {"task": asdict(task), **TASKS[task.name](conf, loaded.model, run_dir, loaded.contract)}
    write_text_atomic(run_dir / "metrics.json", json.dumps(result, indent=1), "metrics")
    logger.info("results in %s (metrics.json, results.md, PNG)", run_dir)
    return result
