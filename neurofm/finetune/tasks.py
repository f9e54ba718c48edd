"""The tasks of ``neurofm finetune``: :func:`run_decoding`, :func:`run_encoding` and
:func:`run_disorder` (subject-level classification), each discover -> tokenize -> evaluate ->
write (metrics to JSON, a results table, a PNG), and the windows they tokenize."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd

from neurofm.console import make_progress
from neurofm.datasets import discover, join_phenotype, read_phenotype
from neurofm.datasets.options import FMRI_OPTIONS, MEEG_OPTIONS, PrepareOptions
from neurofm.datasets.tokenize import check_needs, tokenize_file
from neurofm.embedding import NeuroFM
from neurofm.errors import ConfigError, NeurofmError
from neurofm.finetune.baselines import (
    ridge_trf,
)
from neurofm.finetune.config import FinetuneConfig, finetune_spelling
from neurofm.finetune.disorder import subject_labels
from neurofm.finetune.encoding import encoding_data, event_features, fit_encoding, predict_encoding
from neurofm.finetune.evaluate import evaluate
from neurofm.finetune.metrics import per_sensor_r
from neurofm.finetune.plots import plot_sensor_r
from neurofm.finetune.protocols import time_splits
from neurofm.io import write_text_atomic
from neurofm.models.contract import InputContract, check_segments, tokenizer_defaults
from neurofm.models.io import load_pretrained
from neurofm.options import check_keywords, option_name, spelled_as
from neurofm.tokenizers import read_recording, tokenize_events
from neurofm.tokenizers.naming import entities_from_name
from neurofm.tokenizers.options import MeegOptions

logger = logging.getLogger("neurofm.finetune")



def _modality_check(task) -> dict:
    """How :func:`check_segments` treats a modality the checkpoint was not pretrained on."""
    return {"other_modalities": task.cross_modal,
            "hint": f" (to transfer across modalities anyway: {option_name('task.cross_modal')}=true)"}


def decoding_windows(paths, event_id, tmin_s: float, tmax_s: float, *, options: MeegOptions | None = None,
                     subject_pattern: str | None = None, by_subject: bool = True) -> list:
    """The event-locked windows ``neurofm finetune task=decoding`` cuts from ``paths``
    (``meta['label']``, ``meta['subject']``), the subject read from each file name
    (``subject_pattern``: a regex whose first group is it); ``by_subject``: a file whose
    subject cannot be read is an error (its whole stem would count as one subject)."""
    segments = []
    for path in map(os.fspath, paths):
        entities = entities_from_name(path, subject_pattern, stem_fallback=not by_subject)
        if "subject" not in entities:
            raise ConfigError("the protocol splits by subject, but no subject can be read from this file name "
                              "(its whole stem would count as one subject, so two runs of one person would leak "
                              "across folds): name files with BIDS entities (sub-01_task-x_eeg.edf) or give "
                              "task.subject_pattern (a regex whose first group is the subject)", path)
        segments += list(tokenize_events(path, event_id=event_id, tmin=tmin_s, tmax=tmax_s, entities=entities,
                                         options=options))
    if not segments:
        raise NeurofmError("no event-locked windows: check task.event_id and the recordings' events")
    subjects = {str(s.meta.get("subject")) for s in segments}
    if by_subject and len(subjects) < 2:
        raise ConfigError(f"the protocol splits by subject, but every file reads as subject {subjects.pop()!r}: "
                          "name files with BIDS entities (sub-01_...) or give task.subject_pattern (a regex "
                          "whose first group is the subject)", os.fspath(paths[0]))
    return segments


def event_groups(segments: list) -> list[str]:
    """One group per event (its file and onset): the windows ``kfold`` keeps in one fold."""
    return [f"{s.meta['source']}@{s.meta['event_onset_s']:.3f}" for s in segments]


def run_decoding(conf: FinetuneConfig, model, run_dir: Path, contract: dict | None = None) -> dict:
    task = conf.task
    segments = decoding_windows(_inputs(conf), task.event_id, task.tmin_s, task.tmax_s,
                                options=MeegOptions.of(conf.tokenizer, "+tokenizer.{}="),
                                subject_pattern=task.subject_pattern,
                                by_subject=task.protocol in ("kfold_subject", "loso"))
    check_segments(contract, segments, **_modality_check(task))
    evaluation = evaluate(model, segments, [s.meta["label"] for s in segments], event_groups(segments),
                          protocol=task.protocol, test_subjects=task.test_subjects, **_task_options(task),
                          seed=conf.seed)
    evaluation.write(run_dir)
    return evaluation.summary()


def _task_options(task) -> dict:
    """The model's mode and training, and the baselines, as the task sets them."""
    few_shot = {"shots": task.shots, "repeats": task.repeats} if hasattr(task, "shots") else {}
    return {"mode": task.mode, "readout": task.readout, "baselines": task.baseline, "folds": task.folds,
            "epochs": task.epochs, "lr": task.lr, "layer_decay": task.layer_decay, "lora_rank": task.lora_rank,
            "other_modalities": getattr(task, "cross_modal", False), **few_shot}


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


