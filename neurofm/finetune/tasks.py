"""Heads and training modes: linear probe, full finetune (layer-wise LR decay), LoRA, from scratch."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from neurofm.batch import collate_segments
from neurofm.embedding import NeuroFM
from neurofm.errors import ConfigError, NotAvailableError
from neurofm.finetune.baselines import shared_sensors
from neurofm.finetune.config import READOUTS
from neurofm.finetune.loops import Mode, network_for, train_epochs
from neurofm.models.mae import MaskedAutoencoder, ModelConfig
from neurofm.options import check_option
from neurofm.tokenizers.segment import Segment


def backbone_of(model) -> MaskedAutoencoder | None:
    """The :class:`MaskedAutoencoder` of what :func:`neurofm.load` returns (or the model itself)."""

    if isinstance(model, NeuroFM):
        return model.model
    if model is None or isinstance(model, MaskedAutoencoder):
        return model
    raise TypeError(f"expected what neurofm.load() returns or a MaskedAutoencoder, got {type(model).__name__}")


def window_embeddings(model, segments: list[Segment], batch_size: int = 64) -> np.ndarray:
    """Pooled encoder output per segment, ``[N, D]`` (frozen encoder).

    ``model``: what :func:`neurofm.load` returns, or a :class:`MaskedAutoencoder`.
    """

    return NeuroFM(backbone_of(model)).embed(segments, batch_size=batch_size).windows


def window_features(model, segments: list[Segment], readout: str = "mean",
                    batch_size: int = 32) -> np.ndarray:
    """Frozen-encoder features per window for a linear probe, ``[N, F]``.

    ``readout``:

    - ``mean``: the mean of every token (``F = dim``), as :meth:`NeuroFM.embed`;
    - ``sensors``: each sensor's tokens averaged over time, concatenated over the sensors
      every window shares (``F = sensors * dim``): keeps the spatial axis (lateralised
      rhythms, regional effects);
    - ``connectivity``: the Fisher-z correlation between every pair of shared sensors of
      their token sequences, centred over time (``F = sensors * (sensors - 1) / 2``):
      functional connectivity in the model's feature space.

    Sensors are matched by channel name or parcel label (a file that lost a parcel keeps
    the others). ``sensors`` and ``connectivity`` need a model without ``spatial_latents``.
    """
    check_option("readout", readout, READOUTS)
    if readout == "mean":
        return window_embeddings(model, segments, batch_size)
    backbone = backbone_of(model)
    _check_sensor_axis(backbone, readout)
    rows = shared_sensors(segments)
    out = None
    encoder = NeuroFM(backbone)
    for group, batch, tokens, _ in encoder.encoded(segments, batch_size, f"embedding ({readout} readout)"):
        take = torch.as_tensor(np.stack([rows[i] for i in group]), device=tokens.device)   # [B, C_shared]
        feats = sensor_readout(tokens.double(), batch.signal.shape[1], take, readout)
        if out is None:
            out = np.zeros((len(segments), feats.shape[1]), np.float32)
        out[group] = feats.float().cpu().numpy()
    return out


def _check_sensor_axis(backbone: MaskedAutoencoder, readout: str) -> None:
    if backbone.config.spatial_latents is not None:
        raise ConfigError(f"readout={readout} keeps the sensor axis, which spatial_latents="
                          f"{backbone.config.spatial_latents} compresses away; use readout=mean")


def sensor_readout(tokens: torch.Tensor, n_sensors: int, take: torch.Tensor, readout: str) -> torch.Tensor:
    """Features that keep the sensor axis, from encoder tokens ``[B, C * N, D]`` (sensor-major)
    of ``n_sensors`` sensors, keeping the sensors ``take`` ``[B, C_shared]`` in that order:

    - ``sensors``: each sensor's tokens averaged over time, concatenated, ``[B, C_shared * D]``;
    - ``connectivity``: Fisher-z correlation of every pair of sensors' token sequences,
      centred over time, ``[B, C_shared * (C_shared - 1) / 2]``.

    Differentiable: the linear probe and the trained heads (:class:`Classifier`) share it.
    """
    b = tokens.shape[0]
    tokens = tokens.reshape(b, n_sensors, -1, tokens.shape[-1])           # [B, C, N, D]
    tokens = tokens[torch.arange(b, device=tokens.device)[:, None], take]  # [B, C_shared, N, D]
    if readout == "sensors":
        return tokens.mean(2).flatten(1)
    if readout != "connectivity":
        raise ConfigError(f"sensor_readout: readout must be sensors or connectivity, got {readout!r}")
    iu = torch.triu_indices(take.shape[1], take.shape[1], offset=1, device=tokens.device)
    centred = (tokens - tokens.mean(2, keepdim=True)).flatten(2)          # [B, C_shared, N * D]
    centred = centred / centred.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    corr = (centred @ centred.transpose(1, 2)).clamp(-0.999999, 0.999999)
    return torch.atanh(corr[:, iu[0], iu[1]])


def linear_probe(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, seed: int = 0) -> np.ndarray:
    """Standardised logistic regression on frozen embeddings; returns test probabilities."""
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000, C=1.0, random_state=seed))
    probe.fit(x_train, y_train)
    return probe.predict_proba(x_test)


def add_lora(module: nn.Module, stack: str, rank: int = 8) -> nn.Module:
    """Low-rank adapters (peft LoRA) on every linear layer of the attention and MLP blocks
    of ``module.<stack>`` (``'encoder'`` or ``'decoder'``), injected in place.

    Parameter names stay those of the model plus ``lora_A``/``lora_B``; the caller chooses
    what trains. Needs the ``lora`` extra (``pip install 'neurofm[lora]'``).
    """
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError as err:
        raise NotAvailableError("LoRA needs peft: pip install 'neurofm[lora]'") from err
    if rank < 1:
        raise ConfigError(f"lora rank must be a positive integer, got {rank}")
    targets = rf"{stack}\.blocks\.\d+\.(attn\.qkv|attn\.proj|mlp\.0|mlp\.2)"
    return inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0,
                                              target_modules=targets), module)


class Classifier(nn.Module):
    """Pretrained (or fresh) encoder + a linear head on a readout of its tokens.

    ``readout`` as in :func:`window_features`: ``mean`` (every token averaged), or
    ``sensors`` / ``connectivity``, which keep the sensor axis and need ``n_shared``, the number
    of sensors every window shares; :meth:`forward` then takes ``take`` ``[B, n_shared]``,
    each window's rows of those sensors (:func:`~neurofm.finetune.baselines.shared_sensors`).
    Those heads normalise their features first (a LayerNorm), as the probe standardises them.
    """

    def __init__(self, backbone: MaskedAutoencoder, n_classes: int, readout: str = "mean",
                 n_shared: int | None = None):
        super().__init__()
        check_option("readout", readout, READOUTS)
        self.backbone, self.readout = backbone, readout
        if readout == "mean":
            self.head = nn.Linear(backbone.config.dim, n_classes)
            return
        _check_sensor_axis(backbone, readout)
        if not n_shared or n_shared < 2:
            raise ConfigError(f"readout={readout} needs two or more sensors shared by every window, got {n_shared}")
        width = n_shared * backbone.config.dim if readout == "sensors" else n_shared * (n_shared - 1) // 2
        self.head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, n_classes))

    def forward(self, batch, take: torch.Tensor | None = None) -> torch.Tensor:
        tokens, pooled = self.backbone.features(batch)
        if self.readout == "mean":
            return self.head(pooled)  # [B, n_classes]
        return self.head(sensor_readout(tokens, batch.signal.shape[1], take, self.readout))


def layerwise_param_groups(model: Classifier, lr: float, decay: float) -> list[dict]:
    """Head at ``lr``; encoder block i at ``lr * decay^(depth - i)``; embeddings lowest."""
    depth = len(model.backbone.encoder.blocks)
    groups: dict[float, list] = {}
    for name, param in model.named_parameters():
        if name.startswith("head."):
            scale = 1.0
        elif name.startswith("backbone.encoder.blocks."):
            scale = decay ** (depth - int(name.split(".")[3]))
        elif name.startswith("backbone.encoder.norm"):
            scale = decay
        else:  # embeddings, compressor, decoder (unused by the head)
            scale = decay ** (depth + 1)
        groups.setdefault(scale, []).append(param)
    return [{"params": p, "lr": lr * s} for s, p in sorted(groups.items())]


def finetune_classifier(
    backbone,
    segments: list[Segment],
    labels: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    *,
    mode: str | Mode = "finetune",
    config: ModelConfig | None = None,
    epochs: int = 30,
    lr: float = 1e-3,
    layer_decay: float = 0.75,
    batch_size: int = 32,
    lora_rank: int = 8,
    readout: str = "mean",
    seed: int = 0,
) -> tuple[np.ndarray, list[float]]:
    """Train encoder + head on ``train``; return test probabilities and the training losses.

    ``backbone``: what :func:`neurofm.load` returns, or a :class:`MaskedAutoencoder` (``None``:
    ``config``'s architecture, from scratch). ``mode`` (:class:`~neurofm.finetune.loops.Mode`):
    ``finetune`` (everything, layer-wise LR decay), ``lora`` (rank-``lora_rank`` adapters on
    the frozen encoder's blocks, :func:`add_lora`, and the head), ``scratch`` (the same
    architecture from random weights), ``linear_probe`` (the head alone on the frozen
    encoder). ``readout``: what the head reads (:class:`Classifier`; ``sensors`` and
    ``connectivity`` over the sensors every window shares).
    """
    mode = Mode.of(mode)
    torch.manual_seed(seed)
    n_classes = int(labels.max()) + 1
    rows = shared_sensors(segments) if readout != "mean" else None
    model = Classifier(network_for(mode, backbone_of(backbone), config), n_classes, readout,
                       len(rows[0]) if rows else None)

    def run(idx: np.ndarray) -> torch.Tensor:
        take = torch.as_tensor(np.stack([rows[i] for i in idx])) if rows else None
        return model(collate_segments([segments[i] for i in idx]), take)

    if mode is Mode.LORA:
        add_lora(model.backbone, "encoder", lora_rank)
    if mode in (Mode.LORA, Mode.LINEAR_PROBE):
        model.requires_grad_(False)
        params = [p for name, p in model.named_parameters() if "lora_" in name or name.startswith("head.")]
        for p in params:
            p.requires_grad_(True)
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.05)
    else:
        optimizer = torch.optim.AdamW(layerwise_param_groups(model, lr, layer_decay), weight_decay=0.05)
    y = torch.as_tensor(labels, dtype=torch.long)
    losses = train_epochs(model, lambda idx: nn.functional.cross_entropy(run(idx), y[idx]),
                          lambda rng: rate_batches(segments, rng.permutation(train), batch_size, rng),
                          optimizer, epochs=epochs, seed=seed)
    test = np.asarray(test)
    probs = np.zeros((len(test), n_classes), dtype=np.float32)
    position = {i: k for k, i in enumerate(test)}
    with torch.no_grad():
        for idx in rate_batches(segments, test, 64):
            out = run(idx).softmax(-1).numpy()
            probs[[position[i] for i in idx]] = out
    return probs, losses


def rate_batches(segments: list[Segment], order: np.ndarray, batch_size: int,
                 rng: np.random.Generator | None = None) -> list[np.ndarray]:
    """``order`` cut into batches of at most ``batch_size`` that each hold one modality at one
    sampling rate (what the model takes; ROI tables of sites with different TRs differ in
    rate). Within a rate, batches keep ``order``; with several rates, ``rng`` shuffles the
    batches so that training interleaves them."""
    order = np.asarray(order)
    keys = [(segments[i].modality, segments[i].sfreq) for i in order]
    batches = []
    for key in sorted(set(keys)):
        members = order[np.array([k == key for k in keys])]
        batches += [members[k : k + batch_size] for k in range(0, len(members), batch_size)]
    if rng is not None and len(set(keys)) > 1:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches
