"""neurofm as a braindecode model: braindecode's ``EEGClassifier`` trains
:class:`neurofm.braindecode.NeuroFMModel` on EEGMMI windows, against neurofm's own training of
the same encoder, head and mode on the same split.

Data: the imagery runs (R04, R08, R12) of the 10 subjects of ``../shared/data/meeg/eegmmidb``,
left vs right fist, [0.5, 2.5] s after the cue.

- **braindecode**: each run read by MNE into braindecode's ``RawDataset``, preprocessed with
  braindecode's ``Preprocessor`` (resample to the checkpoint's 200 Hz, 0.5 Hz high-pass),
  windowed by ``create_windows_from_events``; ``EEGClassifier(NeuroFMModel, ...)``.
- **neurofm**: the windows of ``neurofm finetune task=decoding`` (``tokenize_events``), trained
  by :func:`neurofm.finetune.classifier.finetune_classifier`.

Both train one checkpoint (``--ckpt``, default the export committed under ``tests/data``) in
one mode and readout (``--mode``, ``--readout``) under the yardstick's rule (AdamW lr 1e-3,
weight decay 0.05, batches of 32, 5 warmup epochs then a cosine to 0 at 100 epochs, early
stopping on the validation subjects' loss with patience 15, the best epoch's weights kept:
skorch's ``EarlyStopping(load_best=True)`` and a per-batch ``LRScheduler`` on the braindecode
side), on the yardstick's repeat-0 folds (subject-wise 5-fold; 2 test, 2 validation and 6
training subjects per fold). Balanced accuracy per test subject, paired over the 10 subjects
(t-interval, bootstrap, Wilcoxon). Writes ``<out>/braindecode_eegmmi.json``.

usage: PYTHONPATH=.peers python benchmarks/braindecode_eegmmi.py [--mode lora] [--readout spatial]
       [--max-folds N] [--max-epochs N]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import mne
import numpy as np
import torch
from _common import data_dir
from eegmmi_yardstick import IMAGERY, RULE, SUBJECTS, folds, indices, labelled_windows
from sklearn.metrics import balanced_accuracy_score
from tqdm.auto import tqdm

from neurofm.finetune.classifier import finetune_classifier
from neurofm.finetune.metrics import paired_difference
from neurofm.io import write_text_atomic

ROOT = Path(__file__).resolve().parents[1]


def braindecode_windows(root: Path):
    """braindecode's windows of every subject's imagery runs: [0.5, 2.5] s after each cue."""
    from braindecode.datasets import BaseConcatDataset, RawDataset
    from braindecode.preprocessing import Preprocessor, create_windows_from_events, preprocess

    parts = []
    for subject in SUBJECTS:
        for run in IMAGERY:
            raw = mne.io.read_raw_edf(root / subject / f"{subject}{run}.edf", preload=True, verbose="error")
            mne.datasets.eegbci.standardize(raw)
            raw.set_montage("standard_1005", verbose="error")
            parts.append(RawDataset(raw, description={"subject": subject, "run": run}))
    dataset = BaseConcatDataset(parts)
    preprocess(dataset, [Preprocessor("resample", sfreq=200.0),
                         Preprocessor("filter", l_freq=0.5, h_freq=None, verbose="error")], n_jobs=1)
    return create_windows_from_events(dataset, trial_start_offset_samples=100, trial_stop_offset_samples=0,
                                      window_size_samples=400, window_stride_samples=400, on_last_window="drop",
                                      mapping={"T1": 0, "T2": 1}, preload=True)


def rule_callbacks(n_train: int, max_epochs: int):
    """skorch callbacks for :data:`RULE`: a per-batch warmup + cosine and early stopping with
    the best epoch's weights restored."""
    from skorch.callbacks import EarlyStopping, LRScheduler

    per_epoch = math.ceil(n_train / RULE.batch_size)
    warmup, total = RULE.warmup_epochs * per_epoch, max_epochs * per_epoch

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

    return [("schedule", LRScheduler(policy=torch.optim.lr_scheduler.LambdaLR, lr_lambda=factor, step_every="batch")),
            ("stop", EarlyStopping(monitor="valid_loss", patience=RULE.patience, load_best=True))]


