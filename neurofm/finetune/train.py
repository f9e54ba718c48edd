"""``neurofm finetune``: event decoding under an evaluation protocol, metrics to JSON and PNG."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from neurofm.errors import ConfigError, NeurofmError, NotAvailableError

logger = logging.getLogger("neurofm.finetune")


def _splits(task: dict, labels: np.ndarray, groups: np.ndarray, subjects: np.ndarray, seed: int):
    from neurofm.finetune import protocols

    name = task["protocol"]
    if name == "kfold":
        return protocols.event_kfold(labels, groups, k=task["folds"], seed=seed)
    if name == "kfold_subject":
        return protocols.subject_kfold(subjects, k=task["folds"])
    if name == "loso":
        return protocols.leave_one_subject_out(subjects)
    if name == "few_shot":
        return protocols.few_shot(labels, groups, shots=task["shots"], repeats=task["repeats"], seed=seed)
    raise ConfigError(f"task.protocol must be kfold, kfold_subject, loso or few_shot, got {name!r}")


def plot_confusion(y: np.ndarray, pred: np.ndarray, classes: list[str], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import confusion_matrix

    matrix = confusion_matrix(y, pred, labels=range(len(classes)), normalize="true")
    fig, ax = plt.subplots(figsize=(3.2 + 0.3 * len(classes), 3 + 0.3 * len(classes)))
    ax.imshow(matrix, vmin=0, vmax=1, cmap="Blues")
    for (i, j), v in np.ndenumerate(matrix):
        ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="white" if v > 0.5 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def run_finetune(cfg) -> int:
    """The Hydra entry point of ``neurofm finetune``."""
    from omegaconf import OmegaConf

    from neurofm.embedding import load
    from neurofm.finetune.metrics import classification_metrics
    from neurofm.finetune.tasks import finetune_classifier, linear_probe, window_embeddings
    from neurofm.tokenizers import tokenize_events

    conf = OmegaConf.to_container(cfg, resolve=True)
    task = conf["task"]
    if task["name"] != "decoding":
        raise NotAvailableError(f"task={task['name']} is not available in this release; task=decoding is")
    if task["mode"] not in ("linear_probe", "finetune", "scratch"):
        raise ConfigError(f"task.mode must be linear_probe, finetune or scratch, got {task['mode']!r}")
    model = load(conf["ckpt"]).model
    inputs = conf["inputs"] if isinstance(conf["inputs"], list) else [conf["inputs"]]
    segments = []
    for path in inputs:
        segments += list(tokenize_events(path, event_id=task["event_id"], tmin=task["tmin_s"],
                                         tmax=task["tmax_s"], **conf["tokenizer"]))
    if not segments:
        raise NeurofmError("no event-locked windows: check task.event_id and the recordings' events")
    classes = sorted({s.meta["label"] for s in segments})
    if len(classes) < 2:
        raise NeurofmError(f"decoding needs two or more classes; found {classes}")
    labels = np.array([classes.index(s.meta["label"]) for s in segments])
    groups = np.array([f"{s.meta['source']}@{s.meta['event_onset_s']:.3f}" for s in segments])
    subjects = np.array([str(s.meta.get("subject")) for s in segments])
    splits = _splits(task, labels, groups, subjects, conf["seed"])
    embeddings = window_embeddings(model, segments) if task["mode"] == "linear_probe" else None
    y_all, p_all, per_split = [], [], []
    for split in splits:
        if task["mode"] == "linear_probe":
            prob = linear_probe(embeddings[split.train], labels[split.train], embeddings[split.test], conf["seed"])
        else:
            prob = finetune_classifier(model if task["mode"] == "finetune" else None, segments, labels,
                                       split.train, split.test, config=model.config, epochs=task["epochs"],
                                       lr=task["lr"], layer_decay=task["layer_decay"], seed=conf["seed"])[0]
        y_all.append(labels[split.test])
        p_all.append(prob)
        per_split.append({"split": split.name, "n_train": int(len(split.train)), "n_test": int(len(split.test)),
                          **{k: v["value"] for k, v in classification_metrics(labels[split.test], prob, n_boot=1).items()}})
    y, prob = np.concatenate(y_all), np.concatenate(p_all)
    metrics = classification_metrics(y, prob)
    run_dir = Path(conf["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    result = {"task": task, "classes": classes, "n_windows": len(segments), "metrics": metrics, "splits": per_split}
    (run_dir / "metrics.json").write_text(json.dumps(result, indent=1))
    lines = ["| split | n_train | n_test | balanced acc. | AUROC | kappa | F1 w |", "|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['split']} | {r['n_train']} | {r['n_test']} | {r['balanced_accuracy']:.3f} | {r['auroc']:.3f} | "
              f"{r['cohen_kappa']:.3f} | {r['f1_weighted']:.3f} |" for r in per_split]
    (run_dir / "results.md").write_text("\n".join(lines) + "\n")
    plot_confusion(y, prob.argmax(1), classes, run_dir / "confusion_matrix.png")
    ba = metrics["balanced_accuracy"]
    logger.info("decoding %s (%s, %s): balanced accuracy %.3f [%.3f, %.3f] -> %s", classes, task["mode"],
                task["protocol"], ba["value"], ba["ci_low"], ba["ci_high"], run_dir)
    return 0
