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

A second round (``--reference "time 0.5" --name recipe_ablation_round2``) starts from the
default the first chose and changes one thing at a time: a latent target (``target=latent``,
each masked token's representation by a moving-average teacher, as Brain-JEPA and EEGPT
align), the ``small`` model, and a wider pretraining corpus (every unlabelled EEG recording
of ``../shared/data/meeg`` beside the cohort's runs, :data:`EXTRA_EEG`).

Per recipe: balanced accuracy pooled over the 5 held-out subjects, mean ± sd over seeds; the
paired difference over subjects (seed means) against the reference recipe and against the same
encoder at step 0 (random weights), with a bootstrap 95 % CI and a Wilcoxon p. A recipe "wins"
when its difference to the reference has a CI above 0. The 5 subjects select the recipe: its
transfer is then to be judged on subjects that took no part in the choice. Writes
``<out>/recipe_ablation.json`` and ``<out>/recipe_ablation.png``.

usage: python benchmarks/recipe_ablation.py [--seeds 3] [--steps 256] [--recipes ...] [--reference R]
       [--name recipe_ablation] [--work DIR]
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

from neurofm.datasets import stream
from neurofm.finetune.metrics import paired_difference
from neurofm.io import write_text_atomic
from neurofm.models.config import ModelConfig
from neurofm.models.mae import MaskedAutoencoder

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
    # the second round, around the default that the first round chose (time 0.5)
    "latent target": {"mask_strategy": "time", "mask_ratio": 0.5, "target": "latent"},
    "small model": {"mask_strategy": "time", "mask_ratio": 0.5, "size": "small"},
    "wider corpus": {"mask_strategy": "time", "mask_ratio": 0.5, "corpus": "every unlabelled EEG"},
}.items()}
RANDOM = "step 0 (random weights)"
# the EEG recordings of ../shared/data/meeg outside EEGMMI (no labels used): what "every
# unlabelled EEG recording beside the cohort's own runs" adds, where a file holds one 4 s window
EXTRA_EEG = ("bdf/multiple_annotation_chans.bdf", "edf/test_reduced.edf", "brainvision/test.vhdr",
             "eeglab/test_raw.set", "eeglab/test_raw_chanloc.set", "egi/test_egi.raw")


def extra_corpus(meeg: Path) -> list:
    """4 s windows of :data:`EXTRA_EEG` (the EEGLAB tutorial with its published channel labels,
    which its file lacks; elsewhere channels with no known position are dropped); files shorter
    than one window add nothing."""
    from neurofm.datasets import PrepareOptions, tokenize_file
    from neurofm.errors import TooShortError
    from neurofm.testing import read_eeglab_tutorial
    from neurofm.tokenizers import tokenize_raw

    windows = []
    for name in EXTRA_EEG:
        try:
            if name == "eeglab/test_raw.set":
                windows += tokenize_raw(read_eeglab_tutorial(meeg), window_s=4.0)
            else:
                windows += tokenize_file(meeg / name, PrepareOptions(window_s=4.0, modality="eeg",
                                                                       meeg={"on_missing_positions": "drop"}))
        except TooShortError:
            continue
    return windows


def build(recipe: str) -> tuple:
    """(model config, corpus key) of a recipe: ``size`` and ``corpus`` are not model options."""
    overrides = dict(RECIPES[recipe])
    size, corpus = overrides.pop("size", "tiny"), overrides.pop("corpus", "cohort")
    return ModelConfig.named(size, **overrides), corpus


def summarise(scores: dict, readout: str, reference: str = REFERENCE) -> dict:
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
        for other in (reference, RANDOM):
            if recipe != other:
                result[f"minus {other}"] = paired_difference(
                    [result["per_subject"][k] for k in SUBJECTS], [out[other]["per_subject"][k] for k in SUBJECTS])
    return out


def report(results: dict, readout: str, reference: str = REFERENCE) -> None:
    print(f"\nreadout {readout}: balanced accuracy (mean ± sd over seeds), paired over subjects")
    print(f"{'recipe':26s} {'bal. acc.':>15s} {'− reference [95 % CI]':>28s} {'p':>6s} {'− step 0 [95 % CI]':>28s}")
    for recipe, r in results.items():
        cells = []
        for other in (reference, RANDOM):
            d = r.get(f"minus {other}")
            cells.append(f"{d['mean']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}] {d['wilcoxon_p']:6.3f}"
                         if d else "")
        print(f"{recipe:26s} {r['mean']:.3f} ± {r['sd']:.3f} {cells[0]:>35s} {cells[1]:>35s}", flush=True)


