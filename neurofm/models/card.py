"""The model card (``README.md``) of an exported encoder: Hub metadata, the architecture, the
input contract, the pretraining corpus and recipe, and the validation figures."""

from __future__ import annotations

from typing import Any

from neurofm.models.config import EncoderConfig


def model_card(architecture: EncoderConfig, n_params: int, config: dict[str, Any]) -> str:
    """A Hub model card: metadata (``library_name: neurofm``, license, tags) and what a user
    needs to know before feeding the model data: size, input contract, corpus, recipe, figures."""
    contract = config.get("input_contract") or {}
    modalities = contract.get("modalities") or []
    c = architecture
    lines = ["---", "library_name: neurofm", "license: bsd-3-clause", "tags:",
             *[f"- {t}" for t in ("neuroscience", "foundation-model", "masked-autoencoder", *modalities)],
             "---", "", "# neurofm encoder", "",
             f"A neurofm encoder ({n_params / 1e6:.2f} M parameters: dim {c.dim}, depth {c.depth}, "
             f"{c.heads} heads, {c.stem} patch stem; patches of "
             f"{', '.join(f'{m} {s:g} s' for m, s in c.patch_s.items())}), saved by neurofm "
             f"{config.get('neurofm_version', '?')}.", "",
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
    recipe = config.get("pretraining") or {}
    if recipe:
        head = recipe.get("mae") or {}
        lines += ["## Pretraining recipe", "",
                  "Masked autoencoding; the decoder and loss are not part of this encoder.", "",
                  *([f"- mask: {head['mask_strategy']}, ratio {head['mask_ratio']}; target: {head['target']}"]
                    if head else []),
                  *[f"- model.{k}: {v}" for k, v in head.items() if k not in ("mask_strategy", "mask_ratio", "target")],
                  *([f"- steps: {recipe['max_steps']}"] if "max_steps" in recipe else []),
                  *[f"- optim.{k}: {v}" for k, v in (recipe.get("optim") or {}).items()], ""]
    if "validation" in config:
        v = config["validation"]
        lines += ["## Validation", "", f"Masked-token R² on the validation split: {v['first']:.3f} at the "
                  f"first evaluation, {v['last']:.3f} at the last (best {v['best']:.3f}).", ""]
    return "\n".join(lines)
