"""Checkpoints in the Hub's layout: the input contract, the model card, from_pretrained
(a folder, the Hub cache offline), push_to_hub, and inputs the contract refuses."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch

import neurofm
from neurofm.datasets import PrepareOptions, write_shards
from neurofm.embedding import NeuroFM
from neurofm.errors import CheckpointError, InputContractError
from neurofm.models.card import model_card
from neurofm.models.contract import input_contract, tokenizer_defaults
from neurofm.models.io import save_pretrained
from neurofm.models.mae import MaskedAutoencoder, ModelConfig

ENV = {**os.environ, "NEUROFM_PROGRESS": "0", "PYTHONUNBUFFERED": "1"}
CLI = [sys.executable, "-m", "neurofm.cli"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, meeg) -> tuple[Path, dict]:
    """`neurofm prepare` of two real EEG recordings, 4 steps of `neurofm pretrain`, `neurofm export`."""
    root = tmp_path_factory.mktemp("hub")
    manifest = write_shards([meeg / "bdf" / "multiple_annotation_chans.bdf", meeg / "brainvision" / "test.vhdr"],
                            root / "shards", PrepareOptions(window_s=2.0, split_fractions=(0.5, 0.5, 0.0)))
    run = root / "run"
    steps = ["model=tiny", "trainer.max_steps=4", "optim.warmup_steps=1", "val_every_n_steps=2", "val_batches=1",
             "checkpoint.every_n_steps=1000", "data.batch_size=2", "data.num_workers=0"]
    done = subprocess.run([*CLI, "pretrain", "data=shards", f"data.shards={root / 'shards'}", f"run_dir={run}", *steps],
                          env=ENV, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    done = subprocess.run([*CLI, "export", f"ckpt={run / 'checkpoints' / 'last.ckpt'}", f"out={root / 'export'}"],
                          env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return root / "export", manifest


def test_export_holds_the_input_contract_and_a_model_card(exported):
    folder, manifest = exported
    assert {p.name for p in folder.iterdir()} == {"config.json", "model.safetensors", "README.md"}
    config = json.loads((folder / "config.json").read_text())
    contract = config["input_contract"]
    assert contract["modalities"] == ["eeg"]
    assert contract["meeg"]["sfreq"] == 200.0 and contract["meeg"]["window_s"] == 2.0
    assert contract["meeg"]["l_freq"] == 0.5 and contract["meeg"]["units"]["eeg"] == "uV"
    assert contract["corpus"]["windows"] == manifest["totals"]["samples"]
    assert contract["corpus"]["hours"] == pytest.approx(manifest["totals"]["hours"])
    recipe = config["pretraining"]  # kept apart from the architecture
    assert recipe["max_steps"] == 4 and recipe["optim"]["warmup_steps"] == 1 and "mask_ratio" not in config["encoder"]
    assert recipe["mae"]["mask_strategy"] == "mixed"
    card = (folder / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: neurofm\nlicense: bsd-3-clause\n")
    assert "- eeg\n" in card and "| `sfreq` | 200.0 |" in card and "- steps: 4" in card
    assert "- mask: mixed, ratio 0.75; target: signal" in card and "- optim.warmup_steps: 1" in card
    assert f"{contract['corpus']['windows']} windows" in card
    # a run with validation windows: its figures go on the card
    encoder = neurofm.load(folder).model
    n_params = sum(p.numel() for p in encoder.parameters())
    with_val = model_card(encoder.config, n_params, {**config, "validation": {"first": -0.03, "last": 0.21,
                                                                                  "best": 0.22}})
    assert "## Validation" in with_val and "-0.030 at the first evaluation, 0.210 at the last (best 0.220)" in with_val


def test_from_pretrained_serves_real_eeg_and_refuses_what_the_contract_excludes(exported, meeg, fmri, atlases):
    folder, _ = exported
    model = NeuroFM.from_pretrained(folder)
    assert model.contract["modalities"] == ["eeg"]
    out = model.embed(meeg / "brainvision" / "test.vhdr")
    assert out.windows.shape == (3, 64) and np.isfinite(out.windows).all()  # the contract's 2 s windows
    with pytest.raises(InputContractError, match=r"input_contract.meeg.sfreq is 200 Hz.*250 Hz"):
        model.embed(meeg / "brainvision" / "test.vhdr", sfreq=250.0)
    with pytest.raises(InputContractError, match=r"pretrained on eeg \(input_contract.modalities\); this input is fmri"):
        model.embed(fmri / "nipy_functional.nii.gz", atlas=atlases / "AAL_space-MNI152NLin6_res-2x2x2.nii.gz",
                    window_s=12.0)
    # saved again, the folder is the same model with the same contract
    again = NeuroFM.from_pretrained(model.save_pretrained(folder.parent / "again"))
    assert again.contract == model.contract
    for a, b in zip(model.model.state_dict().values(), again.model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_finetune_refuses_an_input_the_contract_excludes(exported, abide, tmp_path):
    folder, _ = exported
    tables = sorted((abide / "rois_cc200").glob("Caltech_*_rois_cc200.1D"))[:4]
    done = subprocess.run([*CLI, "finetune", "task=disorder", f"ckpt={folder}",
                           f"inputs=[{','.join(map(str, tables))}]", f"task.roi_coords={abide / 'CC200.nii.gz'}",
                           "task.roi_tr_s=2.0", f"task.phenotype={abide / 'Phenotypic_V1_0b_preprocessed1.csv'}",
                           "task.label=DX_GROUP", f"run_dir={tmp_path / 'run'}"],
                          env=ENV, capture_output=True, text=True, timeout=600)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "input_contract.modalities" in lines[-1] and "this input is fmri" in lines[-1]
    assert "task.cross_modal=true" in lines[-1]


def test_finetune_transfers_across_modalities_when_asked(exported, abide, tmp_path):
    """An EEG checkpoint probed on real fMRI tables (as multimodal.py does) with task.cross_modal."""
    folder, _ = exported
    tables = sorted((abide / "rois_cc200").glob("Caltech_*_rois_cc200.1D"))[::3][:12]  # both classes
    done = subprocess.run([*CLI, "finetune", "task=disorder", f"ckpt={folder}", "task.cross_modal=true",
                           f"inputs=[{','.join(map(str, tables))}]", f"task.roi_coords={abide / 'CC200.nii.gz'}",
                           "task.roi_tr_s=2.0", f"task.phenotype={abide / 'Phenotypic_V1_0b_preprocessed1.csv'}",
                           "task.label=DX_GROUP", "task.folds=2", "task.baseline=false", "task.window_s=60",
                           f"run_dir={tmp_path / 'run'}"],
                          env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["task"]["cross_modal"] is True
    predictions = (tmp_path / "run" / "predictions.csv").read_text().splitlines()
    assert len(predictions) == 1 + 12  # one row per subject


def test_scanner_space_bold_is_refused_for_an_mni_checkpoint(fmri, atlases):
    manifest = {"options": {"fmri_window_s": 60.0, "roi_coords": "CC200.nii.gz", "fmri": {}},
                "totals": {"hours_by_modality": {"fmri": 1.0}, "hours": 1.0, "samples": 60}}
    model = NeuroFM(MaskedAutoencoder(ModelConfig()),
                    info={"input_contract": input_contract(manifest, ModelConfig().patch_s)})
    assert model.contract["fmri"]["tr"] == "native TR of each run" and model.contract["fmri"]["atlas"] == "CC200.nii.gz"
    # nibabel's example run: NIfTI sform/qform code 1, scanner space
    with pytest.raises(InputContractError, match="coordinate_space is MNI; this image is in scanner space"):
        model.embed(fmri / "nibabel_example4d.nii.gz", atlas=atlases / "AAL_space-MNI152NLin6_res-2x2x2.nii.gz")
    out = model.embed(fmri / "nipy_functional.nii.gz", atlas=atlases / "AAL_space-MNI152NLin6_res-2x2x2.nii.gz",
                      window_s=12.0)
    assert out.windows.shape == (3, 64)


def test_contract_sets_only_what_differs_from_the_tokenizer_defaults():
    manifest = {"options": {"sfreq": 250.0, "window_s": 4.0, "meeg": {"l_freq": 1.0}},
                "totals": {"hours_by_modality": {"eeg": 2.0}}}
    contract = input_contract(manifest, ModelConfig().patch_s)
    assert tokenizer_defaults(contract, "meeg") == {"sfreq": 250.0, "l_freq": 1.0}
    assert tokenizer_defaults(contract, "fmri") == {} and tokenizer_defaults(None, "meeg") == {}
    fmri = {"options": {"fmri": {"resample_tr_s": 2.0, "high_pass": 0.01, "stride_s": 30.0}},
            "totals": {"hours_by_modality": {"fmri": 1.0}}}
    contract = input_contract(fmri, ModelConfig().patch_s)
    assert contract["fmri"]["tr"] == "resampled to 2.0 s" and "stride_s" not in contract["fmri"]
    assert tokenizer_defaults(contract, "fmri") == {"resample_tr_s": 2.0, "high_pass": 0.01}


def test_the_input_contract_is_typed_and_a_newer_one_is_refused(exported, tmp_path):
    """``model.contract`` is an InputContract: the dict of config.json (JSON, indexing, equality)
    with typed parts and the rules that read it; a contract of a newer version is refused at load."""
    from neurofm.models.contract import InputContract

    folder, manifest = exported
    model = neurofm.load(folder)
    contract = model.contract
    assert isinstance(contract, InputContract) and contract == json.loads((folder / "config.json").read_text())["input_contract"]
    assert contract.modalities == ["eeg"] and contract.meeg["sfreq"] == 200.0 and contract.fmri is None
    assert contract.corpus["windows"] == manifest["totals"]["samples"] and contract.window("meeg", 10.0) == 2.0
    assert json.loads(json.dumps(contract)) == contract
    newer = shutil.copytree(folder, tmp_path / "newer")
    config = json.loads((newer / "config.json").read_text())
    config["input_contract"]["version"] = 99
    (newer / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputContractError, match="input_contract.version 99 is newer than this neurofm reads"):
        neurofm.load(newer)


def test_fmri_options_are_the_fmri_tokenizers_defaults_and_are_checked():
    """FmriOptions holds the fMRI cleaning defaults once: they are those of tokenize_bold (and,
    for the options ROI tables take, tokenize_roi_table), so a contract written with them
    means what the tokenizers do."""
    import inspect
    from dataclasses import asdict

    from neurofm.errors import ConfigError
    from neurofm.tokenizers import tokenize_bold, tokenize_roi_table
    from neurofm.tokenizers.options import FmriOptions

    defaults = asdict(FmriOptions())
    for tokenizer in (tokenize_bold, tokenize_roi_table):
        signature = inspect.signature(tokenizer).parameters
        shared = {k: signature[k].default for k in defaults if k in signature}
        assert shared == {k: defaults[k] for k in shared} and len(shared) >= 3, tokenizer.__name__
    assert FmriOptions.of({"high_pass": 0.01}).high_pass == 0.01
    with pytest.raises(ConfigError, match="resample_tr_s must be positive or null"):
        FmriOptions(resample_tr_s=0)
    with pytest.raises(ConfigError, match="standardise"):
        FmriOptions.of({"standardise": False})


def hub_cache(tmp_path: Path, folder: Path, repo: str) -> Path:
    """The Hub cache layout (models--org--name/refs/main + snapshots/<commit>/), filled from ``folder``."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    entry = tmp_path / "hub" / f"models--{repo.replace('/', '--')}"
    shutil.copytree(folder, entry / "snapshots" / commit)
    (entry / "refs").mkdir()
    (entry / "refs" / "main").write_text(commit)
    return tmp_path / "hub"


