#!/bin/bash
# Multi-node pretraining without SLURM: run this on every node with NODE_RANK=0..NNODES-1.
#   MASTER_ADDR=10.0.0.1 NNODES=2 NODE_RANK=0 GPUS=8 scripts/torchrun_pretrain.sh data.shards=/data/shards
set -euo pipefail
torchrun --nnodes="${NNODES:-2}" --node_rank="${NODE_RANK:?set NODE_RANK}" \
    --nproc_per_node="${GPUS:-8}" --master_addr="${MASTER_ADDR:?set MASTER_ADDR}" \
    --master_port="${MASTER_PORT:-29500}" \
    -m neurofm.cli pretrain trainer=ddp trainer.devices="${GPUS:-8}" trainer.num_nodes="${NNODES:-2}" \
    data=shards resume=auto "$@"
