"""Every Python snippet of README.md and docs/ runs, page by page, on the real data.

The blocks of one page run in order in one namespace, in a folder where the file names the
snippets use exist: links to the real recordings in ``../shared/data`` (the EEGMMI runs, the
nipy BOLD run, the Schaefer and CC200 atlases, ABIDE tables and phenotype) and a ``tiny``
export. A block that cannot run here says why in an HTML comment on the line above its
fence (``<!-- not run: needs the Hugging Face Hub -->``); it is still compiled.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"(?:^<!-- not run: (?P<why>[^>]+) -->\n)?^```python\n(?P<code>.*?)^```", re.M | re.S)


def snippets(page: Path) -> list[tuple[int, str, str | None]]:
    """(line, code, why it is not run or None) of each Python block of ``page``."""
    text = page.read_text()
    return [(text[: m.start("code")].count("\n") + 1, m.group("code"), m.group("why")) for m in FENCE.finditer(text)]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory, data_dir) -> Path:
    """A folder holding every file name the snippets use."""
    import pandas as pd
    import torch

    from neurofm.datasets import PrepareOptions, write_shards
    from neurofm.models.config import ModelConfig
    from neurofm.models.contract import input_contract
    from neurofm.models.io import save_pretrained
    from neurofm.models.mae import MaskedAutoencoder

    root = tmp_path_factory.mktemp("docs")
    eegmmidb, abide = data_dir / "meeg" / "eegmmidb", data_dir / "abide"
    links = {"S001": eegmmidb / "S001", "S002": eegmmidb / "S002",
             "sub-01_task-rest_eeg.edf": eegmmidb / "S001" / "S001R03.edf",
             "data/bids_eeg/sub-01/eeg/sub-01_task-motor_eeg.edf": eegmmidb / "S001" / "S001R03.edf",
             "data/bids_eeg/sub-02/eeg/sub-02_task-motor_eeg.edf": eegmmidb / "S002" / "S002R03.edf",
             "data/bids_eeg/sub-03/eeg/sub-03_task-motor_eeg.edf": eegmmidb / "S003" / "S003R03.edf",
             "sub-01_task-rest_bold.nii.gz": data_dir / "fmri" / "nipy_functional.nii.gz",
             "Schaefer400.nii.gz": data_dir / "atlases" / "Schaefer400_space-MNI152NLin6_res-2x2x2.nii.gz",
             "abide": abide}
    for name, target in links.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).symlink_to(target)
    # the run's confounds: the real fMRIPrep table, cut to the 20 volumes of the BOLD run
    table = pd.read_csv(data_dir / "fmri" / "fmriprep_desc-confounds_regressors.tsv", sep="\t")
    table.iloc[:20].to_csv(root / "sub-01_desc-confounds_timeseries.tsv", sep="\t", index=False)
    manifest = write_shards([eegmmidb / "S001" / "S001R03.edf", root / "sub-01_task-rest_bold.nii.gz"],
                            root / "corpus_of_the_export", PrepareOptions(window_s=4.0, fmri_window_s=30.0,
                                                            atlas=str(root / "Schaefer400.nii.gz"),
                                                            split_fractions=(1.0, 0.0, 0.0)))
    config = ModelConfig.named("tiny")
    torch.manual_seed(0)
    model = MaskedAutoencoder(config)
    save_pretrained(model, root / "runs" / "pretrain" / "export",
                    extra={"input_contract": input_contract(manifest, config.patch_s)})
    (root / "runs" / "eeg").mkdir()
    (root / "runs" / "eeg" / "export").symlink_to(root / "runs" / "pretrain" / "export")
    return root


@pytest.mark.parametrize("page", [p for p in PAGES if snippets(p)], ids=lambda p: p.name)
def test_snippets_run(page, sandbox, monkeypatch):
    found = snippets(page)
    monkeypatch.chdir(sandbox)
    monkeypatch.setenv("NEUROFM_PROGRESS", "0")
    namespace: dict = {"__name__": f"docs_{page.stem}"}
    for line, code, why in found:
        compiled = compile(code, f"{page.name}:{line}", "exec")
        if why is None:
            exec(compiled, namespace)  # noqa: S102 (the documentation's own code)


def test_no_python_block_escapes_the_runner():
    """Each ```python fence is one collected snippet (a malformed fence is not silently skipped)."""
    for page in PAGES:
        assert len(snippets(page)) == page.read_text().count("```python"), page.name
    assert sum(len(snippets(p)) for p in PAGES) >= 10
