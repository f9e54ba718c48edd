"""Weights as a directory anyone can load: ``config.json`` + ``model.safetensors``.

Loading never unpickles arbitrary objects: safetensors for exported weights, and
``torch.load(weights_only=True)`` for Lightning checkpoints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import logging
import os
import pickle
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any
from unittest import mock

import torch
from safetensors.torch import load_file, save_file

from neurofm._version import __version__
from neurofm.errors import CheckpointError
from neurofm.io import atomic_write, write_text_atomic
from neurofm.models.backbone import NeuroFMEncoder, encoder_state
from neurofm.models.card import model_card
from neurofm.models.config import EncoderConfig, ModelConfig, RecipeConfig
from neurofm.models.mae import DECODER_PARTS, MaskedAutoencoder

logger = logging.getLogger("neurofm")

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
CARD = "README.md"


def save_pretrained(model: NeuroFMEncoder, out: str | os.PathLike, extra: dict | None = None) -> Path:
    """Write the encoder into ``out``, the Hugging Face Hub's layout, atomically file by file:
    ``config.json``, ``model.safetensors`` (the encoder's weights) and the model card
    ``README.md``. ``config.json`` holds the architecture (``encoder``) and ``extra``: the
    input contract, validation figures and, apart from the architecture, the ``pretraining``
    recipe it was trained with (the masking head, the optimiser, the steps), which the card
    shows. A :class:`MaskedAutoencoder` is saved as its encoder, its head's settings under
    ``pretraining``."""

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    extra = dict(extra or {})
    if isinstance(model, MaskedAutoencoder):
        extra["pretraining"] = {"mae": model.config.recipe(), **(extra.get("pretraining") or {})}
    architecture = model.config.encoder_config()
    state = {k: v.detach().to("cpu").contiguous() for k, v in encoder_state(model.state_dict()).items()}
    expected = sum(v.numel() * v.element_size() for v in state.values())
    with atomic_write(out / WEIGHTS, "export", expected_bytes=expected) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt", "neurofm_version": __version__})
        _default_mode(tmp)
    config = {**extra, "neurofm_version": __version__, "architecture": "NeuroFMEncoder",
              "encoder": asdict(architecture)}
    n_params = sum(v.numel() for v in state.values())
    write_text_atomic(out / CONFIG, json.dumps(config, indent=1, sort_keys=True) + "\n", "export")
    write_text_atomic(out / CARD, model_card(architecture, n_params, config), "model card")
    return out


def _default_mode(path: Path) -> None:
    """The mode a new file gets under the user's umask (safetensors writes 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


WEIGHT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def load_pretrained(path: str | os.PathLike, map_location: str | torch.device = "cpu",
                    info: dict | None = None, head: bool = False) -> NeuroFMEncoder:
    """The encoder of an exported directory, a Lightning ``.ckpt`` or a DeepSpeed checkpoint
    directory. ``info``: filled as :func:`read_checkpoint` fills it (the input contract, the
    recipe).

    ``head=True``: the :class:`MaskedAutoencoder` (the encoder and its pretraining decoder,
    which the encoding task reads spatial patterns from). An export holds the encoder only:
    its decoder then starts from random weights, with a warning."""
    info = {} if info is None else info
    config, state = read_checkpoint(path, map_location, info)
    if head and isinstance(config, dict):  # an export's encoder: its head as it was pretrained
        config = {**(info.get("pretraining") or {}).get("mae", {}), **config}
    return from_state(config, state, path, head)


def from_state(config: dict[str, Any], state: dict[str, torch.Tensor], path: str | os.PathLike,
               head: bool = False) -> NeuroFMEncoder:
    """The model of a checkpoint's config and weights (what :func:`read_checkpoint` returns), checked:
    finite weights of the model's dtypes, every tensor the model expects and no other."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{len(bad)} weight tensors hold NaN/inf ({bad[:3]}): a diverged or "
                              "corrupt checkpoint; use an earlier one", path)
    if head:
        full = checked_model_config(config, path)
        model = MaskedAutoencoder(full)
        if not any(k.split(".")[0] in DECODER_PARTS for k in state):
            logger.warning("%s holds the encoder only (an export): the pretraining decoder starts from "
                           "random weights; pass the pretraining checkpoint (.ckpt) to use its decoder", path)
            state = {**model.state_dict(), **state}  # the head as initialised, the encoder as saved
    else:
        model = NeuroFMEncoder(checked_encoder_config(config, path))
        head_keys = [k for k in state if k.split(".")[0] in (*DECODER_PARTS, "teacher")]
        state = {k: v for k, v in state.items() if k not in head_keys}  # a pretraining checkpoint's head
    own = model.state_dict()
    # an int or bool tensor would be cast to float silently and give finite garbage
    wrong = [f"{k} ({str(v.dtype).removeprefix('torch.')})" for k, v in state.items() if k in own and (
        v.dtype not in WEIGHT_DTYPES if own[k].is_floating_point() else v.dtype != own[k].dtype)]
    if wrong:
        raise CheckpointError(f"{len(wrong)} weight tensors have a dtype the model does not use: "
                              f"{', '.join(wrong[:5])}{' …' if len(wrong) > 5 else ''}; neurofm's "
                              "weights are float32, bfloat16 or float16: a corrupt or foreign "
                              "checkpoint", path)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # a tensor of another shape
        first = str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else str(err)
        raise CheckpointError(f"weights do not fit the model config ({first[:200]})", path) from err
    if missing or unexpected:  # every name, never a silent partial load
        raise CheckpointError(f"weights do not match the model config: {len(missing)} of "
                              f"{len(own)} expected tensors missing {missing}, {len(unexpected)} "
                              f"tensors not in the model {unexpected}", path)
    return model.eval()


MAX_PARAMETERS = 20e9  # far above any size neurofm ships; a larger config is corrupt, not a model


def checked_model_config(config: dict[str, Any], path: str | os.PathLike) -> ModelConfig:
    """A checked :class:`ModelConfig` from a checkpoint's config (a pretraining model's, or an
    export's encoder with the default head): unknown keys and sizes that would allocate more
    than :data:`MAX_PARAMETERS` are errors, before any memory is taken."""
    _check_keys(config, ModelConfig, path)
    try:
        cfg = ModelConfig(**config)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"invalid model config ({err})", path) from err
    _check_size(cfg, (cfg.decoder_depth, cfg.decoder_dim, cfg.decoder_heads), path)
    return cfg


def checked_encoder_config(config: dict[str, Any], path: str | os.PathLike) -> EncoderConfig:
    """A checked :class:`EncoderConfig` from a checkpoint's config: an export's ``encoder`` or a
    pretraining model's (whose head and recipe are left aside), checked as :func:`checked_model_config`."""
    if set(config) - {f.name for f in dataclasses.fields(EncoderConfig)}:
        return checked_model_config(config, path).encoder_config()
    _check_keys(config, EncoderConfig, path)
    try:
        cfg = EncoderConfig(**config)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"invalid encoder config ({err})", path) from err
    _check_size(cfg, (), path)
    return cfg


