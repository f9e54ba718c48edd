"""``neurofm verify shards=DIR``: every shard against its manifest."""

from __future__ import annotations

from pathlib import Path

from neurofm.configs.schema import VerifyConfig, typed
from neurofm.console import logger, say
from neurofm.datasets.manifest import load_manifest
from neurofm.datasets.verify import verify_shards


def run_verify(cfg) -> int:
    """Exit 0 when every shard matches its manifest, 1 otherwise (each problem on a line)."""
    conf: VerifyConfig = typed(cfg)
    problems = verify_shards(conf.shards, decode=conf.decode)
    n = len(load_manifest(conf.shards)["shards"])
    if not problems:
        logger.info("%s: all %d shards match the manifest", conf.shards, n)
        return 0
    say("\n".join(f"{Path(conf.shards) / p['shard']}: {p['problem']}" for p in problems))
    logger.error("%s: %d of %d shards do not match the manifest", conf.shards, len(problems), n)
    return 1
