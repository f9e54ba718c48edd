"""The ``neurofm`` command: ``neurofm prepare|pretrain|finetune|embed|export|verify``.

Each subcommand is a Hydra app over the config tree packaged in
:mod:`neurofm.configs`, so overrides (``key=value``), ``--help``,
``--config-dir`` and ``--cfg job`` work as in any Hydra app. User-facing
errors (and a full disk, wherever it strikes) print as one line with exit code 2;
any other exception prints one line and the path of a log holding its traceback,
with exit code 1. ``NEUROFM_DEBUG=1`` raises instead, with the full traceback.
"""

from __future__ import annotations

import importlib
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from neurofm._version import __version__
from neurofm.errors import ConfigError, DiskFullError, NeurofmError

# subcommand -> (one-line summary, "module:function" that receives the composed config)
COMMANDS: dict[str, tuple[str, str]] = {
    "prepare": ("recordings (BIDS, globs, ROI tables) -> WebDataset shards + manifest",
                "neurofm.commands.prepare:run_prepare"),
    "pretrain": ("masked-autoencoding pretraining (Lightning; DDP / DeepSpeed)",
                 "neurofm.commands.pretrain:run_pretrain"),
    "finetune": ("decoding / encoding / subject-level tasks (probe / finetune / LoRA / scratch)",
                 "neurofm.commands.finetune:run_finetune"),
    "embed": ("embed recordings with a checkpoint and write .npy/.parquet",
              "neurofm.commands.embed:run_embed"),
    "export": ("checkpoint -> config.json + model.safetensors", "neurofm.commands.export:run_export"),
    "verify": ("check shards against their manifest (size, sha256, every sample)",
               "neurofm.commands.verify:run_verify"),
}

USAGE = """usage: neurofm <command> [key=value ...] [--help] [--cfg job] [--config-dir DIR]

Brain foundation models across EEG, MEG and fMRI (neurofm {version}).

commands:
{commands}

Each command is a Hydra app: `neurofm <command> --help` lists its config groups
and options, `neurofm <command> --cfg job` prints the resolved config.
"""


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = "\n".join(f"  {name:<{width}}  {summary}" for name, (summary, _) in COMMANDS.items())
    return USAGE.format(version=__version__, commands=lines)


def _resolve(target: str) -> Callable:
    module, _, func = target.partition(":")
    return getattr(importlib.import_module(module), func)


def _debug() -> bool:
    return os.environ.get("NEUROFM_DEBUG", "0") not in ("0", "")


def _report(err: BaseException) -> int:
    if _debug():
        raise err
    print(f"neurofm: error: {err}", file=sys.stderr)
    return 2


def _disk_full_line(err: OSError) -> str:
    """A full disk met outside neurofm's own writers (a log, a library's cache): the file and
    what is free there."""
    from neurofm.io import free_bytes

    where = err.filename or os.getcwd()
    try:
        free = f"{free_bytes(where) / 2**20:.1f} MB free"
    except OSError:
        free = "free space unknown"
    return f"{where}: disk full ({err.strerror}; {free}): free space and run again"


def _report_unexpected(err: BaseException, command: str) -> int:
    """One line, and the traceback in a log file whose path the line gives (a bug or a
    library's own error: either way the user should see one line, and a developer the rest)."""
    if _debug():
        raise err
    text = "".join(traceback.format_exception(err))
    name = f"neurofm-{command}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    where = "no log could be written"
    for folder in (Path(tempfile.gettempdir()), Path.cwd()):
        try:
            (folder / name).write_text(f"neurofm {command} {' '.join(sys.argv[1:])}\n\n{text}")
            where = f"traceback in {folder / name}"
            break
        except OSError:
            continue
    summary = str(err).splitlines()[0] if str(err) else ""
    print(f"neurofm: unexpected error in {command}: {type(err).__name__}: {summary} ({where}; "
          "NEUROFM_DEBUG=1 shows it here)", file=sys.stderr)
    return 1


def _check_required(cfg, command: str) -> None:
    """A ``???`` value left unset is one line naming the key, not a traceback deep inside."""
    from omegaconf import OmegaConf

    missing = sorted(OmegaConf.missing_keys(cfg))
    if command == "prepare" and cfg.get("merge"):  # a merge reads the parts, not the inputs
        missing = [k for k in missing if k != "inputs"]
    if missing:
        raise ConfigError(f"neurofm {command} needs {', '.join(missing)}: pass "
                          f"{' '.join(f'{k}=...' for k in missing)} (see neurofm {command} --help)")


def _run_hydra(command: str, argv: Sequence[str]) -> int:
    import hydra
    from omegaconf import DictConfig

    from neurofm.configs.schema import register
    from neurofm.console import setup_logging

    status = {"code": 0}

    def task(cfg: DictConfig) -> None:
        try:
            setup_logging()
            _check_required(cfg, command)
            status["code"] = _resolve(COMMANDS[command][1])(cfg) or 0
        except NeurofmError as err:
            status["code"] = _report(err)
        except KeyboardInterrupt:
            print("neurofm: interrupted", file=sys.stderr)
            status["code"] = 130
        except Exception as err:  # never Hydra's "HYDRA_FULL_ERROR" hint and a traceback
            from neurofm.extras import extra_for, missing_extra
            from neurofm.io import is_disk_full

            if isinstance(err, ImportError) and extra_for(err):
                status["code"] = _report(missing_extra(err, f"neurofm {command}"))
            elif isinstance(err, OSError) and is_disk_full(err, err.filename or os.getcwd()):
                status["code"] = _report(DiskFullError(_disk_full_line(err)))
            else:
                status["code"] = _report_unexpected(err, command)

    task.__module__ = __name__
    register()
    app = hydra.main(config_path="configs", config_name=command, version_base="1.3")(task)
    saved = sys.argv
    # keep argv[0] (the script) and remember the command: Lightning's DDP launcher re-runs
    # `argv[0] <overrides>` for the other local ranks (see main())
    sys.argv = [saved[0], *argv]
    os.environ["NEUROFM_COMMAND"] = command
    try:
        app()
    finally:
        sys.argv = saved
    return status["code"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``neurofm`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        print(f"neurofm {__version__}")
        return 0
    relaunched = os.environ.get("NEUROFM_COMMAND") in COMMANDS and "LOCAL_RANK" in os.environ
    if argv[0] not in COMMANDS and relaunched:  # a rank started by Lightning's DDP launcher
        return _run_hydra(os.environ["NEUROFM_COMMAND"], argv)
    command, rest = argv[0], argv[1:]
    if command == "prepare" and rest[:1] == ["merge"]:  # `neurofm prepare merge out=DIR`
        rest = ["merge=true", *rest[1:]]
    if command not in COMMANDS:
        print(_usage(), file=sys.stderr)
        print(f"neurofm: error: unknown command {command!r}; choose one of {', '.join(COMMANDS)}",
              file=sys.stderr)
        return 2
    return _run_hydra(command, rest)


if __name__ == "__main__":
    sys.exit(main())
