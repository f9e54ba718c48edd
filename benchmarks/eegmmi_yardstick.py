"""EEGMMI yardstick: neurofm against MOABB's standard pipelines and braindecode's networks on
10 subjects, every learned model under one training rule, pretraining against the same mode
on random weights.

Data: the imagery runs (R04, R08, R12) of the 10 subjects in ``../shared/data/meeg/eegmmidb``,
left vs right fist (``T1``/``T2``), windows [0.5, 2.5] s after the cue as ``neurofm finetune
task=decoding`` cuts them (``tokenize_events``: 64 channels at 200 Hz, robust-scaled).

Protocol: subject-wise 5-fold, repeated with 3 partitions (``--repeats``; repeat r also seeds
every model). In each fold, 2 subjects are tested; of the 8 others, 2 (drawn per fold) are the
**validation** subjects and 6 train. Every method fits on the 6 training subjects only:

- every learned model (neurofm's trained modes and scratch, braindecode's EEGNet and
  ShallowFBCSPNet) trains under :data:`RULE`: AdamW (lr 1e-3, weight decay 0.05), batches of
  32, 5 warmup epochs then a cosine to 0 at 100 epochs, early stopping on the validation
  subjects' loss (patience 15 epochs, the best epoch's weights kept); its validation curve is
  kept;
- the classical pipelines (MOABB's CSP + LDA, tangent space + LR and filter-bank tangent
  space + LR, ERP + shrinkage LDA: :mod:`neurofm.finetune.baselines`) and neurofm's frozen
  probes (logistic regression) have nothing to stop;
- every method is also scored on the validation subjects, so that a choice among methods
  (``neurofm_selected``: per fold, the neurofm method with the best validation balanced
  accuracy) is made without the test subjects.

neurofm (``--parts neurofm``): per fold and repeat, a ``tiny`` encoder (``--stem``) is
initialised from the repeat's seed (the **random** weights) and a copy is pretrained
(``--steps``, the package's recipe in its Lightning loop) on every run of the 8 non-test
subjects (execution and imagery, 4 s windows, no labels) plus every unlabelled device EEG file
of the data folder: no test subject's EEG reaches pretraining. Modes, each on the pretrained and
on the random weights (the matched control): frozen probes (``--probe-readouts``), and trained
heads (``--modes``: lora, finetune, linear_probe = the head alone) reading ``--head``; and
scratch (random weights, one learning rate). ``--parts ablation`` runs the frozen and learned
probes for every ``--stems`` x ``--readouts`` instead (stem x readout ablation).

``--parts peers_own``: ShallowFBCSPNet under the optimiser settings braindecode and MOABB give
for it (:data:`SHALLOW_OWN`), the rule's schedule and early stopping otherwise.

Corpus-size curve (``--parts corpus``): per fold, copies of the same random encoder pretrained
for ``--steps`` on the device files alone and with the runs of 2, 4 and 8 non-test subjects
(``--corpus-subjects``; the subjects join in an order drawn from the repeat, so the corpora are
nested); the frozen probes and their label-efficiency and calibration variants on each, against
the random weights. Model size (``--size small --match-wallclock tiny``): the pretraining steps
are scaled so that ``--size`` pretrains for the wall-clock of ``tiny``'s ``--steps``, from both
sizes' seconds per step measured on this machine once (kept in ``--work``, recorded in the JSON).

Statistics: balanced accuracy per subject (mean over repeats), paired over the 10 subjects:
mean difference with its 95 % t-interval, bootstrap CI and Wilcoxon p; pooled balanced accuracy
per repeat (mean ± sd). Each fold's predictions are kept in ``--work`` (a run can be split by
``--parts`` and summarised together). Writes ``<out>/<name>.json`` and ``<name>.png``
(methods, paired differences, validation curves).

usage: PYTHONPATH=.peers python benchmarks/eegmmi_yardstick.py --parts classical peers neurofm
       [--repeats 3] [--steps 400] [--stem linear] [--work DIR] [--name eegmmi_yardstick]
       python benchmarks/eegmmi_yardstick.py --parts corpus --stem conv --repeats 1
       python benchmarks/eegmmi_yardstick.py --parts neurofm --size small --match-wallclock tiny --modes
           --no-scratch --stem conv --repeats 1
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import time
from dataclasses import asdict, replace
from pathlib import Path

import mne
import numpy as np
import pandas as pd
import torch
from _common import (
    data_dir,
    method_panel,
    paired_differences,
    paired_panel,
    pretrain_steps,
    seeded_summary,
)
from matplotlib.figure import Figure
from pretrain_scaling import random_batches
from recipe_ablation import extra_corpus
from sklearn.metrics import balanced_accuracy_score
from torch import nn
from tqdm.auto import tqdm

from neurofm.embedding import as_neurofm
from neurofm.finetune.baselines import decoding_baselines, shared_sensor_array
from neurofm.finetune.classifier import finetune_classifier, linear_probe
from neurofm.finetune.loops import TrainingRule, train_epochs
from neurofm.io import write_text_atomic
from neurofm.models.config import ModelConfig
from neurofm.models.mae import MaskedAutoencoder
from neurofm.readouts import LEARNED
from neurofm.tokenizers import tokenize_events, tokenize_raw

SUBJECTS = tuple(f"S{i:03d}" for i in range(1, 11))
IMAGERY, EXECUTION = ("R04", "R08", "R12"), ("R03", "R07", "R11")
RULE = TrainingRule(max_epochs=100, patience=15, lr=1e-3, weight_decay=0.05, batch_size=32, warmup_epochs=5)
CLASSICAL = ("csp_lda", "tangent_lr", "fb_tangent_lr", "erp_lda")
PEERS = ("EEGNet", "ShallowFBCSPNet", "ShallowFBCSPNet_own")
# ShallowFBCSPNet under the optimiser settings braindecode and MOABB give for it (lr 0.0625 * 0.01,
# no weight decay, batches of 64), the rule's schedule and early stopping otherwise: a check that
# the shared rule does not hold it back (``--parts peers_own``)
SHALLOW_OWN = dict(lr=0.0625 * 0.01, weight_decay=0.0, batch_size=64)
LABELS = {"csp_lda": "CSP + LDA (MOABB)", "tangent_lr": "tangent space + LR (MOABB)",
          "fb_tangent_lr": "filter-bank tangent space + LR", "erp_lda": "ERP + shrinkage LDA",
          "EEGNet": "EEGNet (braindecode)", "ShallowFBCSPNet": "ShallowFBCSPNet (braindecode)",
          "ShallowFBCSPNet_own": "ShallowFBCSPNet, braindecode's lr and batch",
          "neurofm_selected": "neurofm, chosen on validation",
          "neurofm_selected_pretrained": "neurofm pretrained, chosen on validation",
          "neurofm_selected_random": "neurofm random weights, chosen on validation"}


# ----------------------------------------------------------------------------- data, folds

def labelled_windows(root: Path) -> tuple[list, np.ndarray, np.ndarray]:
    """Every subject's imagery windows, labels (1 = right fist) and subject."""
    segments, labels, subjects = [], [], []
    for s in SUBJECTS:
        for run in IMAGERY:
            found = tokenize_events(root / s / f"{s}{run}.edf", event_id=["T1", "T2"], tmin=0.5, tmax=2.5)
            segments += found
            labels += [w.meta["label"] == "T2" for w in found]
            subjects += [s] * len(found)
    return segments, np.array(labels, dtype=int), np.array(subjects)


