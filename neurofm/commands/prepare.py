"""``neurofm prepare``: recordings -> WebDataset shards + manifest (one node, or part I/N)."""

from __future__ import annotations

import os
from dataclasses import fields
from pathlib import Path

from neurofm.configs.schema import PrepareConfig, typed
from neurofm.console import logger
from neurofm.datasets.options import PrepareOptions
from neurofm.datasets.parts import finished_parts, merge_parts, parse_part, part_dir
from neurofm.datasets.shards import write_shards


def run_prepare(cfg) -> int:
    """0 when every file was tokenized; 1 when some failed (listed in ``failures.jsonl``)."""
    if cfg.merge:  # reads the parts' manifests only: no inputs, no options
        return _report(merge_parts(cfg.out), cfg.out)
    conf: PrepareConfig = typed(cfg)
    out = conf.out
    options = PrepareOptions(**{f.name: getattr(conf, f.name) for f in fields(PrepareOptions)})
    part = parse_part(conf.part)
    manifest = write_shards(conf.inputs, out, options, workers=conf.workers, part=part)
    if part is None:
        return _report(manifest, out)
    code = _report(manifest, part_dir(out, *part))
    count, _, missing = finished_parts(out)
    if missing:
        logger.info("%d of %d parts still to finish; the last one writes %s",
                    len(missing), count, Path(out) / "manifest.json")
        return code
    merged = merge_parts(out)  # the last part to finish merges (again, if two finish at once)
    logger.info("all %d parts finished: merged into %s", count, Path(out) / "manifest.json")
    return max(code, 1 if merged["failures"] else 0)


def _report(manifest: dict, out: str | os.PathLike) -> int:
    totals = manifest["totals"]
    logger.info(
        "wrote %d shards, %d samples, %.2f h (%s) to %s; %d of %d files failed%s",
        len(manifest["shards"]), totals["samples"], totals["hours"],
        ", ".join(f"{k} {v:.2f} h" for k, v in totals["hours_by_modality"].items()), out,
        manifest["failures"], manifest["files"]["found"],
        f" (see {Path(out) / 'failures.jsonl'})" if manifest["failures"] else "")
    return 1 if manifest["failures"] else 0
