"""Scaling curves: EEGMMI imagery decoding (left vs right fist, leave one subject out) against
pretraining steps and against the fraction of the pretraining corpus used.

For each of the 5 subjects in ``../shared/data/meeg/eegmmidb`` and each seed, a ``tiny``
encoder is pretrained (``neurofm pretrain``'s recipe: model, AdamW, warmup + cosine, gradient
clipping, in its Lightning loop: ``pretrain_on_batches``) on the *other* 4 subjects' imagery and execution
runs (``neurofm prepare`` shards, 4 s windows, train split; the shards ``motor_imagery.py``
uses), and scored with a linear probe on per-sensor pooled tokens (``task.readout=sensors``):
trained on the other 4 subjects' labelled imagery windows ([0.5, 2.5] s after T1/T2), tested
on the held-out subject. No test subject reaches its pretraining.

- ``steps``: one run of the longest length per (subject, seed); the encoder is probed at
  step 0 (its random init) and at every ``--steps`` point (intermediate snapshots of that one
  run: the schedule is the longest run's, as in Pythia-style curves).
- ``data``: ``--data-steps`` steps on a random ``--fractions`` share of the 726 pretraining
  windows (drawn per seed), each its own run.

``--heads probe lora`` also trains LoRA (``task.mode=lora``, rank 8, the per-sensor head,
``--epochs`` epochs: what ``motor_imagery.py --modes lora`` runs) at every point of the steps
curve, beside the probe of the same snapshot; ``--mask`` picks the pretraining masking (the
committed probe curves used ``channels``; ``time`` is the package default). That run writes
``<out>/scaling_eegmmi_steps_heads.json`` (both heads) and adds a panel to the figure.

Per point: balanced accuracy pooled over the 5 held-out subjects, mean ± sd over seeds; the
paired difference over subjects (seed means) of the last point against the first, with a
bootstrap 95 % CI and a Wilcoxon p; a least-squares fit of score on log10(steps) with its slope's
95 % CI and what it extrapolates to at 10x the longest run. Writes
``<out>/scaling_eegmmi_<curve>.json`` and the figure ``<out>/scaling_eegmmi.png`` (both curves
when both JSONs exist).

usage: python benchmarks/pretrain_scaling.py [--curves steps data] [--seeds 3]
       [--steps 4 16 64 256 1024] [--fractions 0.0625 0.25 1] [--data-steps 256] [--work DIR]
       [--heads probe lora] [--mask channels|time] [--epochs 15]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import data_dir, neurofm_cli, pretrain_steps
from matplotlib.figure import Figure
from scipy import stats
from sklearn.metrics import balanced_accuracy_score

from neurofm.batch import collate_segments
from neurofm.datasets import stream
from neurofm.embedding import as_neurofm
from neurofm.finetune.classifier import finetune_classifier, linear_probe
from neurofm.finetune.metrics import paired_difference
from neurofm.io import write_text_atomic
from neurofm.models.config import ModelConfig
from neurofm.models.mae import MaskedAutoencoder
from neurofm.tokenizers import tokenize_events

SUBJECTS = ("S001", "S002", "S003", "S004", "S005")
PRETRAIN_RUNS = ("R03", "R04", "R07", "R08", "R11", "R12")   # execution and imagery
IMAGERY_RUNS = ("R04", "R08", "R12")


def shards_without(root: Path, held_out: str, work: Path, log: Path) -> Path:
    """``neurofm prepare`` (4 s windows) of the other subjects' runs, once per held-out subject."""
    shards = work / f"shards_no{held_out}"
    if not (shards / "manifest.json").exists():
        inputs = [str(root / s / f"{s}{r}.edf") for s in SUBJECTS if s != held_out for r in PRETRAIN_RUNS]
        neurofm_cli("prepare", f"inputs=[{','.join(inputs)}]", f"out={shards}", "window_s=4.0", "workers=1",
                    log=log)
    return shards


def random_batches(segments: list, batch: int, rng: np.random.Generator):
    """Endless batches of ``batch`` windows drawn at random (without replacement within a batch
    when there are enough windows), each of one rate (ABIDE sites differ in TR): with several
    rates, the rate is drawn first, in proportion to its windows."""
    by_rate: dict[float, list[int]] = {}
    for i, w in enumerate(segments):
        by_rate.setdefault(w.sfreq, []).append(i)
    rates = sorted(by_rate)
    weights = np.array([len(by_rate[r]) for r in rates], dtype=float)
    while True:
        pool = by_rate[rates[rng.choice(len(rates), p=weights / weights.sum())]] if len(rates) > 1 else by_rate[rates[0]]
        pick = rng.choice(pool, batch, replace=len(pool) < batch)
        yield collate_segments([segments[i] for i in pick])