def test_from_pretrained_reads_the_hub_cache_offline(exported, tmp_path, meeg):
    pytest.importorskip("huggingface_hub")
    folder, _ = exported
    cache = hub_cache(tmp_path, folder, "neurofm/tiny-eeg")
    code = ("import neurofm; m = neurofm.NeuroFM.from_pretrained('neurofm/tiny-eeg'); "
            f"print(m.embed({str(meeg / 'brainvision' / 'test.vhdr')!r}).windows.sum())")
    env = {**ENV, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    expected = NeuroFM.from_pretrained(folder).embed(meeg / "brainvision" / "test.vhdr").windows.sum()
    assert float(done.stdout.strip()) == pytest.approx(float(expected), rel=1e-5)
    code = "import neurofm; neurofm.NeuroFM.from_pretrained('neurofm/not-there')"
    done = subprocess.run([*CLI[:1], "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode != 0 and "neurofm/not-there: not in the local Hub cache" in done.stderr


def test_a_path_that_is_not_there_is_not_sent_to_the_hub(tmp_path):
    pytest.importorskip("huggingface_hub")
    for missing in (str(tmp_path / "no" / "such" / "folder"), tmp_path / "gone", "./runs/export"):
        with pytest.raises(CheckpointError, match="checkpoint not found"):
            neurofm.NeuroFM.from_pretrained(missing)


def test_push_to_hub_uploads_the_saved_folder(exported, monkeypatch):
    hub = pytest.importorskip("huggingface_hub")
    folder, _ = exported
    seen = {}

    class RecordingApi:  # stands in for the Hub server: records what would be uploaded
        def __init__(self, token=None):
            seen["token"] = token

        def create_repo(self, repo_id, private=None, exist_ok=False, repo_type=None):
            seen["repo"] = (repo_id, private, exist_ok, repo_type)

        def upload_folder(self, folder_path, repo_id, repo_type, allow_patterns, commit_message):
            seen["files"] = {p.name: p.read_bytes() for p in Path(folder_path).iterdir()}
            return "https://huggingface.co/org/name/commit/abc"

    monkeypatch.setattr(hub, "HfApi", RecordingApi)
    url = NeuroFM.from_pretrained(folder).push_to_hub("org/name", private=True, token="t")
    assert url.endswith("/commit/abc") and seen["repo"] == ("org/name", True, True, "model") and seen["token"] == "t"
    assert set(seen["files"]) == {"config.json", "model.safetensors", "README.md"}
    assert json.loads(seen["files"]["config.json"])["input_contract"]["modalities"] == ["eeg"]
    uploaded = safetensors.torch.load(seen["files"]["model.safetensors"])
    saved = safetensors.torch.load_file(str(folder / "model.safetensors"))
    assert set(uploaded) == set(saved)
    for name, tensor in saved.items():
        torch.testing.assert_close(uploaded[name], tensor, rtol=0, atol=0)


def test_a_model_without_contract_embeds_as_before(tmp_path, meeg):
    folder = save_pretrained(MaskedAutoencoder(ModelConfig()), tmp_path / "plain")
    assert "No input contract was recorded" in (folder / "README.md").read_text()
    model = neurofm.load(folder)
    assert model.contract is None
    assert model.embed(meeg / "brainvision" / "test.vhdr", sfreq=250.0).windows.shape[0] == 1


COMMITTED = Path(__file__).parent / "data" / "tiny-export-2026-12"


def test_the_committed_export_still_loads_and_embeds_real_eeg_and_fmri(eegmmidb, abide, tmp_path):
    """An export written by an earlier neurofm (tests/data, `neurofm pretrain model=tiny` on the
    demo corpus, then `neurofm export`) loads, keeps its contract, embeds a real EEGMMI run and
    an ABIDE table, and survives a save/load round trip unchanged."""
    model = neurofm.load(COMMITTED)
    assert model.contract["modalities"] == ["eeg", "fmri"] and model.config.dim == 64
    eeg = model.embed(eegmmidb / "S001" / "S001R04.edf")
    assert eeg.windows.shape == (31, 64) and np.isfinite(eeg.windows).all()  # 125 s in 4-s windows
    table = abide / "rois_cc200" / "Caltech_0051456_rois_cc200.1D"
    fmri = model.embed(table, atlas=abide / "CC200.nii.gz", tr_s=2.0)
    assert fmri.windows.shape[1] == 64 and np.isfinite(fmri.windows).all()
    again = neurofm.load(model.save_pretrained(tmp_path / "again"))
    np.testing.assert_array_equal(again.embed(eegmmidb / "S001" / "S001R04.edf").windows, eeg.windows)
    assert not np.allclose(eeg.windows[0], eeg.windows[1])
