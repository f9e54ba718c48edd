"""Which pretraining recipe makes pretraining count: an ablation on EEGMMI imagery (left vs
right fist, leave one subject out), each recipe pretrained with 3 seeds and scored by the
frozen-encoder linear probe.

Protocol (``pretrain_scaling.py``'s): for each of the 5 subjects and each seed, a ``tiny``
encoder is pretrained for ``--steps`` steps (``neurofm pretrain``'s optimizer and schedule) on
the *other* 4 subjects' imagery and execution runs (``neurofm prepare`` shards, 4 s windows)
and probed on per-sensor pooled tokens (``task.readout=sensors``; ``--readouts`` adds others):
probe trained on the other 4 subjects' labelled imagery windows, tested on the held-out one.

Recipes (``model.*`` overrides of ``tiny``), against the reference: mixed masking at 0.75 with
the robust-scaled patch as the target, ``neurofm pretrain``'s default when this ablation was
first run (whole-patch masking at 0.5 won, and is the default since):

- what is masked: mixed at 0.5 and 0.9; whole sensors (``channels``) or whole patches (``time``) at 0.5;
- what is predicted: each patch standardised (``target_norm=patch``, MAE's normalised pixels);
  the patch's Fourier amplitude and phase (``target=fourier``, LaBraM's targets); the signal
  plus a spectral-amplitude term (``spectral_weight=1``);
- the spatial interpolation prior (``interpolation_prior``, with channel masking at 0.5).

Per recipe: balanced accuracy pooled over the 5 held-out subjects, mean ± sd over seeds; the
paired difference over subjects (seed means) against the reference recipe and against the same
encoder at step 0 (random weights), with a bootstrap 95 % CI and a Wilcoxon p. A recipe "wins"
when its difference to the reference has a CI above 0. The 5 subjects select the recipe: its
transfer is then to be judged on subjects that took no part in the choice. Writes
``<out>/recipe_ablation.json`` and ``<out>/recipe_ablation.png``.

usage: python benchmarks/recipe_ablation.py [--seeds 3] [--steps 256] [--recipes ...] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import data_dir
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from pretrain_scaling import SUBJECTS, labelled_windows, pretrain, probe_scores, shards_without
from sklearn.metrics import balanced_accuracy_score

from neurofm.configs.schema import model_config
from neurofm.datasets import stream
from neurofm.finetune.metrics import paired_difference
from neurofm.io import write_text_atomic

REFERENCE = "mixed 0.75"
_REFERENCE = {"mask_strategy": "mixed", "mask_ratio": 0.75}
# each recipe: the reference with these overrides (explicit, so a rerun means the same whatever
# the defaults are now)
RECIPES = {name: {**_REFERENCE, **overrides} for name, overrides in {
    REFERENCE: {},
    "mixed 0.5": {"mask_ratio": 0.5},
    "mixed 0.9": {"mask_ratio": 0.9},
    "channels 0.5": {"mask_strategy": "channels", "mask_ratio": 0.5},
    "time 0.5": {"mask_strategy": "time", "mask_ratio": 0.5},
    "normalised patch": {"target_norm": "patch"},
    "fourier": {"target": "fourier"},
    "spectral term": {"spectral_weight": 1.0},
    "interpolation prior": {"interpolation_prior": True, "mask_strategy": "channels", "mask_ratio": 0.5},
}.items()}
RANDOM = "step 0 (random weights)"


def summarise(scores: dict, readout: str) -> dict:
    """scores: recipe -> readout -> seed -> subject -> (y_true, y_pred)."""
    out = {}
    for recipe, by_readout in scores.items():
        by_seed = by_readout[readout]
        seeds = sorted(by_seed)
        pooled = [balanced_accuracy_score(np.concatenate([by_seed[s][k][0] for k in SUBJECTS]),
                                          np.concatenate([by_seed[s][k][1] for k in SUBJECTS])) for s in seeds]
        out[recipe] = {"mean": float(np.mean(pooled)), "sd": float(np.std(pooled, ddof=1)) if len(pooled) > 1 else 0.0,
                       "per_seed": pooled,
                       "per_subject": {k: float(np.mean([balanced_accuracy_score(*by_seed[s][k]) for s in seeds]))
                                       for k in SUBJECTS}}
    for recipe, result in out.items():
        for other in (REFERENCE, RANDOM):
            if recipe != other:
                result[f"minus {other}"] = paired_difference(
                    [result["per_subject"][k] for k in SUBJECTS], [out[other]["per_subject"][k] for k in SUBJECTS])
    return out


def report(results: dict, readout: str) -> None:
    print(f"\nreadout {readout}: balanced accuracy (mean ± sd over seeds), paired over subjects")
    print(f"{'recipe':26s} {'bal. acc.':>15s} {'− reference [95 % CI]':>28s} {'p':>6s} {'− step 0 [95 % CI]':>28s}")
    for recipe, r in results.items():
        cells = []
        for other in (REFERENCE, RANDOM):
            d = r.get(f"minus {other}")
            cells.append(f"{d['mean']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}] {d['wilcoxon_p']:6.3f}"
                         if d else "")
        print(f"{recipe:26s} {r['mean']:.3f} ± {r['sd']:.3f} {cells[0]:>35s} {cells[1]:>35s}", flush=True)


def plot(result: dict, path: Path) -> None:
    readouts = list(result["readouts"])
    rows_shown = len(next(iter(result["readouts"].values()))) - 1
    fig = Figure(figsize=(5.5 * len(readouts), 0.4 * rows_shown + 1.6), layout="constrained")
    for ax, readout in zip(np.atleast_1d(fig.subplots(1, len(readouts))), readouts, strict=True):
        rows = result["readouts"][readout]
        names = [r for r in rows if r != REFERENCE]
        for i, name in enumerate(names):
            d = rows[name][f"minus {REFERENCE}"]
            ax.errorbar(d["mean"], i, xerr=[[d["mean"] - d["ci_low"]], [d["ci_high"] - d["mean"]]], fmt="o",
                        capsize=3, color="tab:red" if d["ci_low"] > 0 else "tab:blue" if d["ci_high"] < 0 else "k")
        ax.axvline(0.0, color="grey", lw=0.8, ls="--")
        ax.set_yticks(range(len(names)), [f"{n} ({rows[n]['mean']:.3f})" for n in names], fontsize=8)
        ax.set_ylim(len(names) - 0.5, -0.5)
        ax.xaxis.set_major_locator(MaxNLocator(5))
        ax.set_xlabel(f"paired Δ balanced accuracy vs {REFERENCE} (95 % CI over subjects)", fontsize=8)
        ax.set_title(f"EEGMMI imagery LOSO, probe on {readout} tokens\n{REFERENCE} "
                     f"{rows[REFERENCE]['mean']:.3f}; {len(result['seeds'])} seeds, {result['steps']} steps",
                     fontsize=9)
    fig.savefig(path, dpi=130)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=256)
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--readouts", nargs="+", default=["sensors"], choices=["sensors", "mean"])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--work", type=Path, default=None, help="keep shards here (default: a temp folder)")
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument("--plot", action="store_true", help="only redraw the figure from <out>/recipe_ablation.json")
    args = parser.parse_args()
    if args.plot:
        plot(json.loads((args.out / "recipe_ablation.json").read_text()), args.out / "recipe_ablation.png")
        return
    if REFERENCE not in args.recipes:
        args.recipes.insert(0, REFERENCE)
    root = data_dir() / "meeg" / "eegmmidb"
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    labelled = labelled_windows(root)
    scores: dict = {RANDOM: {}, **{r: {} for r in args.recipes}}
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        corpora = {s: list(stream(shards_without(root, s, work, work / "commands.log"), "train", shuffle_buffer=0))
                   for s in SUBJECTS}
        for recipe in args.recipes:
            t0 = time.perf_counter()
            config = model_config("tiny", **RECIPES[recipe])
            for seed in range(args.seeds):
                for s in SUBJECTS:
                    def on_point(step, model, s=s, seed=seed, recipe=recipe):
                        name = RANDOM if step == 0 else recipe
                        if step == 0 and recipe != REFERENCE:
                            return  # the random encoder is the reference recipe's step 0
                        for readout in args.readouts:
                            scores[name].setdefault(readout, {}).setdefault(seed, {})[s] = probe_scores(
                                model, labelled, s, seed, readout)

                    pretrain(config, corpora[s], args.steps, seed, args, (args.steps,), on_point)
            print(f"{recipe}: {args.seeds} seeds x {len(SUBJECTS)} held-out subjects "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
    readouts = {readout: summarise(scores, readout) for readout in args.readouts}
    for readout, results in readouts.items():
        report(results, readout)
    main_readout = readouts[args.readouts[0]]
    against = f"minus {REFERENCE}"
    winners = sorted((r for r in args.recipes if r != REFERENCE and main_readout[r][against]["ci_low"] > 0),
                     key=lambda r: -main_readout[r][against]["mean"])
    result = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "recipes": {r: RECIPES[r] for r in args.recipes}, "seeds": list(range(args.seeds)),
              "steps": args.steps, "corpus_windows": {s: len(c) for s, c in corpora.items()},
              "minutes": (time.perf_counter() - start) / 60, "readouts": readouts,
              "winners": winners}
    print(f"\nrecipes whose paired difference to the reference has a CI above 0: {winners or 'none'}")
    write_text_atomic(args.out / "recipe_ablation.json", json.dumps(result, indent=2, default=float))
    plot(result, args.out / "recipe_ablation.png")
    print(f"metrics: {args.out}/recipe_ablation.json; figure: {args.out}/recipe_ablation.png "
          f"({result['minutes']:.1f} min)")


if __name__ == "__main__":
    main()
