"""Weights as a directory anyone can load: ``config.json`` + ``model.safetensors``.

Loading never unpickles arbitrary objects: safetensors for exported weights, and
``torch.load(weights_only=True)`` for Lightning checkpoints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
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
from neurofm.models.mae import MaskedAutoencoder, ModelConfig

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
CARD = "README.md"


def save_pretrained(model: MaskedAutoencoder, out: str | os.PathLike, extra: dict | None = None) -> Path:
    """Write ``config.json``, ``model.safetensors`` and a model card (``README.md``, the
    Hugging Face Hub's layout) into ``out``, atomically file by file. ``extra``: more keys of
    ``config.json`` (``input_contract``, the recipe, validation figures), shown on the card."""

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    expected = sum(v.numel() * v.element_size() for v in state.values())
    with atomic_write(out / WEIGHTS, "export", expected_bytes=expected) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt", "neurofm_version": __version__})
        _default_mode(tmp)
    config = {"neurofm_version": __version__, "architecture": "MaskedAutoencoder",
              "model": asdict(model.config), **(extra or {})}
    write_text_atomic(out / CONFIG, json.dumps(config, indent=1, sort_keys=True) + "\n", "export")
    write_text_atomic(out / CARD, model_card(model, config), "model card")
    return out


def model_card(model: MaskedAutoencoder, config: dict[str, Any]) -> str:
    """A Hub model card: metadata (``library_name: neurofm``, license, tags) and what a user
    needs to know before feeding the model data: size, input contract, corpus, recipe, figures."""
    contract = config.get("input_contract") or {}
    modalities = contract.get("modalities") or []
    n_params = sum(p.numel() for p in model.parameters())
    c = model.config
    lines = ["---", "library_name: neurofm", "license: bsd-3-clause", "tags:",
             *[f"- {t}" for t in ("neuroscience", "foundation-model", "masked-autoencoder", *modalities)],
             "---", "", "# neurofm masked autoencoder", "",
             f"A neurofm encoder ({n_params / 1e6:.2f} M parameters: dim {c.dim}, depth {c.depth}, "
             f"{c.heads} heads; patches of {', '.join(f'{m} {s:g} s' for m, s in c.patch_s.items())}), "
             f"saved by neurofm {config.get('neurofm_version', '?')}.", "",
             "```python", "import neurofm", "", "model = neurofm.NeuroFM.from_pretrained('<this folder or repo id>')",
             "emb = model.embed('sub-01_task-rest_eeg.edf')", "```", ""]
    if not contract:
        lines += ["No input contract was recorded (a checkpoint pretrained without shards, or by an "
                  "older neurofm): check the tokenizer settings yourself.", ""]
    else:
        corpus = contract.get("corpus", {})
        lines += ["## Input contract", "",
                  "`embed` and `finetune` tokenize with these settings by default and refuse an input "
                  "of another modality, rate or space.", ""]
        for section in ("meeg", "fmri"):
            if section in contract:
                lines += [f"**{'EEG/MEG/iEEG' if section == 'meeg' else 'fMRI'}**", "", "| field | value |",
                          "|---|---|", *[f"| `{k}` | {v} |" for k, v in contract[section].items()], ""]
        lines += ["## Pretraining corpus", "",
                  f"{corpus.get('hours') or 0:.1f} h in {corpus.get('windows')} windows from "
                  f"{corpus.get('subjects')} subjects ({', '.join(modalities)}); datasets: "
                  f"{', '.join(corpus.get('datasets', [])[:20]) or 'unnamed'}.", ""]
    recipe = {k: config[k] for k in ("optim", "max_steps") if k in config}
    if recipe:
        lines += ["## Recipe", "", f"- mask: {c.mask_strategy}, ratio {c.mask_ratio}",
                  f"- steps: {recipe.get('max_steps')}",
                  *[f"- {k}: {v}" for k, v in (recipe.get("optim") or {}).items()], ""]
    if "validation" in config:
        v = config["validation"]
        lines += ["## Validation", "", f"Masked-token R² on the validation split: {v['first']:.3f} at the "
                  f"first evaluation, {v['last']:.3f} at the last (best {v['best']:.3f}).", ""]
    return "\n".join(lines)


def _default_mode(path: Path) -> None:
    """The mode a new file gets under the user's umask (safetensors writes 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


WEIGHT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def load_pretrained(path: str | os.PathLike, map_location: str | torch.device = "cpu",
                    info: dict | None = None) -> MaskedAutoencoder:
    """Load an exported directory, a Lightning ``.ckpt`` or a DeepSpeed checkpoint directory.
    ``info``: filled as :func:`read_checkpoint` fills it (the input contract, the recipe)."""
    config, state = read_checkpoint(path, map_location, info)
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{len(bad)} weight tensors hold NaN/inf ({bad[:3]}): a diverged or "
                              "corrupt checkpoint; use an earlier one", path)
    model = MaskedAutoencoder(model_config(config, path))
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


