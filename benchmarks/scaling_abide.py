"""Scaling curves on ABIDE: autism vs control, leave one site out, against pretraining steps
and against the fraction of the pretraining corpus used.

The 8 sites in ``../shared/data/abide`` are split in the two halves of ``abide.py``. For each
half and each seed, a ``tiny`` encoder (the package's default recipe: time masking at 0.5)
is pretrained on the half's CC200 tables (60 s windows, each site at its TR, no labels;
``neurofm pretrain``'s module and Lightning loop, as ``pretrain_scaling.py`` does; batches
of one site's rate), and probed on the *other* half:

- ``steps``: at step 0 (its random init) and at every ``--steps`` point (snapshots of that one
  run, as in ``pretrain_scaling.py``);
- ``data``: after ``--data-steps`` steps on a random ``--fractions`` share of the half's
  windows (drawn per seed, across its sites), each its own run.

The probe: token
connectivity readout (the correlation between parcels of their token sequences), a
logistic-regression probe on windows, leave one site out among that half's 4 sites, subject
predictions from the mean log-probability of their windows. No test site reaches its
pretraining.

Per point: balanced accuracy over the 321 subjects of both halves, mean ± sd over seeds; the
paired difference over the 8 sites (seed means) of the last point against the first (step 0,
the same architecture untrained; or the smallest fraction), bootstrap 95 % CI and Wilcoxon p;
a fit of score on log10(x) with its slope's 95 % CI. Writes ``<out>/scaling_abide_<curve>.json``
and ``<out>/scaling_abide.png`` (both curves when both JSONs exist).

usage: python benchmarks/scaling_abide.py [--curves steps data] [--seeds 3] [--steps 4 16 64 256]
       [--fractions 0.0625 0.25 1] [--data-steps 128] [--out docs]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from _common import ABIDE_TR_S, data_dir
from abide import HALVES
from matplotlib.figure import Figure
from pretrain_scaling import draw_curve, pretrain, report, summarise

from neurofm.datasets import PrepareOptions, join_phenotype, read_phenotype, tokenize_file
from neurofm.embedding import as_neurofm
from neurofm.finetune.classifier import linear_probe
from neurofm.finetune.disorder import aggregate_subjects, subject_labels
from neurofm.io import write_text_atomic
from neurofm.models.config import ModelConfig

SITES = tuple(s for half in HALVES for s in half)


def cohort(abide: Path, window_s: float) -> dict[str, list]:
    """Per site: its labelled windows (``DX_GROUP``; 1 autism, 2 control)."""
    options = PrepareOptions(fmri_window_s=window_s, roi_coords=str(abide / "CC200.nii.gz"), roi_tr_s=dict(ABIDE_TR_S))
    table = read_phenotype(abide / "Phenotypic_V1_0b_preprocessed1.csv", label_columns=["DX_GROUP", "SITE_ID"])
    out = {}
    for site in SITES:
        windows = [w for path in sorted((abide / "rois_cc200").glob(f"{site}_0*_rois_cc200.1D"))
                   for w in tokenize_file(path, options)]
        out[site] = subject_labels(join_phenotype(windows, table), "DX_GROUP")[:2]
    return out


def probe(model, data: dict, sites: tuple[str, ...], seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per test site: subject labels and predicted classes, the probe trained on the other sites."""
    windows = [w for s in sites for w in data[s][0]]
    labels = np.concatenate([data[s][1] for s in sites])
    site_of = np.concatenate([[s] * len(data[s][0]) for s in sites])
    subjects = np.array([str(w.meta["subject"]) for w in windows])
    features = as_neurofm(model).embed(windows, readout="connectivity").windows
    out = {}
    for site in sites:
        train, test = site_of != site, site_of == site
        prob = linear_probe(features[train], labels[train], features[test], seed)
        ids, subject_prob = aggregate_subjects(prob, subjects[test])
        truth = np.array([labels[test][subjects[test] == i][0] for i in ids])
        out[site] = (truth, subject_prob.argmax(1))
    return out


