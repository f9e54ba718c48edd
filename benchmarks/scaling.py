"""Benchmark: cost of one MAE training step as recordings grow.

Windows from 19 EEG channels x 10 s (190 tokens) to 306 MEG sensors x 60 s (18,360 tokens)
and 400 parcels x 10 min (40,000 tokens), with the sensor geometry of real recordings in
../shared/data (an eegmmidb EDF cap, the Neuromag file, Schaefer-400 centroids); values are
noise (cost does not depend on them). For each window: the full step (embeddings, mixed
masking, encoder on the visible quarter, decoder, loss, backward, AdamW) with and without
`spatial_latents`, for each attention backend that runs here. Each measurement runs in its
own process: step time (best of the timed steps after one warm-up) and peak memory of the
step: activations and gradients, not weights or optimizer state (on CPU the peak resident set
over the timed steps minus the resident set before them; on GPU
`torch.cuda.max_memory_allocated`).

A series stops measuring once its fitted power law predicts a step above `--max-step-s` or
memory above `--max-gb`; those points, and where memory runs out on a 24 GiB machine and an
80 GB GPU, are computed from the fit (marked as such). Writes docs/scaling.{json,png}.

usage: python benchmarks/scaling.py [--model small] [--latents 16] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from _common import ROOT, data_dir

warnings.simplefilter("ignore")

# (label, modality, sensors, seconds); fMRI at TR 2 s, EEG/MEG at 200 Hz
WINDOWS = [
    ("EEG 19 ch x 10 s", "eeg", 19, 10.0),
    ("EEG 64 ch x 10 s", "eeg", 64, 10.0),
    ("MEG 306 x 10 s", "meg", 306, 10.0),
    ("fMRI 400 x 2 min", "fmri", 400, 120.0),
    ("MEG 306 x 30 s", "meg", 306, 30.0),
    ("MEG 306 x 60 s", "meg", 306, 60.0),
    ("fMRI 400 x 5 min", "fmri", 400, 300.0),
    ("fMRI 400 x 10 min", "fmri", 400, 600.0),
]
SFREQ = {"eeg": 200.0, "meg": 200.0, "fmri": 0.5}
EEG_19 = ["Fp1", "Fp2", "F7", "F3", "Fz", "F4", "F8", "T7", "C3", "Cz", "C4", "T8", "P7", "P3", "Pz",
          "P4", "P8", "O1", "O2"]
GIB = 2**30


def geometry(modality: str, sensors: int) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Positions, orientations and kinds of real sensors: ``sensors`` of them."""
    import mne

    from neurofm.tokenizers import tokenize_raw
    from neurofm.tokenizers.atlas import parcellate

    mne.set_log_level("ERROR")
    data = data_dir()
    if modality == "fmri":
        parc = parcellate(str(data / "atlases" / "Schaefer400_space-MNI152NLin6_res-2x2x2.nii.gz"))
        pos = parc.centroids_mm[:sensors] / 1000.0
        return pos.astype(np.float32), np.zeros_like(pos, dtype=np.float32), ("parcel",) * len(pos)
    if modality == "meg":
        raw = mne.io.read_raw_fif(data / "meeg" / "neuromag" / "sample_audvis_trunc_raw_sss.fif",
                                  preload=True).pick("meg")
    else:
        raw = mne.io.read_raw_edf(data / "meeg" / "eegmmidb" / "S001" / "S001R04.edf", preload=True)
        if sensors == 19:  # PhysioNet writes 'Fp1.', 'Cz..'
            raw.pick([next(c for c in raw.ch_names if c.strip(".").lower() == name.lower()) for name in EEG_19])
    seg = next(iter(tokenize_raw(raw, window_s=min(1.0, raw.times[-1]))))
    assert seg.n_sensors >= sensors, (modality, seg.n_sensors, sensors)
    return seg.positions[:sensors], seg.orientations[:sensors], seg.kinds[:sensors]


