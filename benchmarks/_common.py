"""Helpers shared by the benchmark scripts: where the real data is, and timing."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# ABIDE-I repetition time per site, s (the PCP tables do not carry it)
ABIDE_TR_S = {"Caltech": 2.0, "KKI": 2.5, "Leuven_1": 1.66, "Leuven_2": 1.66, "Olin": 1.5, "Pitt": 1.5,
              "SDSU": 2.0, "Trinity": 2.0}


def data_dir() -> Path:
    env = os.environ.get("NEUROFM_TEST_DATA")
    for candidate in ([Path(env)] if env else []) + [ROOT.parent / "shared" / "data"]:
        if (candidate / "MANIFEST.md").exists():
            return candidate
    sys.exit("benchmark needs the real data: set NEUROFM_TEST_DATA or put it in ../shared/data")


def best_of(fn: Callable[[], object], repeats: int = 3) -> tuple[float, float]:
    """(best wall seconds, best CPU seconds of this process) over ``repeats`` runs."""
    walls, cpus = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return min(walls), min(cpus)


def eeglab_tutorial():
    """The real EEGLAB tutorial recording (preloaded), channels renamed to its labels."""
    from neurofm.testing import read_eeglab_tutorial

    return read_eeglab_tutorial(data_dir() / "meeg")


def pretrain_steps(config, batches, steps: int, lr: float, on_step: Callable | None = None,
                   model=None, warmup_steps: int | None = None):
    """``neurofm pretrain``'s module and loop on in-memory batches
    (:func:`neurofm.pretrain.in_memory.pretrain_on_batches`) at learning rate ``lr``;
    ``warmup_steps``: the schedule's warmup (default: ``OptimConfig``'s). Returns the model."""
    from neurofm.pretrain.config import OptimConfig
    from neurofm.pretrain.in_memory import pretrain_on_batches

    optim = OptimConfig(lr=lr) if warmup_steps is None else OptimConfig(lr=lr, warmup_steps=warmup_steps)
    return pretrain_on_batches(config, batches, steps, optim, on_step=on_step, model=model)


# --------------------------------------------------------------- cohort benchmarks (CLI runs)

def neurofm_cli(*args: str, log: Path) -> float:
    """Run ``neurofm <args>`` as a user would, output appended to ``log``; print the command's
    mode/readout/protocol and time; return its wall seconds; stop with the log's tail (the log
    may sit in a temporary folder that goes with the run) if it fails."""
    start = time.perf_counter()
    with log.open("a") as out:
        out.write(f"\n$ neurofm {' '.join(args)}\n")
        out.flush()
        result = subprocess.run([sys.executable, "-m", "neurofm.cli", *args], stdout=out, stderr=out)
    seconds = time.perf_counter() - start
    shown = " ".join(a for a in args[1:] if a.startswith(("task.mode", "task.readout", "task.protocol")))
    print(f"  neurofm {args[0]} {shown} ({seconds:.0f} s)", flush=True)
    if result.returncode != 0:
        sys.exit(f"neurofm {args[0]} failed (exit {result.returncode}); {log} ends:\n{log.read_text()[-3000:]}")
    return seconds


def add_pretrain_arguments(parser, *, steps: int, batch: int, window: float, per: str) -> None:
    """The pretraining options both cohort benchmarks take (``per``: what one pretraining is for)."""
    parser.add_argument("--steps", type=int, default=steps, help=f"pretraining steps per {per}")
    parser.add_argument("--batch", type=int, default=batch)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--window", type=float, default=window, help="pretraining window length, s")
    from neurofm.models.config import ModelConfig

    default = ModelConfig()   # the package's recipe unless told otherwise
    parser.add_argument("--mask", default=default.mask_strategy, help="random | channels | time | mixed "
                        f"(default: the package's, {default.mask_strategy})")
    parser.add_argument("--mask-ratio", type=float, default=default.mask_ratio)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="more `neurofm pretrain` overrides, e.g. model.interpolation_prior=true")
    parser.add_argument("--seeds", type=int, default=1,
                        help="seeds 0..N-1: pretraining init and data order, head init, fold shuffles")


def pretrain_and_export(shards: Path, run: Path, args, log: Path, shuffle_buffer: int,
                        seed: int = 0) -> Path:
    """``neurofm pretrain`` ``tiny`` on ``shards`` with ``args``' options (warmup 5 %, one
    checkpoint and one validation at the end) and ``seed``, then ``neurofm export``; the export
    folder. An export already in ``run`` (a ``--work`` folder of an earlier run) is reused."""
    if (run / "export" / "model.safetensors").exists():
        return run / "export"
    neurofm_cli("pretrain", f"seed={seed}", "data=shards", f"data.shards={shards}", "model=tiny",
                f"trainer.max_steps={args.steps}", f"data.batch_size={args.batch}", "data.num_workers=1",
                f"data.shuffle_buffer={shuffle_buffer}", f"model.mask_strategy={args.mask}",
                f"model.mask_ratio={args.mask_ratio}", f"optim.lr={args.lr}",
                f"optim.warmup_steps={max(1, args.steps // 20)}", f"checkpoint.every_n_steps={args.steps}",
                f"val_every_n_steps={args.steps}", "val_batches=5", f"run_dir={run}", "resume=null",
                *args.set, log=log)
    neurofm_cli("export", f"ckpt={run / 'checkpoints' / 'last.ckpt'}", f"out={run / 'export'}", log=log)
    return run / "export"


def binary_metrics(rows, positive: str, group: str, n_boot: int = 1000) -> tuple[dict, dict]:
    """Metrics of ``predictions.csv`` rows (columns ``label``, ``prob_<class>`` for two classes):
    pooled with 95 % bootstrap CIs, and the point values per ``group`` column value."""
    import numpy as np

    from neurofm.finetune.metrics import classification_metrics

    columns = sorted(c for c in rows.columns if c.startswith("prob_"))

    def score(part, n_boot):
        y = (part["label"].astype(str) == positive).to_numpy().astype(int)
        return classification_metrics(y, part[columns].to_numpy(np.float64), n_boot=n_boot)

    per_group = {key: {"n": len(part), **{k: v["value"] for k, v in score(part, 1).items()}}
                 for key, part in rows.groupby(group)}
    return score(rows, n_boot), per_group


def seeded_summary(rows, positive: str, group: str, n_boot: int = 1000) -> dict:
    """Per method of ``rows`` (columns ``method``, ``seed``, ``label``, ``prob_*``, ``group``):
    seed 0's pooled metrics with bootstrap CIs (``pooled``, for the figure), the pooled balanced
    accuracy and AUROC of every seed with their mean and sd (``over_seeds``), and each unit's
    (``group``: subject, site) balanced accuracy averaged over seeds (``per_<group>``)."""
    import numpy as np

    out = {}
    for method, part in rows.groupby("method", sort=False):
        seeds = {}
        for seed, rows_of_seed in part.groupby("seed"):
            pooled, per_unit = binary_metrics(rows_of_seed, positive, group, n_boot if seed == min(part["seed"]) else 1)
            seeds[int(seed)] = {"pooled": pooled, "per_unit": per_unit}
        first = seeds[min(seeds)]
        units = sorted(first["per_unit"])
        over = {k: {"values": [s["pooled"][k]["value"] for s in seeds.values()]}
                for k in ("balanced_accuracy", "auroc")}
        for v in over.values():
            v["mean"], v["sd"] = float(np.mean(v["values"])), float(np.std(v["values"], ddof=1)) if len(v["values"]) > 1 else 0.0
        out[method] = {"pooled": first["pooled"], "over_seeds": over, "seeds": sorted(seeds),
                       f"per_{group}": {u: {"balanced_accuracy": float(np.mean(
                           [s["per_unit"][u]["balanced_accuracy"] for s in seeds.values()])),
                           "n": first["per_unit"][u]["n"]} for u in units},
                       "n_events": int(len(part) // len(seeds))}
    return out


def paired_differences(methods: dict, pairs, group: str) -> dict:
    """``a − b`` for each ``(a, b)`` in ``pairs`` whose methods both ran: the paired difference
    of balanced accuracy over the units (``per_<group>``, seed-averaged) with its bootstrap CI
    and Wilcoxon p (:func:`neurofm.finetune.metrics.paired_difference`)."""
    from neurofm.finetune.metrics import paired_difference

    out = {}
    for a, b in pairs:
        if a not in methods or b not in methods:
            continue
        units = sorted(set(methods[a][f"per_{group}"]) & set(methods[b][f"per_{group}"]))
        score_a, score_b = ([methods[m][f"per_{group}"][u]["balanced_accuracy"] for u in units] for m in (a, b))
        out[f"{a} - {b}"] = {**paired_difference(score_a, score_b), "units": units}
    return out


def best_classical(methods: dict, classical) -> str:
    """The classical baseline with the highest seed-averaged pooled balanced accuracy."""
    ran = [m for m in classical if m in methods]
    return max(ran, key=lambda m: methods[m]["over_seeds"]["balanced_accuracy"]["mean"])


def print_seeded(methods: dict, differences: dict, labels: dict) -> None:
    """The methods' balanced accuracy (mean ± sd over seeds) and the paired differences."""
    print(f"{'method':44s} {'bal. acc. (mean ± sd)':>22s} {'AUROC':>14s} seeds")
    for method, r in methods.items():
        ba, auc = r["over_seeds"]["balanced_accuracy"], r["over_seeds"]["auroc"]
        print(f"{labels.get(method, method):44s} {ba['mean']:>13.3f} ± {ba['sd']:.3f} "
              f"{auc['mean']:>8.3f} ± {auc['sd']:.3f} {len(r['seeds'])}")
    if differences:
        print(f"\n{'paired difference (balanced accuracy)':58s} {'mean':>7s} {'95 % CI':>17s} {'p':>6s} wins")
        for name, d in differences.items():
            print(f"{name:58s} {d['mean']:+7.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}] "
                  f"{d['wilcoxon_p']:6.3f} {d['wins']}/{d['n']}")