def folds(repeat: int, k: int = 5, n_val: int = 2) -> list[dict]:
    """Subject-wise ``k`` folds of a partition drawn from ``repeat``; in each, ``n_val`` of the
    non-test subjects (drawn too) validate and the others train."""
    rng = np.random.default_rng(1000 + repeat)
    order = [str(s) for s in rng.permutation(SUBJECTS)]
    out = []
    for i, test in enumerate(np.array_split(order, k)):
        rest = [s for s in order if s not in test]
        val = [str(s) for s in rng.choice(rest, n_val, replace=False)]
        out.append({"name": f"repeat{repeat}_fold{i}", "repeat": repeat, "test": sorted(test), "val": sorted(val),
                    "train": sorted(set(rest) - set(val))})
    return out


def indices(subjects: np.ndarray, fold: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return tuple(np.flatnonzero(np.isin(subjects, fold[part])) for part in ("train", "val", "test"))


# ----------------------------------------------------------------------------- methods

def classical(baselines: dict, y: np.ndarray, subjects: np.ndarray, fold: dict) -> dict:
    """Each classical pipeline (:func:`decoding_baselines`) fitted on the training subjects:
    probabilities of the validation and test windows."""
    train, val, test = indices(subjects, fold)
    both = np.concatenate([val, test])
    out = {}
    for name, predict in baselines.items():
        t0 = time.perf_counter()
        out[name] = {"probs": predict(train, y[train], both), "seconds": time.perf_counter() - t0}
    return out


def train_peer(name: str, x: np.ndarray, y: np.ndarray, subjects: np.ndarray, fold: dict, sfreq: float,
               seed: int, rule: TrainingRule | None = None) -> dict:
    """braindecode's ``name`` from seed ``seed`` under ``rule`` (default :data:`RULE`)."""
    import braindecode.models as models

    rule = rule or RULE
    train, val, test = indices(subjects, fold)
    torch.manual_seed(seed)
    model = getattr(models, name)(n_chans=x.shape[1], n_outputs=2, n_times=x.shape[2], sfreq=sfreq)
    xt, yt = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.long)
    optimizer = torch.optim.AdamW(model.parameters(), lr=rule.lr, weight_decay=rule.weight_decay)
    batches = lambda rng: np.array_split(p := rng.permutation(train), max(1, -(-len(p) // rule.batch_size)))  # noqa: E731
    curve: list[dict] = []
    t0 = time.perf_counter()
    train_epochs(model, lambda idx: nn.functional.cross_entropy(model(xt[idx]), yt[idx]), batches, optimizer,
                 epochs=rule.max_epochs, seed=seed,
                 validation_error=lambda: nn.functional.cross_entropy(model(xt[val]), yt[val]).item(),
                 patience=rule.patience, warmup_epochs=rule.warmup_epochs, curve=curve)
    with torch.no_grad():
        probs = model(xt[np.concatenate([val, test])]).softmax(-1).numpy()
    return {name: {"probs": probs, "curve": curve, "seconds": time.perf_counter() - t0,
                   "parameters": sum(p.numel() for p in model.parameters())}}


def pretrain_copy(random: MaskedAutoencoder, corpus: list, steps: int, seed: int, lr: float) -> MaskedAutoencoder:
    """A copy of ``random`` pretrained for ``steps`` on random batches of 16 from ``corpus``."""
    if steps == 0:
        return copy.deepcopy(random)
    torch.manual_seed(seed)
    model = copy.deepcopy(random)
    batches = random_batches(corpus, 16, np.random.default_rng(seed))
    return pretrain_steps(random.config, batches, steps, lr, model=model, warmup_steps=max(1, steps // 20))


def frozen_features(weights: dict, segments: list, readouts: list[str]) -> dict:
    """Each encoder's frozen features per readout, ``(tag, readout) -> [N, F]``: computed once
    per fold, read by every probe of :func:`probes` and :func:`label_curves`."""
    return {(tag, readout): as_neurofm(encoder).embed(segments, readout=readout).windows
            for tag, encoder in weights.items() for readout in readouts}


def probes(weights: dict, features: dict, segments: list, y: np.ndarray, subjects: np.ndarray, fold: dict,
           seed: int, frozen: list[str], learned: list[str], prefix: str = "") -> dict:
    """Frozen-feature probes (logistic regression on ``features``, :func:`frozen_features`) and
    learned-readout heads (the head alone under :data:`RULE`) on each of ``weights`` (name ->
    encoder)."""
    train, val, test = indices(subjects, fold)
    both = np.concatenate([val, test])
    out = {}
    for tag, encoder in weights.items():
        for readout in frozen:
            t0 = time.perf_counter()
            feats = features[tag, readout]
            out[f"{prefix}{tag}_probe_{readout}"] = {
                "probs": linear_probe(feats[train], y[train], feats[both], seed), "seconds": time.perf_counter() - t0}
        for readout in learned:
            out.update(trained(encoder, "linear_probe", readout, f"{prefix}{tag}_head_{readout}", segments, y,
                               subjects, fold, seed))
    return out


def label_curves(features: dict, segments: list, y: np.ndarray, subjects: np.ndarray, fold: dict, seed: int,
                 readout: str, fractions: list[float], shots: list[int]) -> dict:
    """The frozen probe (on ``features``, :func:`frozen_features`) with fewer labels, per encoder:

    - ``_labels<P>``: fitted on a random ``P`` % of the training subjects' windows (stratified);
    - ``_calib<k>``: within-subject calibration, fitted on the first ``k`` trials per class of
      each test subject (in time order over its imagery runs R04 then R08) alone, tested on its
      last imagery run (R12). A run holds about 7 trials per class, so k reaches into R08.
    """
    train, val, test = indices(subjects, fold)
    both = np.concatenate([val, test])
    last_run = np.array([Path(w.meta["source"]).stem.endswith("R12") for w in segments])
    out = {}
    for tag in dict.fromkeys(tag for tag, _ in features):
        feats = features[tag, readout]
        rng = np.random.default_rng(seed)
        for fraction in fractions:
            keep = np.concatenate([rng.choice(train[y[train] == c], max(2, round(fraction * (y[train] == c).sum())),
                                              replace=False) for c in (0, 1)])
            out[f"{tag}_probe_{readout}_labels{round(100 * fraction)}"] = {
                "probs": linear_probe(feats[keep], y[keep], feats[both], seed), "seconds": 0.0}
        for k in shots:
            probs, index = [], []
            for subject in fold["test"]:
                own = subjects == subject
                calib = np.concatenate([np.flatnonzero(own & ~last_run & (y == c))[:k] for c in (0, 1)])
                rest = np.flatnonzero(own & last_run)
                probs.append(linear_probe(feats[calib], y[calib], feats[rest], seed))
                index.append(rest)
            out[f"{tag}_probe_{readout}_calib{k}"] = {"probs": np.concatenate(probs), "index": np.concatenate(index),
                                                      "seconds": 0.0}
    return out


def trained(encoder, mode: str, readout: str, name: str, segments: list, y: np.ndarray, subjects: np.ndarray,
            fold: dict, seed: int, config=None) -> dict:
    train, val, test = indices(subjects, fold)
    curve: list[dict] = []
    t0 = time.perf_counter()
    probs, losses = finetune_classifier(encoder, segments, y, train, np.concatenate([val, test]), mode=mode,
                                        config=config, readout=readout, seed=seed, validation=val, rule=RULE,
                                        curve=curve)
    return {name: {"probs": probs, "curve": curve, "seconds": time.perf_counter() - t0, "steps": len(losses)}}


# ----------------------------------------------------------------------------- corpus

def corpus_windows(root: Path) -> tuple[dict, list]:
    """4 s windows of every run of every subject (imagery and execution; no labels), and of
    every unlabelled device EEG recording of the data folder."""
    by_subject = {s: [w for run in sorted(IMAGERY + EXECUTION) for w in tokenize_raw(root / s / f"{s}{run}.edf",
                                                                                       window_s=4.0)]
                  for s in SUBJECTS}
    return by_subject, extra_corpus(root.parent)


def corpus_curve(fold: dict, data: dict, args) -> dict:
    """The frozen probes (full labels, fewer labels, calibration) on copies of one random
    encoder pretrained on nested corpora: the device files plus the runs of the first ``n`` of
    the non-test subjects, for each ``n`` of ``--corpus-subjects``."""
    seed = fold["repeat"]
    segments, y, subjects = data["segments"], data["y"], data["subjects"]
    joining = [str(s) for s in np.random.default_rng(2000 + seed).permutation(SUBJECTS) if s not in fold["test"]]
    config = ModelConfig.named(args.size, stem=args.stem)
    torch.manual_seed(seed)
    random = MaskedAutoencoder(config)
    weights, windows = {"random": random}, {"random": 0}
    for n in args.corpus_subjects:
        corpus = [w for s in joining[:n] for w in data["corpus"][s]] + data["extra"]
        weights[f"pretrained{n}"], windows[f"pretrained{n}"] = pretrain_copy(random, corpus, args.steps, seed, args.lr), len(corpus)
    features = frozen_features(weights, segments, args.probe_readouts)
    out = probes(weights, features, segments, y, subjects, fold, seed, args.probe_readouts, [])
    out.update(label_curves(features, segments, y, subjects, fold, seed, args.probe_readouts[0], args.fractions,
                            args.shots))
    return {name: {**found, "corpus_windows": windows[name.split("_")[0]]} for name, found in out.items()}


def missing_corpora(kept: dict, args) -> list[int]:
    """The ``--corpus-subjects`` that a fold's saved curve (``kept``) has no probe for."""
    have = {int(m.split("_")[0].removeprefix("pretrained")) for m in kept if m.startswith("pretrained")}
    return [n for n in args.corpus_subjects if n not in have]


def seconds_per_step(size: str, stem: str, corpus: list, lr: float, steps: int) -> float:
    """Seconds per pretraining step of ``size`` on ``corpus`` here: ``steps`` more steps after
    a few, so that the loop's setup drops out."""
    config = ModelConfig.named(size, stem=stem)
    timed = []
    for n in (3, 3 + steps):
        torch.manual_seed(0)
        t0 = time.perf_counter()
        pretrain_copy(MaskedAutoencoder(config), corpus, n, 0, lr)
        timed.append(time.perf_counter() - t0)
    return (timed[1] - timed[0]) / steps


def matched_steps(data: dict, args) -> dict | None:
    """``--size``'s pretraining steps at ``--match-wallclock``'s wall-clock for ``--steps``:
    measured once and kept in ``--work`` beside the folds, so that later repeats and summaries
    use it too (None in a summary before any measurement)."""
    kept = args.work / f"wallclock_{args.size}_{args.stem}_{args.match_wallclock}{args.steps}.json"
    if kept.exists():
        found = json.loads(kept.read_text())
        print(f"{args.size}: {found['steps']} steps at {args.match_wallclock}'s wall-clock (measured before, {kept})")
        return found
    if "corpus" not in data:
        return None
    corpus = [w for s in SUBJECTS[:2] for w in data["corpus"][s]]
    reference = seconds_per_step(args.match_wallclock, args.stem, corpus, args.lr, 60)
    own = seconds_per_step(args.size, args.stem, corpus, args.lr, 6)
    steps = max(1, round(args.steps * reference / own))
    print(f"{args.match_wallclock}: {reference:.3f} s/step, {args.size}: {own:.3f} s/step -> {steps} steps "
          f"({args.steps} x {reference:.3f} s = {args.steps * reference:.0f} s)", flush=True)
    found = {"reference": args.match_wallclock, "reference_steps": args.steps, "reference_seconds_per_step": reference,
             "seconds_per_step": own, "steps": steps}
    write_text_atomic(kept, json.dumps(found, indent=1))
    return found


# ----------------------------------------------------------------------------- runner

def run_fold(part: str, fold: dict, data: dict, args) -> dict:
    seed = fold["repeat"]
    segments, y, subjects = data["segments"], data["y"], data["subjects"]
    if part == "classical":
        return classical(data["baselines"], y, subjects, fold)
    if part == "peers":
        out = {}
        for name in PEERS:
            out.update(train_peer(name, data["x"], y, subjects, fold, data["sfreq"], seed))
        return out
    if part == "peers_own":
        found = train_peer("ShallowFBCSPNet", data["x"], y, subjects, fold, data["sfreq"], seed,
                           replace(RULE, **SHALLOW_OWN))
        return {"ShallowFBCSPNet_own": found["ShallowFBCSPNet"]}
    if part == "corpus":
        return corpus_curve(fold, data, args)
    corpus = [w for s in SUBJECTS if s not in fold["test"] for w in data["corpus"][s]] + data["extra"]
    out = {}
    stems = args.stems if part == "ablation" else [args.stem]
    for stem in stems:
        config = ModelConfig.named(args.size, stem=stem)
        torch.manual_seed(seed)
        random = MaskedAutoencoder(config)
        steps = args.wallclock["steps"] if args.wallclock else args.steps
        weights = {"pretrained": pretrain_copy(random, corpus, steps, seed, args.lr), "random": random}
        if part == "ablation":
            frozen = [r for r in args.readouts if r not in LEARNED]
            out.update(probes(weights, frozen_features(weights, segments, frozen), segments, y, subjects, fold,
                              seed, frozen, [r for r in args.readouts if r in LEARNED], prefix=f"{stem}_"))
            continue
        features = frozen_features(weights, segments, args.probe_readouts)
        out.update(probes(weights, features, segments, y, subjects, fold, seed, args.probe_readouts, []))
        if args.fractions or args.shots:
            out.update(label_curves(features, segments, y, subjects, fold, seed, args.probe_readouts[0],
                                    args.fractions, args.shots))
        for mode in args.modes:
            for tag, encoder in weights.items():
                out.update(trained(encoder, mode, args.head, f"{tag}_{mode}_{args.head}", segments, y, subjects,
                                   fold, seed))
        if args.scratch:
            out.update(trained(None, "scratch", args.head, f"scratch_{args.head}", segments, y, subjects, fold, seed,
                               config=config))
    return out


def saved_path(work: Path, part: str, fold: dict, args) -> Path:
    size = "" if args.size == "tiny" else f"_{args.size}"
    budget = f"{args.match_wallclock}{args.steps}" if args.match_wallclock else f"{args.steps}"
    tag = {"neurofm": f"{size}_{args.stem}_{budget}", "ablation": f"_{'-'.join(args.stems)}_{args.steps}",
           "corpus": f"{size}_{args.stem}_{args.steps}"}.get(part, "")
    return work / f"{part}{tag}_{fold['name']}.json"


def collect(work: Path, args, data: dict) -> tuple[pd.DataFrame, dict, dict]:
    """Every saved fold of the run's parts: prediction rows (test and validation subjects), the
    validation curves and the seconds per method."""
    rows, curves, seconds = [], {}, {}
    y, subjects = data["y"], data["subjects"]
    for part in args.summarise:
        for repeat in range(args.repeats):
            saved = [saved_path(work, part, fold, args).exists() for fold in folds(repeat)]
            if not all(saved):  # a repeat enters the statistics whole or not at all
                if any(saved):
                    print(f"{part}: repeat {repeat} has {sum(saved)} of {len(saved)} folds saved; left out")
                continue
            for fold in folds(repeat):
                path = saved_path(work, part, fold, args)
                _, val, test = indices(subjects, fold)
                both = np.concatenate([val, test])
                for method, found in json.loads(path.read_text()).items():
                    probs = np.asarray(found["probs"])
                    index = np.asarray(found["index"]) if "index" in found else both  # calibration: test runs only
                    split = ["test"] * len(index) if "index" in found else ["val"] * len(val) + ["test"] * len(test)
                    rows.append(pd.DataFrame({"method": method, "seed": repeat, "fold": fold["name"],
                                              "subject": subjects[index], "split": split,
                                              "label": np.where(y[index] == 1, "T2", "T1"),
                                              "prob_T1": probs[:, 0], "prob_T2": probs[:, 1],
                                              "corpus_windows": found.get("corpus_windows", np.nan)}))
                    if found.get("curve"):
                        curves.setdefault(method, []).append(found["curve"])
                    seconds.setdefault(method, []).append(found["seconds"])
    return pd.concat(rows, ignore_index=True), curves, seconds


def versus_rows(rows: pd.DataFrame, args, data: dict) -> pd.DataFrame:
    """``--versus-size``'s neurofm rows (its ``--steps``, no wall-clock matching) on the repeats
    that ``rows`` hold, each method prefixed with that size."""
    other = argparse.Namespace(**{**vars(args), "size": args.versus_size, "match_wallclock": None,
                                  "summarise": ["neurofm"]})
    found, _, _ = collect(args.work, other, data)
    found = found[found["seed"].isin(rows["seed"].unique())]
    return found.assign(method=args.versus_size + "_" + found["method"])


def selected(rows: pd.DataFrame, candidates: list[str], name: str) -> pd.DataFrame:
    """Per fold, the test rows of the candidate with the best validation balanced accuracy."""
    picks = []
    for _, part in rows[rows["method"].isin(candidates)].groupby("fold"):
        val = part[part["split"] == "val"]
        score = {m: balanced_accuracy_score(g["label"] == "T2", g["prob_T2"] > 0.5) for m, g in val.groupby("method")}
        best = max(sorted(score), key=score.get)
        picks.append(part[(part["method"] == best) & (part["split"] == "test")].assign(method=name, chosen=best))
    return pd.concat(picks, ignore_index=True)


def validation_scores(rows: pd.DataFrame) -> dict:
    """Per method, the balanced accuracy on the validation subjects pooled over a repeat's
    folds, mean over repeats: what choices are made on."""
    val = rows[rows["split"] == "val"]
    return {m: float(np.mean([balanced_accuracy_score(g["label"] == "T2", g["prob_T2"] > 0.5)
                              for _, g in part.groupby("seed")])) for m, part in val.groupby("method")}


def summarise(rows: pd.DataFrame, neurofm_methods: list[str], args) -> dict:
    """Test metrics per method and the paired differences; the choices made on validation:
    per fold, the best neurofm method (``neurofm_selected``) and the best pretrained and random
    one (``neurofm_selected_pretrained`` / ``_random``, paired as a matched control)."""
    test = rows[rows["split"] == "test"]
    groups = {"neurofm_selected": neurofm_methods,
              "neurofm_selected_pretrained": [m for m in neurofm_methods if "pretrained" in m],
              "neurofm_selected_random": [m for m in neurofm_methods if "random" in m]}
    extra = {name: selected(rows, candidates, name) for name, candidates in groups.items() if candidates}
    chosen = {name: part.groupby("fold")["chosen"].first().value_counts().to_dict() for name, part in extra.items()}
    test = pd.concat([test, *extra.values()], ignore_index=True)
    # bootstrap CIs of the pooled scores for the first repeat only (the figure's); the claims rest
    # on the paired differences over subjects
    methods = seeded_summary(test.drop(columns=["chosen"], errors="ignore"), positive="T2", group="subject",
                             n_boot=300)
    pairs = [(m, m.replace("pretrained", "random")) for m in methods
             if "pretrained" in m and m.replace("pretrained", "random") in methods]
    for reference in ("tangent_lr", "fb_tangent_lr", "csp_lda", "erp_lda", "EEGNet", "ShallowFBCSPNet",
                      "ShallowFBCSPNet_own"):
        pairs += [(m, reference) for m in ("neurofm_selected",) if m in methods]
    if args.versus_size:  # the same method of the other size, on the same folds
        pairs += [(m, f"{args.versus_size}_{m}") for m in methods if f"{args.versus_size}_{m}" in methods]
    return {"methods": methods, "paired": paired_differences(methods, pairs, "subject"),
            "chosen_on_validation": chosen, "validation_balanced_accuracy": validation_scores(rows)}


def plot(result: dict, curves: dict, path: Path) -> None:
    methods = dict(sorted(result["methods"].items(), key=lambda kv: -kv[1]["over_seeds"]["balanced_accuracy"]["mean"]))
    fig = Figure(figsize=(18, 0.35 * len(methods) + 2.5), layout="constrained")
    left, mid, right = fig.subplots(1, 3)
    method_panel(left, methods, LABELS, "per_subject", fontsize=7)
    left.set_xlabel("balanced accuracy (repeat 0, 95 % CI; dots: subjects)")
    left.set_title("EEGMMI imagery, 10 subjects, subject-wise 5-fold")
    paired_panel(mid, result["paired"], LABELS, fontsize=7)
    mid.set_title("paired over subjects (bootstrap 95 % CI)")
    for k, (method, runs) in enumerate(sorted(curves.items())):
        longest = max(len(c) for c in runs)
        grid = np.full((len(runs), longest), np.nan)
        for i, c in enumerate(runs):
            grid[i, : len(c)] = [e["val_loss"] for e in c]
        running = np.isfinite(grid).sum(0) >= len(runs) / 2  # drawn while half the folds still train
        right.plot(np.arange(1, longest + 1)[running], np.nanmedian(grid, 0)[running],
                   label=LABELS.get(method, method), color=f"C{k % 10}", ls="-" if k < 10 else "--")
    right.set_xlabel("epoch")
    right.set_ylabel("validation loss (median over the folds still training)")
    right.axhline(np.log(2), color="grey", lw=0.8, ls=":")
    right.set_title("validation curves under the one rule (dotted: chance)")
    right.legend(fontsize=6)
    fig.savefig(path, dpi=110)


def report_corpus(rows: pd.DataFrame, args, start: float) -> None:
    """The corpus-size curve: each probe pretrained on each corpus against the same probe on
    the random weights, paired over subjects; JSON and figure."""
    methods = seeded_summary(rows[rows["split"] == "test"], positive="T2", group="subject", n_boot=300)
    pairs = [(m, re.sub(r"^pretrained\d+", "random", m)) for m in methods if m.startswith("pretrained")]
    paired = paired_differences(methods, pairs, "subject")
    per_fold = rows.groupby([rows["method"].str.split("_").str[0], "fold"])["corpus_windows"].first()
    hours = {corpus: float(n.median()) * 4.0 / 3600 for corpus, n in per_fold.groupby(level=0)}
    minutes = (time.perf_counter() - start) / 60
    out = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
           "folds": [f for r in range(args.repeats) for f in folds(r)], "corpus_hours": hours,
           "methods": methods, "paired": paired}
    write_text_atomic(args.out / f"{args.name}.json", json.dumps(out, indent=1, default=float))
    fig = Figure(figsize=(12, 4.5), layout="constrained")
    left, right = fig.subplots(1, 2)
    variants = sorted({re.sub(r"^(pretrained\d+|random)_", "", m) for m in methods})
    for k, variant in enumerate(variants):
        corpora = sorted((c for c in hours if c != "random" and f"{c}_{variant}" in methods), key=hours.get)
        x = [hours[c] for c in corpora]
        left.plot(x, [methods[f"{c}_{variant}"]["over_seeds"]["balanced_accuracy"]["mean"] for c in corpora], "o-",
                  color=f"C{k}", label=variant)
        left.axhline(methods[f"random_{variant}"]["over_seeds"]["balanced_accuracy"]["mean"], color=f"C{k}", ls=":")
        d = [paired[f"{c}_{variant} - random_{variant}"] for c in corpora]
        right.errorbar(np.array(x) * (1 + 0.03 * k), [e["mean"] for e in d],
                       yerr=[[e["mean"] - e["t_low"] for e in d], [e["t_high"] - e["mean"] for e in d]],
                       fmt="o-", color=f"C{k}", capsize=3, label=variant)
    left.set(xlabel="pretraining corpus, hours of EEG", ylabel="balanced accuracy (pooled; dotted: random weights)",
             title="frozen probes by corpus size")
    right.axhline(0.0, color="grey", lw=0.8, ls="--")
    right.set(xlabel="pretraining corpus, hours of EEG", ylabel="pretrained − random (95 % t-interval over subjects)",
              title=f"{args.steps} pretraining steps per corpus, {args.size} {args.stem}")
    ticks = sorted(h for h in hours.values() if h > 0)
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_xticks(ticks, [f"{h:.2f}" for h in ticks])
        ax.minorticks_off()
    left.legend(fontsize=7)
    fig.savefig(args.out / f"{args.name}.png", dpi=110)
    print(f"\n{args.name}: {minutes:.1f} min this run; corpus hours {hours}")
    for name, d in paired.items():
        print(f"{name:52s} {d['mean']:+7.3f} [{d['t_low']:+.3f}, {d['t_high']:+.3f}] {d['wilcoxon_p']:6.3f} "
              f"{d['wins']}/{d['n']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", nargs="*", default=["classical", "peers", "neurofm"],
                        choices=["classical", "peers", "peers_own", "neurofm", "ablation", "corpus"])
    parser.add_argument("--summarise", nargs="*", default=None, help="parts to summarise (default: --parts)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=400, help="pretraining steps")
    parser.add_argument("--lr", type=float, default=3e-3, help="pretraining learning rate")
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--match-wallclock", default=None, metavar="SIZE",
                        help="pretrain --size for the wall-clock of SIZE's --steps (steps scaled by measured s/step)")
    parser.add_argument("--versus-size", default=None, metavar="SIZE",
                        help="summary: pair each neurofm method with the same method of SIZE on the same folds")
    parser.add_argument("--scratch", action=argparse.BooleanOptionalAction, default=True,
                        help="train the scratch model too (--parts neurofm)")
    parser.add_argument("--corpus-subjects", nargs="+", type=int, default=[0, 2, 4, 8],
                        help="corpus-size curve (--parts corpus): the device files plus this many subjects' runs")
    parser.add_argument("--stem", default="linear", choices=["linear", "conv", "spectral"])
    parser.add_argument("--stems", nargs="+", default=["linear", "conv", "spectral"])
    parser.add_argument("--readouts", nargs="+", default=["mean", "sensors", "spatial", "attention"])
    parser.add_argument("--probe-readouts", nargs="*", default=["sensors"])
    parser.add_argument("--modes", nargs="*", default=["lora", "finetune"])
    parser.add_argument("--head", default="sensors", help="what the trained heads read")
    parser.add_argument("--fractions", nargs="*", type=float, default=[0.1, 0.25],
                        help="label efficiency: the probe on these fractions of the training labels")
    parser.add_argument("--shots", nargs="*", type=int, default=[5, 10],
                        help="within-subject calibration: the test subject's first trials per class")
    parser.add_argument("--work", type=Path, default=Path("runs/eegmmi_yardstick"))
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument("--name", default="eegmmi_yardstick")
    parser.add_argument("--run-repeats", nargs="*", type=int, default=None,
                        help="run only these repeats' folds (e.g. one per process); the summary reads all --repeats")
    parser.add_argument("--max-folds", type=int, default=None, help="run only this many folds (a smoke test)")
    parser.add_argument("--max-epochs", type=int, default=None, help="cap the rule's epochs (a smoke test)")
    args = parser.parse_args()
    global RULE
    if args.max_epochs:
        RULE = replace(RULE, max_epochs=args.max_epochs, warmup_epochs=1)
    args.summarise = args.summarise if args.summarise is not None else args.parts
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    mne.set_log_level("ERROR")
    start = time.perf_counter()
    root = data_dir() / "meeg" / "eegmmidb"
    segments, y, subjects = labelled_windows(root)
    data = {"segments": segments, "y": y, "subjects": subjects, "x": shared_sensor_array(segments).astype(np.float32),
            "sfreq": float(segments[0].sfreq)}
    data["baselines"] = decoding_baselines(data["x"], data["sfreq"])  # each band filtered once, lazily
    if {"neurofm", "ablation", "corpus"} & set(args.parts):
        data["corpus"], data["extra"] = corpus_windows(root)
    args.wallclock = matched_steps(data, args) if args.match_wallclock else None
    print(f"{len(segments)} windows of {len(SUBJECTS)} subjects, {data['x'].shape[1:]} at {data['sfreq']:g} Hz",
          flush=True)
    run = args.run_repeats if args.run_repeats is not None else range(args.repeats)
    jobs = [(part, fold) for part in args.parts for r in run for fold in folds(r)]
    jobs = jobs[: args.max_folds] if args.max_folds else jobs
    for part, fold in tqdm(jobs, desc="folds", unit="fold"):
        path = saved_path(args.work, part, fold, args)
        kept = json.loads(path.read_text()) if path.exists() else None
        todo = args
        if part == "corpus" and kept is not None:  # a curve grows: only the corpora a fold lacks
            todo = argparse.Namespace(**{**vars(args), "corpus_subjects": missing_corpora(kept, args)})
            if not todo.corpus_subjects:
                continue
        elif kept is not None:
            continue
        t0 = time.perf_counter()
        found = {**(kept or {}), **run_fold(part, fold, data, todo)}
        write_text_atomic(path, json.dumps({k: {**v, "probs": np.asarray(v["probs"]).tolist(),
                                                **({"index": np.asarray(v["index"]).tolist()} if "index" in v else {})}
                                            for k, v in found.items()}, default=float))
        tqdm.write(f"{part} {fold['name']}: {time.perf_counter() - t0:.0f} s")
    rows, curves, seconds = collect(args.work, args, data)
    if args.summarise == ["corpus"]:
        return report_corpus(rows, args, start)
    neurofm_methods = sorted(m for m in rows["method"].unique()  # the full-label methods
                             if m not in CLASSICAL + PEERS and "_labels" not in m and "_calib" not in m)
    if args.versus_size:
        rows = pd.concat([rows, versus_rows(rows, args, data)], ignore_index=True)
    result = summarise(rows, neurofm_methods, args)
    for method, s in seconds.items():
        if method in result["methods"]:
            result["methods"][method]["train_seconds_per_fold"] = float(np.median(s))
    for method, runs in curves.items():
        if method in result["methods"]:
            result["methods"][method]["epochs_run"] = float(np.median([len(c) for c in runs]))
            result["methods"][method]["steps_run"] = float(np.median([c[-1]["steps"] for c in runs]))
            result["methods"][method]["best_epoch"] = float(np.median(
                [1 + int(np.nanargmin([e["val_loss"] for e in c])) for c in runs]))
    minutes = (time.perf_counter() - start) / 60
    out = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
           "pretraining_steps": args.wallclock["steps"] if args.wallclock else args.steps, "rule": asdict(RULE),
           "folds": [f for r in range(args.repeats) for f in folds(r)],
           "minutes_this_run": minutes, **result,
           "curves": {m: [[e["val_loss"] for e in c] for c in runs] for m, runs in curves.items()}}
    write_text_atomic(args.out / f"{args.name}.json", json.dumps(out, indent=1, default=float))
    plot(result, curves, args.out / f"{args.name}.png")
    print(f"\n{args.name}: {minutes:.1f} min this run")
    print(f"{'method':44s} {'bal. acc. (mean ± sd over repeats)':>34s}  epochs")
    for method, r in sorted(result["methods"].items(), key=lambda kv: -kv[1]["over_seeds"]["balanced_accuracy"]["mean"]):
        ba = r["over_seeds"]["balanced_accuracy"]
        print(f"{LABELS.get(method, method):44s} {ba['mean']:>24.3f} ± {ba['sd']:.3f}  {r.get('epochs_run', '')}")
    print(f"\n{'paired (subjects)':52s} {'mean':>7s} {'t-interval':>17s} {'bootstrap':>17s} {'p':>6s} wins")
    for name, d in result["paired"].items():
        print(f"{name:52s} {d['mean']:+7.3f} [{d['t_low']:+.3f}, {d['t_high']:+.3f}] [{d['ci_low']:+.3f}, "
              f"{d['ci_high']:+.3f}] {d['wilcoxon_p']:6.3f} {d['wins']}/{d['n']}")
    for name, picks in result["chosen_on_validation"].items():
        print(f"{name}, chosen per fold on validation: {picks}")
    val = result["validation_balanced_accuracy"]
    print("best on validation (pooled balanced accuracy of the validation subjects):",
          ", ".join(f"{m} {v:.3f}" for m, v in sorted(val.items(), key=lambda kv: -kv[1])[:5]))


if __name__ == "__main__":
    main()
