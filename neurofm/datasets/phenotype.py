"""Subject-level labels (diagnosis, age, sex ...) from participants.tsv / phenotype CSVs."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from typing import Any

import numpy as np

from neurofm.errors import NeurofmError

logger = logging.getLogger("neurofm.datasets")


def subject_key(subject: Any) -> str:
    """Canonical subject ID: no ``sub-`` prefix, lower case, leading zeros of numbers removed.

    ``'sub-0050002'``, ``'50002'``, ``50002`` and ``50002.0`` all map to ``'50002'``.
    """
    if isinstance(subject, float | np.floating) and float(subject).is_integer():
        subject = int(subject)
    key = re.sub(r"^sub-", "", str(subject).strip(), flags=re.IGNORECASE).lower()
    return re.sub(r"(?<![0-9])0+(?=[0-9])", "", key)


def read_phenotype(
    path: str | os.PathLike,
    id_column: str | None = None,
    label_columns: Iterable[str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Read a participants/phenotype table into ``{subject_key: {column: value}}``.

    Parameters
    ----------
    path : path-like
        TSV (BIDS ``participants.tsv``) or CSV (ABIDE/ADHD-200 phenotypic files);
        the separator is detected.
    id_column : str | None
        Column with subject IDs; default ``participant_id``, else the first of
        ``SUB_ID``, ``ScanDir ID``, ``subject``, ``subject_id``, ``ID`` present.
    label_columns : iterable of str | None
        Columns to keep (e.g. ``['DX_GROUP', 'AGE_AT_SCAN', 'SEX']``); default all.

    Returns
    -------
    dict
        Values are Python scalars; missing values (``n/a``, ``-9999``, empty) are None.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise NeurofmError("phenotype file not found", path)
    import pandas as pd  # on first use: prepare workers without a phenotype never need it

    table = pd.read_csv(path, sep=None, engine="python", dtype=str,
                        na_values=["n/a", "N/A", "NaN", "nan", "", "-9999", "#"])
    if id_column is None:
        candidates = ("participant_id", "SUB_ID", "ScanDir ID", "subject", "subject_id", "ID")
        id_column = next((c for c in candidates if c in table.columns), None)
        if id_column is None:
            raise NeurofmError(f"no subject ID column found; pass id_column= one of "
                               f"{list(table.columns)[:10]}", path)
    columns = list(label_columns) if label_columns is not None else [
        c for c in table.columns if c != id_column]
    absent = [c for c in [id_column, *columns] if c not in table.columns]
    if absent:
        raise NeurofmError(f"columns {absent} not in the table (has {list(table.columns)[:12]})", path)
    out: dict[str, dict[str, Any]] = {}
    for row in table[[id_column, *columns]].itertuples(index=False):
        key = subject_key(row[0])
        if key in out:
            raise NeurofmError(f"subject {row[0]!r} appears twice", path)
        out[key] = {c: _scalar(v) for c, v in zip(columns, row[1:], strict=True)}
    return out


def _scalar(value: Any) -> Any:
    import pandas as pd

    if value is None or (isinstance(value, float) and np.isnan(value)) or pd.isna(value):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return int(number) if number.is_integer() and "." not in str(value) else number


def join_phenotype(segments: list, phenotype: dict[str, dict[str, Any]], strict: bool = False) -> list:
    """Put each segment's subject row into ``meta['phenotype']`` (in place).

    Segments whose subject is not in the table get ``meta['phenotype'] = None``
    and are counted in a warning (an error with ``strict=True``).
    """
    missing: set[str] = set()
    for seg in segments:
        subject = seg.meta.get("subject")
        row = phenotype.get(subject_key(subject)) if subject is not None else None
        if row is None:
            missing.add(str(subject))
        seg.meta["phenotype"] = row
    if missing:
        message = f"{len(missing)} subjects have no phenotype row: {sorted(missing)[:10]}"
        if strict:
            raise NeurofmError(message)
        logger.warning(message)
    return segments
