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
from neurofm.finetune.loops import Mode, TrainingRule, network_for, train_epochs
from neurofm.models.backbone import NeuroFMEncoder, mean_pool
from neurofm.models.config import EncoderConfig, ModelConfig
from neurofm.options import check_option
from neurofm.readouts import (
    READOUTS,
    SENSOR_AXIS,
    AttentionPool,
    SpatialLogPower,
    check_sensor_axis,
    sensor_readout,
    shared_sensors,
)
from neurofm.tokenizers.segment import Segment


def backbone_of(model) -> NeuroFMEncoder | None:
    """The :class:`~neurofm.models.backbone.NeuroFMEncoder` of what :func:`neurofm.load`
    returns (or the model itself: an encoder, or a pretraining model, which is one)."""

    if isinstance(model, NeuroFM):
        return model.model
    if model is None or isinstance(model, NeuroFMEncoder):
        return model
    raise TypeError(f"expected what neurofm.load() returns or a NeuroFMEncoder, got {type(model).__name__}")


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

    ``readout`` (:mod:`neurofm.readouts`): ``mean`` (every token averaged), ``attention`` (a
    learned query's weighted mean), or ``sensors`` / ``connectivity`` / ``spatial``, which keep
    the sensor axis and need ``n_shared``, the number of sensors every window shares;
    :meth:`forward` then takes ``take`` ``[B, n_shared]``, each window's rows of those sensors
    (:func:`~neurofm.readouts.shared_sensors`). Every head normalises its features
    first (a LayerNorm), as the probe standardises them.
    """

    def __init__(self, backbone: NeuroFMEncoder, n_classes: int, readout: str = "mean",
                 n_shared: int | None = None):
        super().__init__()
        check_option("readout", readout, READOUTS)
        self.backbone, self.readout, self.pool = backbone, readout, None
        dim = backbone.config.dim
        if readout == "mean":
            self.head = nn.Linear(dim, n_classes)
            return
        if readout == "attention":
            self.pool = AttentionPool(dim)
            width = dim
        else:
            check_sensor_axis(backbone.config, readout)
            if not n_shared or n_shared < 2:
                raise ConfigError(f"readout={readout} needs two or more sensors shared by every window, got {n_shared}")
            if readout == "spatial":
                self.pool = SpatialLogPower(n_shared, dim)
                width = self.pool.width
            else:
                width = n_shared * dim if readout == "sensors" else n_shared * (n_shared - 1) // 2
        self.head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, n_classes))

    def forward(self, batch, take: torch.Tensor | None = None) -> torch.Tensor:
        tokens, valid = self.backbone.encode_every_token(batch)
        if self.readout == "mean":
            return self.head(mean_pool(tokens, valid))  # [B, n_classes]
        if self.readout == "attention":
            return self.head(self.pool(tokens, valid))
        if self.readout == "spatial":
            return self.head(self.pool(tokens, batch.signal.shape[1], take))
        return self.head(sensor_readout(tokens, batch.signal.shape[1], take, self.readout))


def prepare_mode(model: Classifier, mode: Mode, lora_rank: int = 8) -> list[nn.Parameter]:
    """Set ``model`` up for ``mode`` in place: LoRA adapters on the encoder (``lora``), and for
    ``lora`` and ``linear_probe`` every other weight frozen. Returns the parameters that train."""
    if mode is Mode.LORA:
        add_lora(model.backbone, "encoder", lora_rank)
    if mode in (Mode.LORA, Mode.LINEAR_PROBE):
        for name, param in model.named_parameters():
            param.requires_grad_("lora_" in name or name.startswith(("head.", "pool.")))
    return [p for p in model.parameters() if p.requires_grad]


def layerwise_param_groups(model: Classifier, lr: float, decay: float) -> list[dict]:
    """Head at ``lr``; encoder block i at ``lr * decay^(depth - i)``; embeddings lowest."""
    depth = len(model.backbone.encoder.blocks)
    groups: dict[float, list] = {}
    for name, param in model.named_parameters():
        if name.startswith(("head.", "pool.")):
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
    config: ModelConfig | EncoderConfig | None = None,
    epochs: int = 30,
    lr: float = 1e-3,
    layer_decay: float = 0.75,
    batch_size: int = 32,
    lora_rank: int = 8,
    readout: str = "mean",
    seed: int = 0,
    validation: np.ndarray | None = None,
    rule: TrainingRule | None = None,
    curve: list[dict] | None = None,
) -> tuple[np.ndarray, list[float]]:
    """Train encoder + head on ``train``; return test probabilities and the training losses.

    ``backbone``: what :func:`neurofm.load` returns, or a :class:`~neurofm.models.backbone.NeuroFMEncoder` (``None``:
    ``config``'s architecture, from scratch). ``mode`` (:class:`~neurofm.finetune.loops.Mode`):
    ``finetune`` (everything, layer-wise LR decay), ``lora`` (rank-``lora_rank`` adapters on
    the frozen encoder's blocks, :func:`add_lora`, and the head), ``scratch`` (the same
    architecture from random weights, one learning rate for every layer), ``linear_probe``
    (the head alone on the frozen encoder). ``readout``: what the head reads
    (:class:`Classifier`; the sensor-axis readouts over the sensors every window shares).

    ``rule`` (:class:`~neurofm.finetune.loops.TrainingRule`) with ``validation`` (window
    indices of training subjects held out of ``train``): its epochs, learning rate, weight
    decay, batch size, warmup + cosine schedule and early stopping on the validation loss
    replace ``epochs``, ``lr`` and ``batch_size``; ``curve`` collects its per-epoch losses.
    Without a rule: ``epochs`` at a constant ``lr``, the last epoch's weights.
    """
    mode = Mode.of(mode)
    if rule is not None and validation is None:
        raise ConfigError("a training rule stops early on a validation split: pass validation= "
                          "(window indices of training subjects not in train)")
    if validation is not None and np.intersect1d(validation, train).size:
        raise ConfigError("validation windows must not be training windows")
    torch.manual_seed(seed)
    n_classes = int(labels.max()) + 1
    rows = shared_sensors(segments) if readout in SENSOR_AXIS else None
    model = Classifier(network_for(mode, backbone_of(backbone), config), n_classes, readout,
                       len(rows[0]) if rows else None)

    def run(idx: np.ndarray) -> torch.Tensor:
        take = torch.as_tensor(np.stack([rows[i] for i in idx])) if rows else None
        return model(collate_segments([segments[i] for i in idx]), take)

    if rule is not None:
        epochs, lr, batch_size = rule.max_epochs, rule.lr, rule.batch_size
    weight_decay = rule.weight_decay if rule is not None else 0.05
    params = prepare_mode(model, mode, lora_rank)
    if mode in (Mode.LORA, Mode.LINEAR_PROBE):
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    else:  # scratch has no pretrained layers to protect: one learning rate
        decay = 1.0 if mode is Mode.SCRATCH else layer_decay
        optimizer = torch.optim.AdamW(layerwise_param_groups(model, lr, decay), weight_decay=weight_decay)
    y = torch.as_tensor(labels, dtype=torch.long)

    def validation_loss() -> float:
        total = sum(nn.functional.cross_entropy(run(idx), y[idx], reduction="sum").item()
                    for idx in rate_batches(segments, np.asarray(validation), 64))
        return total / len(validation)

    losses = train_epochs(model, lambda idx: nn.functional.cross_entropy(run(idx), y[idx]),
                          lambda rng: rate_batches(segments, rng.permutation(train), batch_size, rng),
                          optimizer, epochs=epochs, seed=seed,
                          validation_error=validation_loss if validation is not None else None,
                          patience=rule.patience if rule is not None else None,
                          warmup_epochs=rule.warmup_epochs if rule is not None else None, curve=curve)
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