def _difference_name(a: str, b: str) -> str:
    """``a − b``, the readout in parentheses said once when both share it."""
    shared = " (" + a.split(" (", 1)[1] if " (" in a else None
    return f"{a} − {b.removesuffix(shared)}" if shared and b.endswith(shared) else f"{a} − {b}"


def paired_panel(ax, differences: dict, labels: dict, fontsize: float | None = None) -> None:
    """One panel: each paired difference of balanced accuracy (mean over units) with its
    bootstrap 95 % CI, zero as a dashed line."""
    from matplotlib.ticker import MaxNLocator

    for i, d in enumerate(differences.values()):
        ax.errorbar(d["mean"], i, xerr=[[d["mean"] - d["ci_low"]], [d["ci_high"] - d["mean"]]], fmt="o",
                    color="tab:red" if d["ci_low"] > 0 else "k", capsize=3)
    names = [_difference_name(*(labels.get(m, m) for m in name.split(" - "))) for name in differences]
    ax.axvline(0.0, color="grey", lw=0.8, ls="--")
    ax.set_yticks(range(len(differences)), names, fontsize=fontsize)
    ax.invert_yaxis()
    ax.xaxis.set_major_locator(MaxNLocator(5))
    ax.set_xlabel("paired Δ balanced accuracy (95 % CI; red: above 0)")


def method_panel(ax, methods: dict, labels: dict, groups: str, fontsize: float | None = None) -> None:
    """One panel: pooled balanced accuracy with its CI per method, the ``groups`` (sites,
    subjects) as dots beside it, chance as a dashed line."""
    import numpy as np

    for i, result in enumerate(methods.values()):
        ba = result["pooled"]["balanced_accuracy"]
        ax.errorbar(ba["value"], i, xerr=[[ba["value"] - ba["ci_low"]], [ba["ci_high"] - ba["value"]]],
                    fmt="o", color="k", capsize=3)
        values = [v["balanced_accuracy"] for v in result[groups].values()]
        ax.scatter(values, np.full(len(values), i) + 0.2, s=10, color="tab:blue", alpha=0.6)
    ax.axvline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_yticks(range(len(methods)), [labels.get(m, m) for m in methods], fontsize=fontsize)
    ax.invert_yaxis()
