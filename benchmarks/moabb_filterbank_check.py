"""Where the filter-bank tangent space differs from MOABB's evaluation
(``docs/moabb_eegmmi.json``: 0.659 against 0.609 AUC).

On the 10 EEGMMI subjects (``PhysionetMI`` read through MNE's cache layout, as in
``moabb_eegmmi.py``):

1. MOABB's own pipeline, ``FilterBank(Covariances("oas") + TangentSpace) + StandardScaler +
   LR``, fitted in this process on ``FilterBankLeftRightImagery().get_data`` of the other
   subjects, against :func:`neurofm.finetune.baselines.filter_bank_tangent_lr` on the same
   arrays: held-out AUC of subjects 1 and 2.
2. The same pipeline inside MOABB's ``CrossSubjectEvaluation`` (subjects 1-3), with a
   pass-through first step recording the shape and mean amplitude of the arrays the
   evaluation fits it on, beside the shape ``get_data`` returns.

usage: python benchmarks/moabb_filterbank_check.py [--out docs]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
from _common import data_dir
from moabb_eegmmi import mne_layout

from neurofm.io import write_text_atomic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs"))
    args = parser.parse_args()
    subjects = list(range(1, 11))
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MNE_DATASETS_EEGBCI_PATH"] = str(mne_layout(data_dir() / "meeg" / "eegmmidb", Path(tmp),
                                                               subjects))
        import mne
        import moabb
        from moabb.datasets import PhysionetMI
        from moabb.evaluations import CrossSubjectEvaluation
        from moabb.paradigms import FilterBankLeftRightImagery
        from moabb.pipelines.utils import FilterBank
        from pyriemann.estimation import Covariances
        from pyriemann.tangentspace import TangentSpace
        from sklearn.base import BaseEstimator, TransformerMixin
        from sklearn.linear_model import LogisticRegression
        from sklearn.metrics import roc_auc_score
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import LabelEncoder, StandardScaler

        from neurofm.finetune.baselines import filter_bank_tangent_lr

        mne.set_log_level("ERROR")
        warnings.filterwarnings("ignore")
        if hasattr(moabb, "set_download_provider"):
            moabb.set_download_provider("upstream")
        dataset = PhysionetMI(imagined=True, executed=False)
        dataset.subject_list, dataset.feet_runs = subjects, []
        paradigm = FilterBankLeftRightImagery()

        def moabb_pipeline(*first):
            return make_pipeline(*first, FilterBank(make_pipeline(Covariances("oas"), TangentSpace(metric="riemann"))),
                                 StandardScaler(), LogisticRegression(C=1.0, max_iter=5000, random_state=0))

        x, labels, meta = paradigm.get_data(dataset, subjects=subjects)
        y, owner = LabelEncoder().fit_transform(labels), meta["subject"].to_numpy()
        in_process = {}
        for subject in (1, 2):
            train, test = owner != subject, owner == subject
            ours = filter_bank_tangent_lr(list(np.moveaxis(x[train], -1, 0)), y[train],
                                          list(np.moveaxis(x[test], -1, 0)), 160.0, bands=None)
            theirs = moabb_pipeline().fit(x[train], y[train]).predict_proba(x[test])
            in_process[subject] = {"moabb_pipeline": float(roc_auc_score(y[test], theirs[:, 1])),
                                   "neurofm": float(roc_auc_score(y[test], ours[:, 1]))}
        seen: list[dict] = []

        class Record(TransformerMixin, BaseEstimator):
            def fit(self, X, y=None):
                seen.append({"shape": list(X.shape), "mean_abs": float(np.abs(X).mean())})
                return self

            def transform(self, X):
                return X

        dataset.subject_list = [1, 2, 3]
        evaluation = CrossSubjectEvaluation(paradigm=paradigm, datasets=[dataset], overwrite=True,
                                            hdf5_path=str(Path(tmp) / "moabb"), n_jobs=1)
        scores = evaluation.process({"fb_tangent_lr": moabb_pipeline(Record())})
        x3, _, meta3 = paradigm.get_data(dataset, subjects=[1, 2, 3])
        train3 = meta3["subject"].to_numpy() != 1
    out = {"moabb_version": moabb.__version__, "in_process_auc": in_process,
           "get_data": {"shape": list(x3[train3].shape), "mean_abs": float(np.abs(x3[train3]).mean())},
           "inside_cross_subject_evaluation": {"fit_on": seen[0], "auc_subjects_1_3": scores["score"].tolist()}}
    write_text_atomic(args.out / "moabb_filterbank_check.json", json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