def _check_keys(config: Any, schema: type, path: str | os.PathLike) -> None:
    if not isinstance(config, dict):
        raise CheckpointError(f"model config is a {type(config).__name__}, not a mapping", path)
    unknown = sorted(set(config) - {f.name for f in dataclasses.fields(schema)})
    if unknown:
        raise CheckpointError(f"unknown model config keys {unknown[:5]} (a newer neurofm, or not a "
                              "neurofm checkpoint)", path)


def _check_size(cfg: EncoderConfig | ModelConfig, decoder: tuple[int, ...], path: str | os.PathLike) -> None:
    sizes = (cfg.dim, cfg.depth, cfg.heads, cfg.patch_len, *decoder)
    if any(not isinstance(v, int) or v < 1 for v in sizes):
        raise CheckpointError(f"model sizes must be positive integers, got {sizes}", path)
    depth, width = (decoder[0], decoder[1]) if decoder else (0, 0)
    estimate = (12 * cfg.depth * cfg.dim ** 2 * cfg.mlp_ratio / 4 + 12 * depth * width ** 2 * cfg.mlp_ratio / 4
                + 2 * cfg.patch_len * (cfg.dim + width))
    if estimate > MAX_PARAMETERS:
        raise CheckpointError(f"model config implies about {estimate:.2g} parameters (depth {cfg.depth}, "
                              f"dim {cfg.dim}): a corrupt config.json?", path)


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu",
                    info: dict | None = None) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(model config dict, state dict) from any of the three checkpoint formats: an export's
    encoder (older exports: the whole pretraining model), a checkpoint's pretraining model.
    ``info``: filled with what the checkpoint says besides the model (``input_contract``,
    ``pretraining``: the head and masking recipe, ``optim`` and ``max_steps``; an export's
    other keys)."""
    info = {} if info is None else info
    config, state = _read(Path(path), map_location, info)
    _pretraining(config, info)
    return config, state


def _read(path: Path, map_location: str | torch.device, info: dict) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    if not path.exists():
        raise CheckpointError("checkpoint not found", path)
    if path.is_dir() and (path / WEIGHTS).exists():

        try:  # an export: the encoder's architecture (older exports: the pretraining model's)
            everything = json.loads((path / CONFIG).read_text())
            section = "encoder" if "encoder" in everything else "model"
            config = everything[section]
            info.update({k: v for k, v in everything.items() if k != section})
        except (OSError, KeyError, TypeError, json.JSONDecodeError) as err:
            raise CheckpointError(f"{CONFIG} is not a neurofm model config ({type(err).__name__}: "
                                  f"{err})", path) from err
        try:
            return config, load_file(str(path / WEIGHTS), device=str(map_location))
        except Exception as err:  # safetensors raises its own error type for a bad header
            raise CheckpointError(f"{WEIGHTS} cannot be read ({str(err).splitlines()[0][:160]})",
                                  path) from err
    if path.is_dir():
        return _read_deepspeed(path, info)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(f"cannot read checkpoint safely: it holds {_refused(err)}; neurofm "
                              "loads only tensors and plain data", path) from err
    except Exception as err:  # corrupt or truncated files raise many types
        raise CheckpointError(f"cannot read checkpoint ({type(err).__name__}: "
                              f"{str(err).splitlines()[0][:200]})", path) from err
    return _from_lightning(ckpt, path, info)


def _recipe(hyper_parameters: dict, info: dict) -> None:
    """What a Lightning/DeepSpeed checkpoint's hyper-parameters say besides the model."""
    if hyper_parameters.get("input_contract") is not None:
        info["input_contract"] = hyper_parameters["input_contract"]
    info["pretraining"] = {k: hyper_parameters[k] for k in ("optim", "max_steps")
                           if hyper_parameters.get(k) is not None}


