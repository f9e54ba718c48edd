"""One command that measures neurofm on one CUDA device, in one table (defaults sized for 8 minutes; not yet timed on a GPU).

On a corpus it makes itself (the offline demo corpus: synthetic EEG and fMRI tables, written
and sharded by ``neurofm prepare``'s code; nothing to upload):

1. ``neurofm pretrain`` as a user runs it, for each model size (``small``, ``base``) and
   trainer (``ddp`` on 1 device, ``deepspeed_stage_2``, ``deepspeed_stage_3``), bf16:
   tokens/s, step time, peak memory (``metrics.csv``'s ``perf/*`` columns, median over the
   second half of the run) and model FLOPs utilisation against the device's dense bf16 peak.
   FLOPs per step = 6 x (encoder parameters x visible tokens + decoder parameters x all
   tokens) (the 6·N·T rule per part; attention scores and embeddings not counted, so MFU
   is a slight underestimate).
2. Which SDPA kernel ran (flash, memory-efficient, cuDNN or math; from the profiler's kernel
   names) in the encoder for an unpadded and a padded batch.
3. The fair plain-MAE reference step (``train_step.py``'s) against neurofm's step on the same
   device and batch: the ratio of their step times.
4. ZeRO-3 -> ``neurofm export`` -> ``neurofm.load``: the exported model's embeddings against
   the live engine's (its partitioned parameters gathered), DeepSpeed's own engine on one
   rank, fp32, so equality is exact.
5. Resume from the ZeRO-2 run's checkpoint: a second ``neurofm pretrain`` with a higher
   ``trainer.max_steps`` continues at the step the first one ended on.

``--dry-run`` runs the same code paths on CPU with ``tiny`` and ``trainer=cpu`` (and DeepSpeed
on CPU through gloo), in about a minute; a test runs it, so this script cannot rot. Writes
``<out>/gpu.json`` (``gpu_dry_run.json`` for a dry run).

usage: python benchmarks/gpu.py [--dry-run] [--steps 200] [--batch 32] [--work DIR] [--out docs]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

from _common import neurofm_cli

from neurofm.testing import free_port

# the SDPA kernel -> the op it dispatches to (any suffix, e.g. _for_cpu); none of them: math
SDPA_OPS = {"flash": "_flash_attention", "memory-efficient": "_efficient_attention", "cudnn": "_cudnn_attention"}
# dense bf16 peak FLOP/s from the vendors' datasheets (no sparsity)
BF16_PEAK = {"H100 SXM": 989e12, "H100 NVL": 835e12, "H100 PCIe": 756e12, "H100": 989e12, "H200": 989e12,
             "GH200": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12}


def peak_flops(name: str) -> float | None:
    """The dense bf16 peak of a device named ``name`` (the longest matching key), or None."""
    found = [key for key in BF16_PEAK if key.replace(" ", "").lower() in name.replace(" ", "").lower()]
    return BF16_PEAK[max(found, key=len)] if found else None


def flops_per_token(config) -> float:
    """Training FLOPs per real token: 6 x (encoder params x (1 - mask ratio) + decoder params)."""
    from neurofm.models.mae import DECODER_PARTS, MaskedAutoencoder

    model = MaskedAutoencoder(config)
    decoder = sum(p.numel() for name, p in model.named_parameters() if name.split(".")[0] in DECODER_PARTS)
    encoder = sum(p.numel() for name, p in model.named_parameters() if name.split(".")[0] == "encoder")
    return 6.0 * (encoder * (1.0 - config.mask_ratio) + decoder)


def run_metrics(run_dir: Path) -> dict:
    """Median step time and tokens/s over the second half of the ``perf/*`` rows; peak memory."""
    import pandas as pd

    table = pd.read_csv(run_dir / "metrics.csv")
    perf = table.dropna(subset=["perf/step_s"]) if "perf/step_s" in table else table.iloc[:0]
    if perf.empty:
        sys.exit(f"{run_dir / 'metrics.csv'} has no perf/* rows: raise --steps")
    late = perf.iloc[len(perf) // 2:]
    out = {"step_s": float(late["perf/step_s"].median()), "tokens_per_s": float(late["perf/tokens_per_s"].median()),
           "steps": int(table["step"].max()) + 1}
    if "perf/peak_mem_gb" in perf:
        out["peak_mem_gb"] = float(perf["perf/peak_mem_gb"].max())
    return out


def pretrain_runs(corpus: Path, args, work: Path, log: Path, device_name: str) -> list[dict]:
    from neurofm.models.config import ModelConfig

    sizes = ["tiny"] if args.dry_run else ["small", "base"]
    trainers = ["cpu"] if args.dry_run else ["ddp", "deepspeed_stage_2", "deepspeed_stage_3"]
    precision = "32-true" if args.dry_run else "bf16-mixed"
    peak = None if args.dry_run else peak_flops(device_name)
    rows = []
    for size in sizes:
        per_token = flops_per_token(ModelConfig.named(size))
        for trainer in trainers:
            run_dir = work / f"{size}_{trainer}"
            seconds = neurofm_cli("pretrain", "data=shards", f"data.shards={corpus}", f"model={size}",
                              f"trainer={trainer}", "trainer.devices=1", f"trainer.precision={precision}",
                              f"trainer.max_steps={args.steps}", f"trainer.log_every_n_steps={args.every}",
                              f"data.batch_size={args.batch}", "data.num_workers=2",
                              f"checkpoint.every_n_steps={args.steps}", f"val_every_n_steps={args.steps}",
                              "val_batches=2", f"run_dir={run_dir}", log=log)
            m = run_metrics(run_dir)
            flops = per_token * m["tokens_per_s"]
            rows.append({"model": size, "trainer": trainer, "precision": precision, "wall_s": seconds, **m,
                         "tflops": flops / 1e12, "mfu": flops / peak if peak else None, "run_dir": str(run_dir)})
            print(f"  {size:5s} {trainer:18s} {m['step_s'] * 1e3:8.1f} ms/step {m['tokens_per_s']:10.0f} tokens/s "
                  f"({seconds:.0f} s)", flush=True)
    return rows


def sdpa_kernels(segments, device: str, dtype) -> dict:
    """Which attention kernel the encoder ran, from the profiler's op names, for ``segments``
    as a batch (no padding) and with 3 sensors of the first window cut (padded in the batch)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from neurofm.batch import collate_segments
    from neurofm.models.config import ModelConfig
    from neurofm.models.mae import MaskedAutoencoder
    from neurofm.tokenizers.segment import Segment

    model = MaskedAutoencoder(ModelConfig.named("tiny" if device == "cpu" else "small")).to(device).eval()
    first = segments[0]
    fewer = Segment(first.signal[:-3], first.positions[:-3], first.orientations[:-3], first.kinds[:-3], first.meta)
    found = {}
    for name, group in (("unpadded", segments), ("padded", [fewer, *segments[1:]])):
        b = collate_segments(group).to(device)
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
        with torch.no_grad(), torch.autocast(device_type=device, dtype=dtype, enabled=device == "cuda"), \
                profile(activities=activities) as prof:
            model.encode_every_token(b)
        # the op SDPA dispatched to: aten::_scaled_dot_product_{flash,efficient,cudnn}_attention
        # (any suffix, e.g. _for_cpu), or none of them: the math path (matmul + softmax)
        ops = sorted({e.name for e in prof.events() if "_scaled_dot_product_" in e.name.lower()})
        joined = " ".join(ops).lower()
        kernel = next((label for label, op in SDPA_OPS.items() if op in joined), "math")
        found[name] = {"kernel": kernel, "ops": ops, "padded": name == "padded"}
        print(f"  SDPA, {name} batch: {kernel}", flush=True)
    return found


def reference_ratio(segments, device: str, dtype, steps: int) -> dict:
    """neurofm's MAE step against the plain MAE step (``train_step.py``) on one batch."""
    import torch
    from train_step import PlainMAE, interleaved, training_step

    from neurofm.batch import collate_segments
    from neurofm.models.config import ModelConfig
    from neurofm.models.mae import MaskedAutoencoder

    size = "tiny" if device == "cpu" else "small"
    cfg = ModelConfig.named(size)
    same = [s for s in segments if s.signal.shape == segments[0].signal.shape]  # one shape: no padding
    batch = collate_segments(same).to(device)
    torch.manual_seed(0)
    ours = MaskedAutoencoder(cfg).to(device)
    patches = batch.signal.reshape(batch.signal.shape[0], -1, cfg.patch_len)
    plain = PlainMAE(cfg, patches.shape[1]).to(device)
    times = interleaved({"neurofm": training_step(ours, lambda: ours(batch)["loss"], device, dtype),
                         "plain": training_step(plain, lambda: plain(patches), device, dtype)}, steps, device)
    ratio = times["plain"] / times["neurofm"]
    print(f"  {size}: neurofm {times['neurofm'] * 1e3:.1f} ms/step, plain MAE {times['plain'] * 1e3:.1f} ms/step: "
          f"{ratio:.2f}x", flush=True)
    return {"model": size, "windows": len(same), "neurofm_step_s": times["neurofm"], "plain_step_s": times["plain"],
            "ratio": ratio}


def zero3_export_matches_live(segments, corpus_batch: int, device: str, work: Path) -> dict:
    """Train a few steps with DeepSpeed's engine at ZeRO stage 3 (one rank, fp32), save, then
    compare the live engine's embeddings (parameters gathered) with those of
    ``neurofm export`` -> ``neurofm.load``."""
    import importlib
    from dataclasses import asdict

    import deepspeed
    import torch

    import neurofm
    from neurofm.batch import collate_segments
    from neurofm.models.backbone import mean_pool
    from neurofm.models.config import ModelConfig
    from neurofm.models.io import export_checkpoint
    from neurofm.models.mae import MaskedAutoencoder

    port = free_port()
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if device == "cpu":
        # gloo does the collectives; skip DeepSpeed's C++ shared-memory all-reduce (a JIT build)
        importlib.import_module("deepspeed.comm.torch").build_shm_op = lambda: None
    deepspeed.init_distributed(dist_backend="gloo" if device == "cpu" else "nccl")
    config = ModelConfig.named("tiny" if device == "cpu" else "small")
    torch.manual_seed(0)
    model = MaskedAutoencoder(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config={
        "train_micro_batch_size_per_gpu": corpus_batch, "gradient_clipping": 1.0,
        "zero_optimization": {"stage": 3}, "zero_allow_untested_optimizer": True})
    same = [s for s in segments if s.signal.shape == segments[0].signal.shape][:corpus_batch]
    batch = collate_segments(same).to(engine.device)
    for _ in range(4):
        engine.backward(engine(batch)["loss"])
        engine.step()
    out = work / "zero3"
    engine.save_checkpoint(str(out), tag="step4", client_state={"hyper_parameters": {"model": asdict(config)}})
    engine.eval()
    with torch.no_grad(), deepspeed.zero.GatheredParameters(list(engine.module.parameters())):
        live = mean_pool(*engine.module.encode_every_token(batch)).float().cpu()
    torch.distributed.destroy_process_group()
    exported = export_checkpoint(out, work / "zero3_export")
    loaded = neurofm.load(exported, device=str(batch.signal.device))
    with torch.no_grad():
        again = mean_pool(*loaded.model.encode_every_token(batch)).float().cpu()
    diff = float((live - again).abs().max())
    print(f"  ZeRO-3 -> export -> load: max |embedding difference| vs the live engine {diff:.2e}", flush=True)
    return {"max_abs_diff": diff, "embedding_dim": int(live.shape[-1]), "windows": int(live.shape[0])}


def resume_from(row: dict, corpus: Path, args, log: Path) -> dict:
    """Pretrain the run of ``row`` further: it must continue at the step it ended on."""
    run_dir = Path(row["run_dir"])
    extra = args.every * max(2, args.steps // (4 * args.every))  # a whole number of log rows
    before = log.read_text()
    neurofm_cli("pretrain", "data=shards", f"data.shards={corpus}", f"model={row['model']}", f"trainer={row['trainer']}",
            "trainer.devices=1", f"trainer.precision={row['precision']}", f"trainer.max_steps={args.steps + extra}",
            f"trainer.log_every_n_steps={args.every}", f"data.batch_size={args.batch}", "data.num_workers=2",
            f"checkpoint.every_n_steps={args.steps}", f"val_every_n_steps={args.steps}", "val_batches=2",
            f"run_dir={run_dir}", "resume=auto", log=log)
    said = log.read_text()[len(before):]
    found = re.search(r"resuming at (?:step )?(\d+)", said)
    resumed_at = int(found.group(1)) if found else None
    import pandas as pd

    last = int(pd.read_csv(run_dir / "metrics.csv")["step"].max()) + 1
    ok = resumed_at == args.steps and last == args.steps + extra
    print(f"  resume {row['trainer']}: continued at step {resumed_at} (ended at {args.steps}), now at {last} "
          f"of {args.steps + extra}: {'ok' if ok else 'WRONG'}", flush=True)
    return {"trainer": row["trainer"], "ended_at": args.steps, "resumed_at": resumed_at, "now_at": last, "ok": ok}


def table(result: dict) -> str:
    lines = [f"neurofm on {result['device']} ({'dry run' if result['dry_run'] else 'bf16'}), "
             f"{result['minutes']:.1f} min", "",
             "| model | trainer | ms/step | tokens/s | TFLOP/s | MFU | peak GB |", "|---|---|---:|---:|---:|---:|---:|"]
    for r in result["pretrain"]:
        mfu = f"{r['mfu']:.1%}" if r.get("mfu") is not None else "n/a"
        mem = f"{r['peak_mem_gb']:.1f}" if r.get("peak_mem_gb") is not None else "n/a"
        lines.append(f"| {r['model']} | {r['trainer']} | {r['step_s'] * 1e3:.1f} | {r['tokens_per_s']:,.0f} | "
                     f"{r['tflops']:.2f} | {mfu} | {mem} |")
    k, ref, z, res = result["sdpa"], result["reference"], result["zero3_export"], result["resume"]
    lines += ["", f"SDPA kernel: unpadded {k['unpadded']['kernel']}, padded {k['padded']['kernel']}",
              f"plain MAE step / neurofm step ({ref['model']}): {ref['ratio']:.2f}x",
              f"ZeRO-3 -> export -> load, max |embedding difference| vs the live engine: {z['max_abs_diff']:.2e}",
              f"resume ({res['trainer']}): ended at {res['ended_at']}, continued at {res['resumed_at']}, "
              f"now at {res['now_at']}: {'ok' if res['ok'] else 'WRONG'}"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny, trainer=cpu: the same code paths")
    parser.add_argument("--steps", type=int, default=None, help="pretraining steps per run (200; dry run 20)")
    parser.add_argument("--batch", type=int, default=None, help="windows per batch (32; dry run 4)")
    parser.add_argument("--work", type=Path, default=None, help="keep the corpus and runs here")
    parser.add_argument("--out", type=Path, default=Path("docs"))
    args = parser.parse_args()
    args.steps = args.steps or (20 if args.dry_run else 200)
    args.batch = args.batch or (4 if args.dry_run else 32)
    args.every = max(2, args.steps // 20)
    if args.dry_run:
        os.environ["DS_ACCELERATOR"] = "cpu"  # DeepSpeed on CPU (read when it is imported)
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        sys.exit("no CUDA device: run with --dry-run on CPU")
    device = "cpu" if args.dry_run else "cuda"
    dtype = torch.float32 if args.dry_run else torch.bfloat16
    device_name = "CPU" if args.dry_run else torch.cuda.get_device_name(0)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        log = work / "commands.log"
        from neurofm.datasets import stream
        from neurofm.pretrain.train import prepare_demo

        corpus = prepare_demo(work / "demo", seed=0)
        eeg = [s for s in stream(corpus, None, shuffle_buffer=0) if s.modality == "eeg"][: args.batch]
        print(f"{device_name}: corpus {corpus}", flush=True)
        result = {"device": device_name, "dry_run": args.dry_run, "torch": torch.__version__,
                  "cuda": torch.version.cuda, "steps": args.steps, "batch": args.batch,
                  "flops_formula": "6 x (encoder params x visible tokens + decoder params x all tokens) per step",
                  "bf16_peak_flops": None if args.dry_run else peak_flops(device_name)}
        result["pretrain"] = pretrain_runs(corpus, args, work, log, device_name)
        result["sdpa"] = sdpa_kernels(eeg, device, dtype)
        result["reference"] = reference_ratio(eeg, device, dtype, steps=3 if args.dry_run else 20)
        result["zero3_export"] = zero3_export_matches_live(eeg, len(eeg), device, work)
        zero2 = next(r for r in result["pretrain"] if r["trainer"] in ("deepspeed_stage_2", "cpu"))
        result["resume"] = resume_from(zero2, corpus, args, log)
        result["minutes"] = (time.perf_counter() - start) / 60
    args.out.mkdir(parents=True, exist_ok=True)
    name = "gpu_dry_run.json" if args.dry_run else "gpu.json"
    (args.out / name).write_text(json.dumps(result, indent=2))
    print("\n" + table(result))
    print(f"\n{args.out / name}")


if __name__ == "__main__":
    main()