def plot(result: dict, path: Path) -> None:
    reference = result.get("reference", REFERENCE)
    readouts = list(result["readouts"])
    rows_shown = len(next(iter(result["readouts"].values()))) - 1
    fig = Figure(figsize=(5.5 * len(readouts), 0.4 * rows_shown + 1.6), layout="constrained")
    for ax, readout in zip(np.atleast_1d(fig.subplots(1, len(readouts))), readouts, strict=True):
        rows = result["readouts"][readout]
        names = [r for r in rows if r != reference]
        for i, name in enumerate(names):
            d = rows[name][f"minus {reference}"]
            ax.errorbar(d["mean"], i, xerr=[[d["mean"] - d["ci_low"]], [d["ci_high"] - d["mean"]]], fmt="o",
                        capsize=3, color="tab:red" if d["ci_low"] > 0 else "tab:blue" if d["ci_high"] < 0 else "k")
        ax.axvline(0.0, color="grey", lw=0.8, ls="--")
        ax.set_yticks(range(len(names)), [f"{n} ({rows[n]['mean']:.3f})" for n in names], fontsize=8)
        ax.set_ylim(len(names) - 0.5, -0.5)
        ax.xaxis.set_major_locator(MaxNLocator(5))
        ax.set_xlabel(f"paired Δ balanced accuracy vs {reference} (95 % CI over subjects)", fontsize=8)
        ax.set_title(f"EEGMMI imagery LOSO, probe on {readout} tokens\n{reference} "
                     f"{rows[reference]['mean']:.3f}; {len(result['seeds'])} seeds, {result['steps']} steps",
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
    parser.add_argument("--reference", default=REFERENCE, choices=list(RECIPES),
                        help="the recipe every other is paired against")
    parser.add_argument("--name", default="recipe_ablation", help="output stem: <out>/<name>.json and .png")
    parser.add_argument("--plot", action="store_true", help="only redraw the figure from <out>/<name>.json")
    args = parser.parse_args()
    if args.plot:
        plot(json.loads((args.out / f"{args.name}.json").read_text()), args.out / f"{args.name}.png")
        return
    reference = args.reference
    if reference not in args.recipes:
        args.recipes.insert(0, reference)
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
        extra = extra_corpus(root.parent) if any(build(r)[1] != "cohort" for r in args.recipes) else []
        for recipe in args.recipes:
            t0 = time.perf_counter()
            config, corpus = build(recipe)
            for seed in range(args.seeds):
                for s in SUBJECTS:
                    def on_point(step, model, s=s, seed=seed, recipe=recipe):
                        name = RANDOM if step == 0 else recipe
                        if step == 0 and recipe != reference:
                            return  # the random encoder is the reference recipe's step 0
                        for readout in args.readouts:
                            scores[name].setdefault(readout, {}).setdefault(seed, {})[s] = probe_scores(
                                model, labelled, s, seed, readout)

                    windows = corpora[s] + (extra if corpus != "cohort" else [])
                    pretrain(config, windows, args.steps, seed, args, (args.steps,), on_point)
            print(f"{recipe}: {args.seeds} seeds x {len(SUBJECTS)} held-out subjects "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
    readouts = {readout: summarise(scores, readout, reference) for readout in args.readouts}
    for readout, results in readouts.items():
        report(results, readout, reference)
    main_readout = readouts[args.readouts[0]]
    against = f"minus {reference}"
    winners = sorted((r for r in args.recipes if r != reference and main_readout[r][against]["ci_low"] > 0),
                     key=lambda r: -main_readout[r][against]["mean"])
    result = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "reference": reference, "recipes": {r: RECIPES[r] for r in args.recipes},
              "seeds": list(range(args.seeds)), "steps": args.steps,
              "corpus_windows": {s: len(c) for s, c in corpora.items()}, "extra_windows": len(extra),
              "parameters": {r: sum(p.numel() for p in MaskedAutoencoder(build(r)[0]).parameters() if p.requires_grad)
                             for r in args.recipes},
              "minutes": (time.perf_counter() - start) / 60, "readouts": readouts,
              "winners": winners}
    print(f"\nrecipes whose paired difference to the reference has a CI above 0: {winners or 'none'}")
    write_text_atomic(args.out / f"{args.name}.json", json.dumps(result, indent=2, default=float))
    plot(result, args.out / f"{args.name}.png")
    print(f"metrics: {args.out}/{args.name}.json; figure: {args.out}/{args.name}.png "
          f"({result['minutes']:.1f} min)")


if __name__ == "__main__":
    main()