def _pretraining(config: dict[str, Any], info: dict) -> None:
    """``info['pretraining']['mae']``: the head and masking recipe of a pretraining model's
    ``config`` (a checkpoint's, or an older export's); its ``optim`` and ``max_steps`` from the
    top level, where older exports held them."""
    if not isinstance(config, dict):
        return  # refused, naming the problem, where the config is read
    recipe = {f.name: config[f.name] for f in dataclasses.fields(RecipeConfig) if f.name in config}
    if recipe or any(k in info for k in ("optim", "max_steps")):
        moved = {k: info.pop(k) for k in ("optim", "max_steps") if k in info}
        info["pretraining"] = {**moved, **(info.get("pretraining") or {}), **({"mae": recipe} if recipe else {})}


def _from_lightning(ckpt: dict, path: Path, info: dict) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    try:
        config = ckpt["hyper_parameters"]["model"]
        state = ckpt["state_dict"]
    except (KeyError, TypeError) as err:
        raise CheckpointError(f"not a neurofm Lightning checkpoint (no {err})", path) from err
    _recipe(ckpt["hyper_parameters"], info)
    prefix = "model."
    return dict(config), {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _read_deepspeed(path: Path, info: dict) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """A DeepSpeed ZeRO checkpoint directory (Lightning's layout or DeepSpeed's own).

    The model config comes from the client state saved beside the weights
    (``hyper_parameters['model']``, as Lightning writes it); the ZeRO shards are
    consolidated to fp32 with DeepSpeed's own ``zero_to_fp32``.
    """
    try:
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    except ImportError as err:
        raise CheckpointError("reading a DeepSpeed checkpoint needs deepspeed installed", path) from err
    states = sorted(path.rglob("*model_states.pt"))
    if not states:
        raise CheckpointError("not a checkpoint: no config.json + model.safetensors and no "
                              "DeepSpeed *model_states.pt inside", path)
    try:
        client = torch.load(states[0], map_location="cpu", weights_only=True)
        config = client["hyper_parameters"]["model"]
        _recipe(client["hyper_parameters"], info)
    except Exception as err:
        raise CheckpointError(f"DeepSpeed checkpoint without a readable neurofm model config "
                              f"({type(err).__name__}: {err})", states[0]) from err
    tag_dir = states[0].parent
    try:  # DeepSpeed prints its progress; the caller shows its own
        with _only_allow_listed_pickles(), open(os.devnull, "w") as quiet, \
                contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
            state = get_fp32_state_dict_from_zero_checkpoint(str(tag_dir.parent), tag=tag_dir.name)
    except pickle.UnpicklingError as err:
        raise CheckpointError(f"DeepSpeed checkpoint holds {_refused(err)}, which neurofm does not "
                              "unpickle: loading it could run code", tag_dir) from err
    if any(k.startswith("model.") for k in state):  # a LightningModule's names
        state = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    return dict(config), state


def _refused(err: Exception) -> str:
    """The object ``torch.load(weights_only=True)`` refused, without torch's advice to allow it."""

    found = re.search(r"GLOBAL ([\w.]+)", str(err))
    return f"a pickled object ({found.group(1)})" if found else "pickled objects"


# Plain-data classes DeepSpeed pickles into its optimizer states (module, name): the only
# objects besides tensors and containers that consolidation may rebuild.
DEEPSPEED_SAFE_GLOBALS = (
    ("deepspeed.runtime.fp16.loss_scaler", "LossScaler"),
    ("deepspeed.runtime.fp16.loss_scaler", "DynamicLossScaler"),
    ("deepspeed.runtime.zero.config", "ZeroStageEnum"),
    ("deepspeed.utils.tensor_fragment", "fragment_address"),
    ("lightning.fabric.utilities.data", "AttributeDict"),
)


class _WeightsOnlyTorch:
    """``torch`` as DeepSpeed's ``zero_to_fp32`` module sees it inside
    :func:`_only_allow_listed_pickles`: the same module, except that ``load`` is always
    ``weights_only=True``."""

    def __getattr__(self, name: str):
        return getattr(torch, name)

    @staticmethod
    def load(*args, **kwargs):
        kwargs["weights_only"] = True
        return torch.load(*args, **kwargs)


@contextlib.contextmanager
def _only_allow_listed_pickles():
    """DeepSpeed's ``zero_to_fp32`` reads its files with ``weights_only=False``, which runs any
    code a pickle names. Within this block that module's ``torch.load`` (its own name for
    torch, not torch's function: nothing else in the process changes) is
    ``weights_only=True`` with only :data:`DEEPSPEED_SAFE_GLOBALS` allowed."""
    from deepspeed.utils import zero_to_fp32

    allowed = []
    for module, name in DEEPSPEED_SAFE_GLOBALS:
        try:
            allowed.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            continue
    with mock.patch.object(zero_to_fp32, "torch", _WeightsOnlyTorch()), \
            torch.serialization.safe_globals(allowed):
        yield


def export_checkpoint(ckpt: str | os.PathLike, out: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
    """Turn any checkpoint into the encoder's ``config.json`` + ``model.safetensors`` and a model
    card (``neurofm export``); ``extra`` joins the config (``neurofm export`` adds the run's
    validation figures, :func:`neurofm.pretrain.run_folder.validation_of`). The pretraining
    recipe (masking head, optimiser, steps) is kept apart, under ``pretraining``."""
    info: dict[str, Any] = {}
    config, state = read_checkpoint(ckpt, info=info)
    encoder = from_state(config, state, ckpt)
    info.pop("neurofm_version", None)
    info.pop("architecture", None)
    return save_pretrained(encoder, out, extra={**info, **(extra or {}), "exported_from": os.fspath(ckpt)})
