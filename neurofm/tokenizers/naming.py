"""Subject, session, task and run from a file name: BIDS entities, known release layouts,
or a pattern the user gives."""

from __future__ import annotations

import re
from pathlib import Path

from neurofm.errors import ConfigError

ENTITY_KEYS = ("subject", "session", "task", "run", "site")
# Preprocessed Connectomes Project (ABIDE, ADHD-200): <SITE>_<SUB_ID>_rois_<atlas>.1D
PCP_PATTERN = re.compile(r"^(?P<site>.+?)_(?P<subject>\d+)_rois_[^.]+")
# PhysioNet EEG Motor Movement/Imagery: S001R04.edf
EEGMMI_PATTERN = re.compile(r"^(?P<subject>S\d{3})R(?P<run>\d{2})$")


def check_subject_pattern(pattern: str | None) -> re.Pattern | None:
    """Compile a user's ``subject_pattern``; it needs a ``(?P<subject>...)`` group or one group."""
    if pattern is None:
        return None
    try:
        compiled = re.compile(pattern)
    except re.error as err:
        raise ConfigError(f"subject_pattern {pattern!r} is not a regular expression ({err})") from err
    if "subject" not in compiled.groupindex and compiled.groups != 1:
        raise ConfigError(f"subject_pattern {pattern!r} needs a (?P<subject>...) group, or exactly "
                          "one group, that captures the subject ID from the file name")
    return compiled


def entities_from_name(source: str, subject_pattern: str | None = None,
                       stem_fallback: bool = True) -> dict[str, str]:
    """Subject/session/task/run (and site) of a recording, from its file name.

    In order: ``subject_pattern`` (a regular expression searched in the file name, with
    a ``(?P<subject>...)`` group or a single group; other named groups among session,
    task, run and site are kept too), BIDS entities (``sub-01_ses-1_task-rest_...``),
    the Preprocessed Connectomes Project layout (``<SITE>_<SUB_ID>_rois_<atlas>.1D`` ->
    ``SUB_ID``, ``SITE``), PhysioNet's ``S001R04.edf``, else the file stem.

    Parameters
    ----------
    source : str
        Path or file name.
    subject_pattern : str | None
        Regular expression for the subject (see above).
    stem_fallback : bool
        Whether a name in none of these layouts gives its stem as the subject; if not, such a
        name gives no ``subject``.

    Returns
    -------
    dict
        ``subject`` (unless ``stem_fallback`` is false and no layout matched) and any
        other entity found.
    """
    name = Path(source).name
    stem = name.split(".")[0]
    compiled = check_subject_pattern(subject_pattern)
    if compiled is not None:
        match = compiled.search(name)
        if match is None:
            raise ConfigError(f"subject_pattern {subject_pattern!r} does not match this file name; "
                              "fix the pattern or the file name", source)
        found = {k: v for k, v in match.groupdict().items() if k in ENTITY_KEYS and v is not None}
        if "subject" not in found:
            found["subject"] = match.group(1)
        return found
    if "sub-" in name:  # BIDS entities count only with a subject (mne-bids: 0.5 ms a name)
        from mne_bids import get_entities_from_fname

        try:
            ents = get_entities_from_fname(name, on_error="ignore")
        except Exception:  # mne-bids raises on some non-BIDS names: treat as no entities
            ents = {}
        found = {k: v for k, v in ents.items() if v is not None and k in ENTITY_KEYS}
        if "subject" in found:
            return found
    for known in (PCP_PATTERN, EEGMMI_PATTERN):
        match = known.match(stem)
        if match:
            return {k: v for k, v in match.groupdict().items() if v is not None}
    return {"subject": stem} if stem_fallback else {}