def model_config(config: dict[str, Any], path: str | os.PathLike) -> ModelConfig:
    """A checked :class:`ModelConfig` from a checkpoint's config: unknown keys and sizes that
    would allocate more than :data:`MAX_PARAMETERS` are errors, before any memory is taken."""

    if not isinstance(config, dict):
        raise CheckpointError(f"model config is a {type(config).__name__}, not a mapping", path)
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(config) - known)
    if unknown:
        raise CheckpointError(f"unknown model config keys {unknown[:5]} (a newer neurofm, or not a "
                              "neurofm checkpoint)", path)
    try:
        cfg = ModelConfig(**config)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"invalid model config ({err})", path) from err
    sizes = (cfg.dim, cfg.depth, cfg.heads, cfg.decoder_dim, cfg.decoder_depth, cfg.decoder_heads, cfg.patch_len)
    if any(not isinstance(v, int) or v < 1 for v in sizes):
        raise CheckpointError(f"model sizes must be positive integers, got {sizes}", path)
    hidden = cfg.mlp_ratio
    estimate = (12 * cfg.depth * cfg.dim ** 2 * hidden / 4 + 12 * cfg.decoder_depth * cfg.decoder_dim ** 2
                * hidden / 4 + 2 * cfg.patch_len * (cfg.dim + cfg.decoder_dim))
    if estimate > MAX_PARAMETERS:
        raise CheckpointError(f"model config implies about {estimate:.2g} parameters (depth {cfg.depth}, "
                              f"dim {cfg.dim}): a corrupt config.json?", path)
    return cfg


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu",
                    info: dict | None = None) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(model config dict, model state dict) from any of the three checkpoint formats.
    ``info``: filled with what the checkpoint says besides the model (``input_contract``,
    the pretraining recipe ``optim`` and ``max_steps``, an export's other keys)."""
    info = {} if info is None else info
    path = Path(path)
    if not path.exists():
        raise CheckpointError("checkpoint not found", path)
    if path.is_dir() and (path / WEIGHTS).exists():

        try:
            everything = json.loads((path / CONFIG).read_text())
            config = everything["model"]
            info.update({k: v for k, v in everything.items() if k != "model"})
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
    info.update({k: hyper_parameters[k] for k in ("input_contract", "optim", "max_steps")
                 if hyper_parameters.get(k) is not None})


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
    """Turn any checkpoint into ``config.json`` + ``model.safetensors`` (``neurofm export``);
    ``extra`` joins the config (``neurofm export`` adds the run's validation figures,
    :func:`neurofm.pretrain.run_folder.validation_of`)."""
    info: dict[str, Any] = {}
    model = load_pretrained(ckpt, info=info)
    info.pop("neurofm_version", None)
    info.pop("architecture", None)
    return save_pretrained(model, out, extra={**info, **(extra or {}), "exported_from": os.fspath(ckpt)})