def cohort_windows(inputs, options: PrepareOptions, *, label: str, phenotype=None,
                   group_by: str | None = None) -> list:
    """The windows ``neurofm finetune task=disorder`` reads: every recording under ``inputs``
    (BIDS roots, folders, globs, ROI tables) tokenized with ``options``, each joined to its
    subject's row of ``phenotype`` (default: a BIDS root's ``participants.tsv``), which must
    hold ``label`` (and ``group_by`` where it is a column). :func:`subject_classes` then keeps
    the labelled ones."""
    inputs = [os.fspath(p) for p in inputs]
    if phenotype is None:
        roots = [Path(p) for p in inputs if (Path(p) / "participants.tsv").exists()]
        if not roots:
            raise ConfigError("task.phenotype is not set and no input is a BIDS root with "
                              "participants.tsv: pass task.phenotype=<participants.tsv or CSV>")
        phenotype = roots[0] / "participants.tsv"
    extra = [group_by] if group_by and group_by != label else []
    try:
        table = read_phenotype(phenotype, label_columns=[label, *extra])
    except NeurofmError:
        if not extra:
            raise
        table = read_phenotype(phenotype, label_columns=[label])  # group_by is an entity
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


def subject_classes(cohort: list, label: str, group_by: str | None = None
                    ) -> tuple[list, list[str], np.ndarray | None]:
    """The windows of ``cohort`` (:func:`cohort_windows`) whose subject has a ``label``, each
    window's class name, and (``group_by``: a phenotype column or file entity, e.g.
    ``SITE_ID``) each window's group."""
    segments, labels, classes = subject_labels(cohort, label)
    groups = _group_values(segments, group_by) if group_by else None
    return segments, [classes[i] for i in labels], groups


def run_disorder(conf: FinetuneConfig, model, run_dir: Path, contract: dict | None = None) -> dict:
    task = conf.task
    group_by = task.group_by if task.protocol == "logo" else None
    cohort = cohort_windows(_inputs(conf), _prepare_options(conf, task.window_s), label=task.label,
                            phenotype=task.phenotype, group_by=task.group_by)
    check_segments(contract, cohort, **_modality_check(task))
    segments, labels, groups = subject_classes(cohort, task.label, group_by)
    evaluation = evaluate(model, segments, labels, level="subject", protocol=task.protocol, group_values=groups,
                          **_task_options(task), seed=conf.seed)
    evaluation.write(run_dir)
    return evaluation.summary()


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


def run_encoding(conf: FinetuneConfig, model, run_dir: Path, contract: dict | None = None) -> dict:

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


TASKS = {"decoding": run_decoding, "disorder": run_disorder, "encoding": run_encoding}


def finetune(conf: FinetuneConfig) -> dict:
    """Run ``conf.task`` with the checkpoint ``conf.ckpt``: its splits, the checkpoint's mode
    and the classical baselines; writes ``metrics.json``, ``results.md``, predictions and
    figures into ``conf.run_dir`` and returns the metrics."""

    task = conf.task
    info: dict = {}
    # the encoder; the encoding task's head is the pretraining decoder, so it loads that too
    model = load_pretrained(conf.ckpt, info=info, head=task.name == "encoding")
    if task.name != "encoding":  # the encoder with its input contract
        model = NeuroFM(model, source=os.fspath(conf.ckpt), info=info)
    contract = InputContract(info["input_contract"], conf.ckpt) if info.get("input_contract") else None
    # the checkpoint's input contract sets the tokenizer where the command line does not (a
    # copy: the caller's config is left as it was)
    sections = ("meeg", "fmri") if task.name == "disorder" else ("meeg",)
    defaults = {k: v for s in sections for k, v in tokenizer_defaults(contract, s).items()}
    conf = replace(conf, tokenizer={**defaults, **conf.tokenizer})
    run_dir = Path(conf.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with spelled_as(finetune_spelling()):  # errors name options as this command spells them
        result = {"task": asdict(task), **TASKS[task.name](conf, model, run_dir, contract)}
    write_text_atomic(run_dir / "metrics.json", json.dumps(result, indent=1), "metrics")
    logger.info("results in %s (metrics.json, results.md, PNG)", run_dir)
    return result
