"""The tokenizer processes of ``neurofm prepare``: a process pool that survives a worker's
death (the files it was running are retried alone, and one that kills its worker again is
that file's failure)."""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from neurofm.console import make_progress, setup_logging
from neurofm.datasets.discovery import Source
from neurofm.datasets.options import PrepareOptions
from neurofm.datasets.tar_io import close_journal, read_journals
from neurofm.datasets.tokenize import prepare_one

logger = logging.getLogger("neurofm.datasets")


def run_workers(todo: list[Source], options: PrepareOptions, workdir: Path, workers: int,
                 summaries: dict[str, dict], task: Callable = None) -> None:
    """Tokenize ``todo`` in ``workers`` processes. A worker that dies (the OOM killer, a
    crash in a reader) breaks the pool: the files that were running are then retried one at
    a time, and one that kills its worker again is that file's failure; the others go on."""
    task = task or prepare_one
    if not todo:
        return
    with make_progress() as progress:
        bar = progress.add_task("tokenizing", total=len(todo))

        def record(summary: dict) -> None:
            summaries[summary["path"]] = summary
            if summary["status"] != "ok":
                logger.warning("%s: failed (%s)", summary["path"], summary["error"])
            progress.advance(bar)

        if workers <= 1:
            try:
                for src in todo:
                    record(task(src, options, str(workdir)))
            finally:
                close_journal(workdir)
            return
        queue = list(todo)
        while queue:
            unfinished, started = pool_run(queue, options, workdir, workers, record, task)
            running = [s for s in unfinished if s.path in started]
            for src in running:  # alone, so a second death names its file
                if pool_run([src], options, workdir, 1, record, task)[0]:
                    record({"path": src.path, "status": "failed", "error_type": "WorkerDied",
                            "samples": [], "error": "the tokenizer process died while reading this "
                                                    "file (killed, e.g. out of memory, or a crash in its reader)"})
            queue = [s for s in unfinished if s not in running]


def pool_run(todo: list[Source], options: PrepareOptions, workdir: Path, workers: int,
              record: Callable, task: Callable) -> tuple[list[Source], set[str]]:
    """Run ``todo`` in a fresh process pool; if the pool broke, the sources left unfinished
    and the paths its workers had started."""
    before = {p.name for p in workdir.glob("*.jsonl")}
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context,
                             initializer=setup_logging, initargs=("WARNING",)) as pool:
        futures = {pool.submit(task, src, options, str(workdir)): src for src in todo}
        pending = set(futures)
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    if not isinstance(future.exception(), BrokenProcessPool):
                        record(future.result())
                if any(isinstance(f.exception(), BrokenProcessPool) for f in done):
                    unfinished = [futures[f] for f in futures
                                  if f in pending or isinstance(f.exception(), BrokenProcessPool)]
                    # the journals this pool's processes opened (a fresh pool, fresh processes)
                    fresh = {p.name for p in workdir.glob("*.jsonl")} - before
                    return unfinished, read_journals(workdir, fresh)[1]
        except BaseException:
            for future in pending:
                future.cancel()
            raise
    return [], set()