def plot(out: Path) -> None:
    curves = {c: json.loads((out / f"scaling_abide_{c}.json").read_text())
              for c in ("steps", "data") if (out / f"scaling_abide_{c}.json").exists()}
    fig = Figure(figsize=(5.4 * len(curves), 4.0), layout="constrained")
    for ax, (curve, result) in zip(np.atleast_1d(fig.subplots(1, len(curves))), curves.items(), strict=True):
        draw_curve(ax, result, "steps" if curve == "steps" else "fraction", "pretrained + probe (token connectivity)")
        ax.set_xlabel("pretraining steps (leftmost: step 0, the untrained encoder)" if curve == "steps"
                      else f"fraction of the half's windows ({result['settings']['data_steps']} steps)")
        ax.set_ylabel("balanced accuracy, leave one site out (8 sites)")
        ax.set_title(f"ABIDE autism vs control: {'steps' if curve == 'steps' else 'corpus size'}, "
                     f"{len(result['seeds'])} seeds (± sd)", fontsize=10)
        ax.legend(fontsize=8, loc="lower right")
    fig.savefig(out / "scaling_abide.png", dpi=130)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--curves", nargs="+", default=["steps", "data"], choices=["steps", "data"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, nargs="+", default=[4, 16, 64, 256])
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.0625, 0.25, 1.0])
    parser.add_argument("--data-steps", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--window", type=float, default=60.0, help="window length, s")
    parser.add_argument("--out", type=Path, default=Path("docs"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    data = cohort(data_dir() / "abide", args.window)
    print(f"{sum(len(d[0]) for d in data.values())} windows of {len(SITES)} sites "
          f"({time.perf_counter() - start:.0f} s)", flush=True)
    config = ModelConfig.named("tiny")
    for curve in args.curves:
        points: dict = {}
        for seed in range(args.seeds):
            for k, half in enumerate(HALVES):
                t0, tested = time.perf_counter(), HALVES[1 - k]
                corpus = [w for s in half for w in data[s][0]]

                def on_point(x, model, seed=seed, tested=tested, points=points) -> None:
                    for site, scores in probe(model, data, tested, seed).items():
                        points.setdefault(x, {}).setdefault(seed, {})[site] = scores

                if curve == "steps":
                    pretrain(config, corpus, max(args.steps), seed, args, tuple(args.steps), on_point)
                else:
                    rng = np.random.default_rng(1000 + seed)
                    for f in args.fractions:
                        n = max(args.batch, int(round(f * len(corpus))))
                        subset = [corpus[i] for i in sorted(rng.choice(len(corpus), n, replace=False))]
                        pretrain(config, subset, args.data_steps, seed, args, (args.data_steps,),
                                 lambda x, m, f=f, on_point=on_point: x and on_point(f, m))
                print(f"{curve}: seed {seed}, pretrained on {'+'.join(half)} ({len(corpus)} windows), probed on "
                      f"{'+'.join(tested)} ({time.perf_counter() - t0:.0f} s)", flush=True)
        x_name = "steps" if curve == "steps" else "fraction"
        result = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                  "recipe": {"mask_strategy": config.mask_strategy, "mask_ratio": config.mask_ratio},
                  "corpus_windows": {"+".join(h): sum(len(data[s][0]) for s in h) for h in HALVES},
                  "minutes": (time.perf_counter() - start) / 60, **summarise(points, x_name, groups=SITES)}
        report(result, x_name, over="sites")
        write_text_atomic(args.out / f"scaling_abide_{curve}.json", json.dumps(result, indent=2, default=float))
        plot(args.out)
    print(f"metrics: {args.out}/scaling_abide_*.json; figure: {args.out}/scaling_abide.png "
          f"({(time.perf_counter() - start) / 60:.1f} min)")


if __name__ == "__main__":
    main()