def run_braindecode(windows, fold: dict, args, max_epochs: int, seed: int) -> dict:
    from braindecode import EEGClassifier
    from braindecode.datasets import BaseConcatDataset
    from skorch.helper import predefined_split

    from neurofm.braindecode import NeuroFMModel

    by_subject = windows.split("subject")
    part = {name: BaseConcatDataset([by_subject[s] for s in fold[name]]) for name in ("train", "val")}
    torch.manual_seed(seed)
    clf = EEGClassifier(NeuroFMModel, module__checkpoint=str(args.ckpt), module__mode=args.mode,
                        module__readout=args.readout, module__sfreq=200.0, module__n_outputs=2,
                        module__chs_info=windows.datasets[0].raw.info["chs"],
                        optimizer=torch.optim.AdamW, optimizer__weight_decay=RULE.weight_decay, lr=RULE.lr,
                        batch_size=RULE.batch_size, max_epochs=max_epochs, train_split=predefined_split(part["val"]),
                        callbacks=rule_callbacks(len(part["train"]), max_epochs), iterator_train__shuffle=True, classes=[0, 1],
                        verbose=0)
    t0 = time.perf_counter()
    clf.fit(part["train"], y=None)
    out = {}
    for subject in fold["test"]:
        data = by_subject[subject]
        y = np.array([data[i][1] for i in range(len(data))])
        out[str(subject)] = float(balanced_accuracy_score(y, clf.predict(data)))
    return {"per_subject": out, "seconds": time.perf_counter() - t0, "epochs": len(clf.history),
            "curve": [{"epoch": h["epoch"], "train_loss": h["train_loss"], "val_loss": h["valid_loss"]}
                      for h in clf.history]}


def run_neurofm(data: dict, fold: dict, args, max_epochs: int, seed: int) -> dict:
    from dataclasses import replace

    from neurofm import load

    segments, y, subjects = data["segments"], data["y"], data["subjects"]
    train, val, test = indices(subjects, fold)
    curve: list[dict] = []
    t0 = time.perf_counter()
    probs, _ = finetune_classifier(load(args.ckpt), segments, y, train, test, mode=args.mode, readout=args.readout,
                                   seed=seed, validation=val, rule=replace(RULE, max_epochs=max_epochs), curve=curve)
    pred = probs.argmax(1)
    out = {str(s): float(balanced_accuracy_score(y[test][subjects[test] == s], pred[subjects[test] == s]))
           for s in fold["test"]}
    return {"per_subject": out, "seconds": time.perf_counter() - t0, "epochs": len(curve), "curve": curve}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ckpt", type=Path, default=ROOT / "tests" / "data" / "tiny-export-2026-12")
    parser.add_argument("--mode", default="lora", choices=["lora", "finetune", "linear_probe"])
    parser.add_argument("--readout", default="spatial")
    parser.add_argument("--max-folds", type=int, default=None)
    parser.add_argument("--max-epochs", type=int, default=None, help="cap the rule's epochs (a smoke test)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    root = data_dir() / "meeg" / "eegmmidb"
    segments, y, subjects = labelled_windows(root)
    data = {"segments": segments, "y": y, "subjects": subjects}
    windows = braindecode_windows(root)
    print(f"{len(segments)} neurofm windows, {len(windows)} braindecode windows of {len(SUBJECTS)} subjects")
    max_epochs = args.max_epochs or RULE.max_epochs
    chosen = folds(0)[: args.max_folds]
    results: dict[str, dict] = {"braindecode": {}, "neurofm": {}}
    started = time.perf_counter()
    for fold in tqdm(chosen, desc="folds", unit="fold"):
        results["braindecode"][fold["name"]] = run_braindecode(windows, fold, args, max_epochs, seed=0)
        results["neurofm"][fold["name"]] = run_neurofm(data, fold, args, max_epochs, seed=0)
        tqdm.write(f"{fold['name']}: braindecode {results['braindecode'][fold['name']]['per_subject']}, "
                   f"neurofm {results['neurofm'][fold['name']]['per_subject']}")
    per_subject = {side: {s: v for f in runs.values() for s, v in f["per_subject"].items()}
                   for side, runs in results.items()}
    units = sorted(per_subject["neurofm"])
    difference = paired_difference([per_subject["braindecode"][s] for s in units],
                                   [per_subject["neurofm"][s] for s in units])
    summary = {
        "settings": {"checkpoint": str(args.ckpt.relative_to(ROOT) if args.ckpt.is_relative_to(ROOT) else args.ckpt),
                     "mode": args.mode, "readout": args.readout, "max_epochs": max_epochs,
                     "rule": {k: getattr(RULE, k) for k in ("lr", "weight_decay", "batch_size", "warmup_epochs",
                                                             "patience")},
                     "folds": [{k: f[k] for k in ("name", "train", "val", "test")} for f in chosen]},
        "per_subject": per_subject,
        "mean_balanced_accuracy": {side: float(np.mean(list(v.values()))) for side, v in per_subject.items()},
        "braindecode - neurofm": difference,
        "folds": results,
        "minutes": (time.perf_counter() - started) / 60,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out / "braindecode_eegmmi.json", json.dumps(summary, indent=1))
    d = difference
    print(f"balanced accuracy over {len(units)} subjects: braindecode EEGClassifier "
          f"{summary['mean_balanced_accuracy']['braindecode']:.3f}, neurofm finetune_classifier "
          f"{summary['mean_balanced_accuracy']['neurofm']:.3f}; braindecode - neurofm {d['mean']:+.3f} "
          f"(t-interval [{d['t_low']:+.3f}, {d['t_high']:+.3f}], bootstrap [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}], "
          f"Wilcoxon p {d['wilcoxon_p']:.3f}); {summary['minutes']:.1f} min")


if __name__ == "__main__":
    main()
