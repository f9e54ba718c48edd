"""Run by tests/test_pretrain.py under torchrun: DeepSpeed's own engine, ZeRO stage N, on CPU.

usage: torchrun --nproc_per_node=2 tests/helpers/deepspeed_zero.py STAGE SHARDS OUT
"""

from __future__ import annotations

import os
import sys
from dataclasses import asdict

os.environ.setdefault("DS_ACCELERATOR", "cpu")

import importlib  # noqa: E402

import deepspeed  # noqa: E402
import torch  # noqa: E402

from neurofm.datasets import collate_segments, stream  # noqa: E402
from neurofm.models.mae import MaskedAutoencoder, ModelConfig  # noqa: E402


def main() -> None:
    stage, shards, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    # gloo does the collectives; skip DeepSpeed's C++ shared-memory all-reduce, a JIT build
    # that needs a compiler and blocks on a lock file if an earlier build was killed
    importlib.import_module("deepspeed.comm.torch").build_shm_op = lambda: None
    deepspeed.init_distributed(dist_backend="gloo")
    torch.manual_seed(0)
    config = ModelConfig()
    model = MaskedAutoencoder(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config={
        "train_micro_batch_size_per_gpu": 4, "gradient_clipping": 1.0,
        "zero_optimization": {"stage": stage}, "zero_allow_untested_optimizer": True})
    rank = torch.distributed.get_rank()
    segments = list(stream(shards, None, shuffle_buffer=0, rank=rank, world_size=2))
    losses = []
    for step in range(4):
        batch = collate_segments(segments[(4 * step) % len(segments):][:4] or segments[:4])
        loss = engine(batch)["loss"]
        engine.backward(loss)
        engine.step()
        losses.append(loss.item())
    engine.save_checkpoint(out, tag="step4", client_state={"hyper_parameters": {"model": asdict(config)}})
    if rank == 0:
        print("losses", " ".join(f"{x:.4f}" for x in losses), flush=True)
    # a clean teardown: a process group left alive at exit can abort in its threads' destructors
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
    # and end here: the interpreter's own shutdown still ran DeepSpeed's and gloo's thread
    # destructors, which now and then aborted ("terminate called without an active exception")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