def pooled(labelled: dict) -> tuple[list, np.ndarray, np.ndarray]:
    """Every subject's windows in one list, their labels and their subject."""
    names = list(labelled)
    return ([w for n in names for w in labelled[n][0]], np.concatenate([labelled[n][1] for n in names]),
            np.concatenate([[n] * len(labelled[n][1]) for n in names]))


def probe_scores(model, labelled: dict, held_out: str, seed: int, readout: str = "sensors"
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Held-out subject's labels and probe predictions (``readout``: per-sensor pooled tokens by
    default; probe trained on the other subjects)."""
    segments, y, owner = pooled(labelled)
    features = as_neurofm(model).embed(segments, readout=readout).windows
    train, test = owner != held_out, owner == held_out
    return y[test], linear_probe(features[train], y[train], features[test], seed).argmax(1)


def lora_scores(model, labelled: dict, held_out: str, seed: int, epochs: int) -> tuple[np.ndarray, np.ndarray]:
    """Held-out subject's labels and the predictions of LoRA on a copy of ``model`` (per-sensor
    head, trained on the other subjects), leaving the global torch RNG as it found it, so that
    pretraining goes on drawing the masks it would have drawn without this head."""
    segments, y, owner = pooled(labelled)
    state = torch.random.get_rng_state()
    probs, _ = finetune_classifier(model, segments, y, np.flatnonzero(owner != held_out),
                                   np.flatnonzero(owner == held_out), mode="lora", epochs=epochs,
                                   readout="sensors", seed=seed)
    torch.random.set_rng_state(state)
    return y[owner == held_out], probs.argmax(1)


def pretrain(config, corpus: list, steps: int, seed: int, args, at: tuple[int, ...], on_point) -> None:
    """Pretrain ``config`` from seed ``seed`` on random batches of ``corpus``; ``on_point(step,
    model)`` at step 0 and at each step in ``at``."""
    torch.manual_seed(seed)
    model = MaskedAutoencoder(config)
    on_point(0, model)
    batches = random_batches(corpus, args.batch, np.random.default_rng(seed))

    def on_step(step: int, loss: float, model) -> None:
        if step in at:
            on_point(step, model)

    pretrain_steps(config, batches, steps, args.lr, on_step, model=model, warmup_steps=max(1, steps // 20))


def summarise(points: dict, x_name: str, groups: tuple[str, ...] = SUBJECTS) -> dict:
    """points: x -> seed -> group (subject, site) -> (y_true, y_pred)."""
    xs = sorted(points)
    seeds = sorted(next(iter(points.values())))
    pooled = {x: [balanced_accuracy_score(np.concatenate([points[x][s][k][0] for k in groups]),
                                          np.concatenate([points[x][s][k][1] for k in groups]))
                  for s in seeds] for x in xs}
    per_subject = {x: {k: float(np.mean([balanced_accuracy_score(*points[x][s][k]) for s in seeds]))
                       for k in groups} for x in xs}
    out = {x_name: xs, "seeds": seeds,
           "balanced_accuracy": {str(x): {"mean": float(np.mean(v)), "sd": float(np.std(v, ddof=1))
                                          if len(v) > 1 else 0.0, "per_seed": v} for x, v in pooled.items()},
           "per_subject": {str(x): v for x, v in per_subject.items()}}
    first, last = xs[0], xs[-1]
    diff = paired_difference([per_subject[last][k] for k in groups], [per_subject[first][k] for k in groups])
    out["paired_last_minus_first"] = {"last": last, "first": first, **diff}
    positive = [x for x in xs if x > 0]
    fit_x = np.log10([x for x in positive for _ in seeds])
    fit_y = np.array([v for x in positive for v in pooled[x]])
    fit = stats.linregress(fit_x, fit_y)
    t = stats.t.ppf(0.975, len(fit_x) - 2)
    x_new = np.log10(10 * max(positive))
    se_pred = fit.stderr * abs(x_new - fit_x.mean())  # the slope's uncertainty carried out
    out["log_fit"] = {"slope_per_decade": fit.slope, "slope_ci": [fit.slope - t * fit.stderr,
                                                                  fit.slope + t * fit.stderr],
                      "intercept": fit.intercept, "p": fit.pvalue, "extrapolated_x": 10 * max(positive),
                      "extrapolated": fit.intercept + fit.slope * x_new,
                      "extrapolated_ci": [fit.intercept + fit.slope * x_new - t * np.hypot(se_pred, fit.intercept_stderr),
                                          fit.intercept + fit.slope * x_new + t * np.hypot(se_pred, fit.intercept_stderr)]}
    return out


def report(result: dict, x_name: str, over: str = "subjects") -> None:
    print(f"{x_name:>10} balanced accuracy (mean ± sd over seeds {result['seeds']})")
    for x in result[x_name]:
        v = result["balanced_accuracy"][str(x)]
        print(f"{x:>10} {v['mean']:.3f} ± {v['sd']:.3f}   per seed " + " ".join(f"{p:.3f}" for p in v["per_seed"]))
    d, f = result["paired_last_minus_first"], result["log_fit"]
    print(f"{x_name} {d['last']} - {d['first']}: {d['mean']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}] over "
          f"{over}, p={d['wilcoxon_p']:.3f}; fit on log10({x_name}): {f['slope_per_decade']:+.4f} per decade "
          f"[{f['slope_ci'][0]:+.4f}, {f['slope_ci'][1]:+.4f}], at {f['extrapolated_x']:g}: "
          f"{f['extrapolated']:.3f} [{f['extrapolated_ci'][0]:.3f}, {f['extrapolated_ci'][1]:.3f}]", flush=True)


def draw_curve(ax, result: dict, x_name: str, label: str) -> None:
    """One curve of :func:`summarise`'s ``result``: mean ± sd over seeds against ``x_name`` on a
    log axis (x = 0 drawn a quarter of the first point to its left), chance dotted."""
    xs = result[x_name]
    mean = [result["balanced_accuracy"][str(x)]["mean"] for x in xs]
    sd = [result["balanced_accuracy"][str(x)]["sd"] for x in xs]
    ax.errorbar([xs[1] / 4 if x == 0 else x for x in xs], mean, yerr=sd, marker="o", capsize=3, label=label)
    ax.axhline(0.5, color="0.6", lw=0.8, ls=":")
    ax.set_xscale("log")


def plot(out: Path) -> None:
    curves = {c: json.loads((out / f"scaling_eegmmi_{c}.json").read_text())
              for c in ("steps", "data", "steps_heads") if (out / f"scaling_eegmmi_{c}.json").exists()}
    fig = Figure(figsize=(5.2 * len(curves), 4.0), layout="constrained")
    for ax, (curve, result) in zip(np.atleast_1d(fig.subplots(1, len(curves))), curves.items(), strict=True):
        if curve == "steps_heads":
            heads_panel(ax, result)
            continue
        draw_curve(ax, result, "steps" if curve == "steps" else "fraction", "pretrained + probe (per-sensor)")
        ax.set_xlabel("pretraining steps (leftmost: step 0)" if curve == "steps"
                      else f"fraction of the pretraining corpus ({result['steps']} steps)")
        ax.set_ylabel("balanced accuracy, LOSO (5 subjects)")
        ax.set_title(f"EEGMMI imagery: {'steps' if curve == 'steps' else 'corpus size'} "
                     f"({result['settings'].get('mask', 'channels')} masking), {len(result['seeds'])} seeds (± sd)",
                     fontsize=10)
        ax.legend(fontsize=8, loc="lower right")
    fig.savefig(out / "scaling_eegmmi.png", dpi=130)


def heads_panel(ax, result: dict) -> None:
    """The probe and LoRA against steps, from one pretraining run per subject and seed."""
    for head, label in (("probe", "pretrained + probe (per-sensor)"), ("lora", "pretrained + LoRA (r = 8)")):
        draw_curve(ax, result[head], "steps", label)
    ax.set_xlabel("pretraining steps (leftmost: step 0)")
    ax.set_ylabel("balanced accuracy, LOSO (5 subjects)")
    ax.set_title(f"EEGMMI imagery: probe and LoRA ({result['recipe']['mask_strategy']} masking), "
                 f"{len(result['probe']['seeds'])} seeds", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")


def labelled_windows(root: Path) -> dict:
    """Per subject: the imagery windows ([0.5, 2.5] s after T1/T2) and their labels (1 = right)."""
    labelled = {}
    for s in SUBJECTS:
        segments = [w for r in IMAGERY_RUNS for w in tokenize_events(root / s / f"{s}{r}.edf", event_id=["T1", "T2"],
                                                                      tmin=0.5, tmax=2.5)]
        labelled[s] = (segments, np.array([w.meta["label"] == "T2" for w in segments], dtype=int))
    return labelled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--curves", nargs="+", default=["steps", "data"], choices=["steps", "data"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, nargs="+", default=[4, 16, 64, 256, 1024])
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.0625, 0.25, 1.0])
    parser.add_argument("--data-steps", type=int, default=256)
    parser.add_argument("--heads", nargs="+", default=["probe"], choices=["probe", "lora"],
                        help="what scores each point of the steps curve (lora: a trained head)")
    parser.add_argument("--mask", default="channels", choices=["channels", "time"], help="pretraining masking")
    parser.add_argument("--epochs", type=int, default=15, help="LoRA epochs per point")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--work", type=Path, default=None, help="keep shards here (default: a temp folder)")
    parser.add_argument("--out", type=Path, default=Path("docs"))
    args = parser.parse_args()
    root = data_dir() / "meeg" / "eegmmidb"
    args.out.mkdir(parents=True, exist_ok=True)
    config = ModelConfig.named("tiny", mask_strategy=args.mask, mask_ratio=0.5)
    if "lora" in args.heads and args.curves != ["steps"]:
        parser.error("--heads lora scores the steps curve: pass --curves steps")
    start = time.perf_counter()
    labelled = labelled_windows(root)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        log = work / "commands.log"
        corpora = {s: list(stream(shards_without(root, s, work, log), "train", shuffle_buffer=0)) for s in SUBJECTS}
        for curve in args.curves:
            points: dict = {head: {} for head in args.heads}
            for seed in range(args.seeds):
                for s in SUBJECTS:
                    t0 = time.perf_counter()

                    def on_point(x, model, s=s, seed=seed, points=points):
                        if "probe" in points:
                            points["probe"].setdefault(x, {}).setdefault(seed, {})[s] = probe_scores(
                                model, labelled, s, seed)
                        if "lora" in points:
                            points["lora"].setdefault(x, {}).setdefault(seed, {})[s] = lora_scores(
                                model, labelled, s, seed, args.epochs)

                    if curve == "steps":
                        pretrain(config, corpora[s], max(args.steps), seed, args, tuple(args.steps), on_point)
                    else:
                        rng = np.random.default_rng(1000 + seed)
                        for f in args.fractions:
                            n = max(args.batch, int(round(f * len(corpora[s]))))
                            subset = [corpora[s][i] for i in sorted(rng.choice(len(corpora[s]), n, replace=False))]
                            pretrain(config, subset, args.data_steps, seed, args, (args.data_steps,),
                                     lambda x, m, f=f: x and on_point(f, m))
                    print(f"{curve}: seed {seed}, held out {s} ({time.perf_counter() - t0:.0f} s)", flush=True)
            x_name = "steps" if curve == "steps" else "fraction"
            settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
            common = {"settings": settings, "corpus_windows": {s: len(c) for s, c in corpora.items()},
                      "minutes": (time.perf_counter() - start) / 60, "steps": args.data_steps}
            if args.heads == ["probe"]:
                result, name = {**common, **summarise(points["probe"], x_name)}, curve
                report(result, x_name)
            else:
                result = {**common, "recipe": {"mask_strategy": config.mask_strategy, "mask_ratio": config.mask_ratio},
                          **{head: summarise(found, x_name) for head, found in points.items()}}
                name = f"{curve}_heads"
                for head in points:
                    print(f"## {head}")
                    report(result[head], x_name)
            write_text_atomic(args.out / f"scaling_eegmmi_{name}.json", json.dumps(result, indent=2, default=float))
            plot(args.out)
    print(f"metrics: {args.out}/scaling_eegmmi_*.json; figure: {args.out}/scaling_eegmmi.png "
          f"({(time.perf_counter() - start) / 60:.1f} min)")


if __name__ == "__main__":
    main()