def window_tokens(window: int, model: str, batch: int) -> tuple[int, int]:
    """(samples per sensor, tokens in the batch) of ``WINDOWS[window]`` for ``model``'s patches."""
    from neurofm.batch import patch_samples
    from neurofm.models.config import ModelConfig

    _, modality, sensors, seconds = WINDOWS[window]
    n_times = int(round(seconds * SFREQ[modality]))
    patch = patch_samples(ModelConfig.named(model).patch_s[modality], SFREQ[modality])
    return n_times, sensors * (n_times // patch) * batch


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def reset_peak_rss() -> None:
    """Linux: start a new peak resident set (VmHWM) from the current one."""
    Path("/proc/self/clear_refs").write_text("5")


def peak_rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure_one(args: argparse.Namespace) -> dict:
    """One window x latents x backend, in this (fresh) process."""
    import torch

    from neurofm.batch import collate_segments
    from neurofm.models.config import ModelConfig
    from neurofm.models.mae import MaskedAutoencoder
    from neurofm.tokenizers import Segment

    torch.manual_seed(0)
    label, modality, sensors, _ = WINDOWS[args.window]
    pos, ori, kinds = geometry(modality, sensors)
    n_times, tokens = window_tokens(args.window, args.model, args.batch)
    rng = np.random.default_rng(0)
    segments = [Segment(rng.standard_normal((sensors, n_times), dtype=np.float32), pos, ori, kinds,
                        {"modality": modality, "sfreq": SFREQ[modality]}) for _ in range(args.batch)]
    batch = collate_segments(segments).to(args.device)
    cfg = ModelConfig.named(args.model, spatial_latents=args.latents or None, attention=args.backend)
    model = MaskedAutoencoder(cfg).to(args.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    cuda = args.device.startswith("cuda")

    def step():
        loss = model(batch)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if cuda:
            torch.cuda.synchronize()

    step()  # warm-up: allocates AdamW's state, which the peak below leaves out
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        reset_peak_rss()
        base = rss_bytes()
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    peak = (torch.cuda.max_memory_allocated() if cuda else peak_rss_bytes()) - base
    return {"window": label, "tokens": tokens, "latents": args.latents, "backend": args.backend,
            "step_s": min(times), "peak_bytes": int(peak), "measured": True}


def fit(points: list[dict], key: str) -> tuple[float, float] | None:
    """Power law ``y = a * tokens^b`` through the measured points above 1,000 tokens (where
    the per-step constant no longer dominates): ``(a, b)``, or None with fewer than 2."""
    pts = [(p["tokens"], p[key]) for p in points if p["measured"] and p["tokens"] >= 1000 and p[key] > 0]
    if len(pts) < 2:
        return None
    x, y = np.log([t for t, _ in pts]), np.log([v for _, v in pts])
    b, log_a = np.polyfit(x, y, 1)
    return float(math.exp(log_a)), float(b)


def backends(device: str) -> list[str]:
    from neurofm.errors import ConfigError
    from neurofm.models.encoder import check_backend

    found = []
    for name in ("sdpa", "math", "xformers"):
        try:
            check_backend(name)
            found.append(name)
        except ConfigError:
            continue
    return found if device.startswith("cuda") else [b for b in found if b != "xformers"]


def series(args: argparse.Namespace, latents: int, backend: str) -> list[dict]:
    points: list[dict] = []
    for i, (label, *_) in enumerate(WINDOWS):
        tokens = window_tokens(i, args.model, args.batch)[1]
        t_fit, m_fit = fit(points, "step_s"), fit(points, "peak_bytes")
        predicted_s = t_fit[0] * tokens ** t_fit[1] if t_fit else 0.0
        predicted_b = m_fit[0] * tokens ** m_fit[1] if m_fit else 0.0
        if predicted_s > args.max_step_s or predicted_b > args.max_gb * GIB:
            points.append({"window": label, "tokens": tokens, "latents": latents, "backend": backend,
                           "step_s": predicted_s, "peak_bytes": int(predicted_b), "measured": False})
            print(f"  {label:20s} {tokens:7d} tokens  computed: {predicted_s:8.2f} s  "
                  f"{predicted_b / GIB:7.2f} GiB (over the measuring limits)", flush=True)
            continue
        cmd = [sys.executable, __file__, "--one", str(i), "--model", args.model, "--batch", str(args.batch),
               "--latents", str(latents), "--backend", backend, "--device", args.device,
               "--steps", str(args.steps)]
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT / "benchmarks")
        if done.returncode:
            print(f"  {label:20s} failed: {done.stderr.strip().splitlines()[-1:]}", flush=True)
            continue
        point = json.loads(done.stdout.strip().splitlines()[-1])
        points.append(point)
        print(f"  {label:20s} {tokens:7d} tokens  {point['step_s']:8.2f} s  "
              f"{point['peak_bytes'] / GIB:7.2f} GiB  {tokens / point['step_s']:8.0f} tokens/s", flush=True)
    return points


def limit_tokens(m_fit: tuple[float, float] | None, budget_bytes: float) -> float | None:
    return None if m_fit is None or m_fit[1] <= 0 else (budget_bytes / m_fit[0]) ** (1 / m_fit[1])


def plot(results: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for run in results:
        name = f"{run['backend']}, " + (f"{run['latents']} latents" if run["latents"] else "all sensors")
        for ax, key, scale in ((axes[0], "step_s", 1.0), (axes[1], "peak_bytes", GIB)):
            pts = sorted(run["points"], key=lambda p: p["tokens"])
            x = [p["tokens"] for p in pts]
            y = [p[key] / scale for p in pts]
            (line,) = ax.plot(x, y, "-", label=name)
            ax.plot([p["tokens"] for p in pts if p["measured"]], [p[key] / scale for p in pts if p["measured"]],
                    "o", color=line.get_color())
            ax.plot([p["tokens"] for p in pts if not p["measured"]],
                    [p[key] / scale for p in pts if not p["measured"]], "x", color=line.get_color())
    axes[0].set(xscale="log", yscale="log", xlabel="tokens per window", ylabel="training step, s",
                title="step time (o measured, x computed)")
    axes[1].set(xscale="log", yscale="log", xlabel="tokens per window", ylabel="peak memory, GiB",
                title="peak memory of the step")
    axes[1].axhline(24, color="grey", ls=":")
    axes[1].text(200, 26, "24 GiB", color="grey")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="small")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--latents", type=int, default=16, help="spatial_latents of the compressed series")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=2, help="timed steps after one warm-up")
    parser.add_argument("--max-step-s", type=float, default=60.0)
    parser.add_argument("--max-gb", type=float, default=10.0)
    parser.add_argument("--backend", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(ROOT / "docs" / "scaling"))
    args = parser.parse_args()
    if args.one is not None:
        args.window = args.one
        print(json.dumps(measure_one(args)))
        return
    import torch

    machine = (torch.cuda.get_device_name() if args.device.startswith("cuda")
               else f"{torch.get_num_threads()} CPU threads, float32")
    print(f"{args.model}, batch {args.batch}, {machine}")
    results = []
    for latents in (0, args.latents):
        for backend in backends(args.device):
            print(f"{backend}, {'spatial_latents=' + str(latents) if latents else 'no spatial_latents'}:",
                  flush=True)
            points = series(args, latents, backend)
            t_fit, m_fit = fit(points, "step_s"), fit(points, "peak_bytes")
            run = {"latents": latents, "backend": backend, "points": points,
                   "time_exponent": t_fit and t_fit[1], "memory_exponent": m_fit and m_fit[1],
                   "max_tokens_24GiB": limit_tokens(m_fit, 24 * GIB), "max_tokens_80GB": limit_tokens(m_fit, 80e9)}
            results.append(run)
            fmt = lambda v: "n/a" if v is None else f"{v:,.0f}"  # noqa: E731
            print(f"  fit: time ~ tokens^{run['time_exponent'] or float('nan'):.2f}, memory ~ "
                  f"tokens^{run['memory_exponent'] or float('nan'):.2f}; memory runs out at "
                  f"{fmt(run['max_tokens_24GiB'])} tokens (24 GiB), {fmt(run['max_tokens_80GB'])} (80 GB)",
                  flush=True)
    by_window = {}
    for run in results:
        for p in run["points"]:
            by_window.setdefault(p["window"], {})[(run["backend"], run["latents"])] = p
    sdpa = backends(args.device)[0]
    print(f"\n{sdpa}: step time with spatial_latents={args.latents} relative to EEG 19 ch x 10 s")
    small = by_window[WINDOWS[0][0]]
    for label, points in by_window.items():
        full, comp = points.get((sdpa, 0)), points.get((sdpa, args.latents))
        if full and comp:
            print(f"  {label:20s} all sensors {full['step_s'] / small[(sdpa, 0)]['step_s']:7.1f}x   "
                  f"compressed {comp['step_s'] / small[(sdpa, args.latents)]['step_s']:7.1f}x   "
                  f"compressed / all sensors {comp['step_s'] / full['step_s']:5.2f}"
                  + ("" if full["measured"] and comp["measured"] else "  (computed)"))
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps({"model": args.model, "batch": args.batch, "machine": machine,
                                                    "runs": results}, indent=1))
    plot(results, out.with_suffix(".png"))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
