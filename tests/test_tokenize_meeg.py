"""Sensor-aware EEG/MEG tokenizer on every real device and format in ../shared/data."""

from __future__ import annotations

import shutil
import warnings

import mne
import numpy as np
import pytest

from neurofm.errors import MissingPositionsError, RecordingError
from neurofm.testing import read_eeglab_tutorial
from neurofm.tokenizers import Segment, plot_sensors, tokenize_events, tokenize_raw
from neurofm.tokenizers.cleaning import detect_line_freq
from neurofm.tokenizers.eeg_meg import UNIT_SCALE, read_recording

# file, options, expected kinds, expected modality
DEVICES = {
    "neuromag": ("neuromag/sample_audvis_trunc_raw_sss.fif", {"window_s": 0.5}, {"mag", "grad", "eeg"}, "meg"),
    "kit": ("kit/010409_Motor_task_coregist-export_tiny_1s.con", {"window_s": 0.5}, {"mag"}, "meg"),
    "bti": ("bti/test_pdf_linux", {"window_s": 0.25}, {"mag"}, "meg"),
    "brainvision": ("brainvision/test.vhdr", {"window_s": 2.0}, {"eeg"}, "eeg"),
    "egi": ("egi/test_egi.raw", {"window_s": 0.25, "reject_scaled": None}, {"eeg"}, "eeg"),
    "edf": ("edf/test_reduced.edf", {"window_s": 2.0, "on_missing_positions": "drop"}, {"eeg"}, "eeg"),
    "bdf": ("bdf/multiple_annotation_chans.bdf", {"window_s": 10.0}, {"eeg"}, "eeg"),
    "eeglab_chanloc": ("eeglab/test_raw_chanloc.set", {"window_s": 1.0}, {"eeg"}, "eeg"),
}


def eeglab_tutorial(meeg) -> mne.io.BaseRaw:
    return read_eeglab_tutorial(meeg, preload=False)


@pytest.fixture(scope="module", params=list(DEVICES))
def device(request, meeg):
    rel, options, kinds, modality = DEVICES[request.param]
    segments = tokenize_raw(meeg / rel, sfreq=200.0, **options)
    return request.param, segments, options, kinds, modality


def test_shapes_units_and_meta_on_every_device(device):
    name, segments, options, kinds, modality = device
    assert len(segments) >= 1, segments.report
    seg = segments[0]
    n = seg.n_sensors
    assert seg.signal.dtype == np.float32 and seg.signal.shape == (n, round(options["window_s"] * 200))
    assert seg.positions.shape == (n, 3) and np.isfinite(seg.positions).all()
    assert set(seg.kinds) == kinds and seg.modality == modality
    assert seg.meta["sfreq"] == 200.0 and len(seg.meta["ch_names"]) == n
    # positions are on a head: within 20 cm of the head-frame origin, not all at one point
    radius = np.linalg.norm(seg.positions, axis=1)
    assert radius.max() < 0.2 and np.ptp(seg.positions, axis=0).min() > 0.03
    assert all(seg.meta["unit_scale"][i] == UNIT_SCALE[k] for i, k in enumerate(seg.kinds))
    # robust scaling: a typical channel has unit robust SD over the recording (for recordings
    # long enough for the 0.5 Hz high-pass to settle; the EGI/KIT/BTi files last < 1.1 s)
    if len(segments) * options["window_s"] >= 5:
        assert 0.2 < np.median(np.abs(np.concatenate([s.signal for s in segments], axis=1))) < 3.0
    assert np.isfinite(seg.signal).all()


def test_orientations_are_unit_normals_for_meg_only(device):
    _, segments, *_ = device
    seg = segments[0]
    norms = np.linalg.norm(seg.orientations, axis=1)
    meg = np.isin(seg.kinds, ("mag", "grad"))
    assert np.allclose(norms[meg], 1.0, atol=1e-5)
    assert np.all(norms[~meg] == 0)


@pytest.mark.parametrize("name", ["neuromag", "kit", "bti"])
def test_meg_magnetometer_normals_point_away_from_head(meeg, name):
    rel, options, *_ = DEVICES[name]
    seg = tokenize_raw(meeg / rel, **options)[0]
    mags = np.asarray(seg.kinds) == "mag"
    centre = np.array([0.0, 0.0, 0.04])  # MNE's head-frame origin for MEG sphere models
    outward = np.einsum("ij,ij->i", seg.orientations[mags], seg.positions[mags] - centre)
    assert (outward > 0).mean() > 0.95


def test_meg_sensors_lie_outside_the_eeg_electrodes_in_head_frame(meeg):
    seg = tokenize_raw(meeg / DEVICES["neuromag"][0], window_s=0.5)[0]
    kinds = np.asarray(seg.kinds)
    centre = seg.positions[kinds == "eeg"].mean(axis=0)
    r_eeg = np.linalg.norm(seg.positions[kinds == "eeg"] - centre, axis=1)
    r_meg = np.linalg.norm(seg.positions[kinds == "mag"] - centre, axis=1)
    assert np.median(r_meg) > np.median(r_eeg) + 0.01


@pytest.mark.parametrize("rel", ["eeglab/test_raw_chanloc.set", "brainvision/test.vhdr"])
def test_cz_at_vertex_and_left_is_negative_x(meeg, rel):
    seg = tokenize_raw(meeg / rel, window_s=1.0)[0]
    names = [n.upper() for n in seg.meta["ch_names"]]
    cz = seg.positions[names.index("CZ")]
    assert abs(cz[0]) < 0.01 and cz[2] >= 0.9 * seg.positions[:, 2].max()
    for name, pos in zip(names, seg.positions, strict=True):
        if name[-1].isdigit():  # 10-20 convention: odd numbers left (x < 0), even right
            assert (pos[0] < 0) == (int(name[-1]) % 2 == 1), (name, pos)


def test_physical_round_trip_and_units_match_bare_mne(meeg):
    path = meeg / "brainvision" / "test.vhdr"
    segments = tokenize_raw(path, window_s=1.0, line_freq=None, reject_scaled=None)
    raw = mne.io.read_raw_brainvision(path, preload=True)
    raw.pick("eeg").resample(200.0, npad="auto").filter(0.5, 90.0)
    reference = raw.get_data()  # volts
    for seg in segments:
        start = round(seg.meta["onset_s"] * 200)
        expected = reference[:, start : start + seg.n_times]
        physical = seg.to_physical()
        assert np.max(np.abs(physical - expected)) / np.max(np.abs(expected)) < 1e-5
        # and back: physical -> scaled reproduces the stored signal
        unit = np.asarray(seg.meta["unit_scale"])[:, None]
        scale = np.asarray(seg.meta["channel_scale"])[:, None]
        again = physical * unit / scale
        assert np.max(np.abs(again - seg.signal)) / np.max(np.abs(seg.signal)) < 1e-5


def test_line_noise_notch_in_one_pass_matches_mne_notch_resample_band_pass(eegmmidb):
    """With a line frequency, the notch and the band-pass run as one kernel after the
    resampling: the samples are MNE's notch_filter -> resample -> filter chain's."""
    path = eegmmidb / "S001" / "S001R04.edf"  # 160 Hz -> 200 Hz, notch 60 Hz, band 0.5-72 Hz
    segments = tokenize_raw(path, window_s=10.0, line_freq=60.0, reject_scaled=None)
    assert segments[0].meta["filter"] == {"l_freq": 0.5, "h_freq": 72.0, "line_freq": 60.0,
                                          "average_reference": False}
    raw = mne.io.read_raw_edf(path, preload=True).pick("eeg")
    reference = raw.notch_filter([60.0]).resample(200.0, npad="auto").filter(0.5, 72.0).get_data()
    peak = np.abs(reference).max()
    for seg in segments:  # the first and last windows include the padded edges
        start = round(seg.meta["onset_s"] * 200)
        expected = reference[:, start : start + seg.n_times]
        assert np.abs(seg.to_physical() - expected).max() / peak < 1e-4
    # and the notch is there: 60 Hz power drops by orders of magnitude against no notch
    plain = tokenize_raw(path, window_s=10.0, line_freq=None, reject_scaled=None)
    def power_at_60(segs):
        x = np.concatenate([s.to_physical() for s in segs], axis=1)
        spectrum = np.abs(np.fft.rfft(x, axis=1)) ** 2
        freqs = np.fft.rfftfreq(x.shape[1], 1 / 200)
        return spectrum[:, np.abs(freqs - 60.0) < 0.1].mean()
    assert power_at_60(segments) < 1e-2 * power_at_60(plain)


def _covered_events(raw, n_windows: int, window_s: float) -> int:
    ann = raw.annotations
    onset = ann.onset - (raw.first_time if ann.orig_time is not None else 0.0)
    good = np.array([not d.upper().startswith(("BAD", "EDGE")) for d in ann.description])
    return int((good & (onset >= 0) & (onset < n_windows * window_s)).sum())


@pytest.mark.parametrize("rel,window_s", [("brainvision/test.vhdr", 0.5),
                                          ("bdf/multiple_annotation_chans.bdf", 5.0),
                                          ("edf/test_reduced.edf", 1.0)])
def test_window_events_count_equals_annotations(meeg, rel, window_s):
    segments = tokenize_raw(meeg / rel, window_s=window_s, reject_scaled=None,
                            on_missing_positions="drop")
    raw = read_recording(meeg / rel)
    assert len(raw.annotations) > 0
    assert not segments.report["rejected"]
    total = sum(len(s.meta["events"]) for s in segments)
    assert total == _covered_events(raw, len(segments), window_s)
    for seg in segments:
        assert all(0 <= e["onset_s"] < window_s for e in seg.meta["events"])


def test_eeglab_tutorial_154_events_with_tutorial_channel_names(meeg):
    raw = eeglab_tutorial(meeg)
    segments = tokenize_raw(raw, window_s=2.0, reject_scaled=None)
    labels = [e["label"] for s in segments for e in s.meta["events"]]
    assert len(labels) == _covered_events(raw, len(segments), 2.0)
    assert labels.count("square") + labels.count("rt") == len(labels) > 140
    assert {"EOG1", "EOG2"} <= set(segments[0].meta["dropped_channels"])
    assert segments[0].n_sensors == 30


def test_tokenize_events_is_event_locked(meeg):
    raw = eeglab_tutorial(meeg)
    segments = tokenize_events(raw, event_id=["square", "rt"], tmin=-0.2, tmax=0.8,
                               reject_scaled=None)
    assert {s.meta["label"] for s in segments} == {"square", "rt"}
    assert all(s.signal.shape == (30, 200) for s in segments)
    counts = {lab: sum(s.meta["label"] == lab for s in segments) for lab in ("square", "rt")}
    assert counts == {"square": 80, "rt": 74}
    for seg in segments[:5]:
        assert seg.meta["onset_s"] == pytest.approx(seg.meta["event_onset_s"] - 0.2, abs=0.005)


def test_channel_order_invariance(meeg):
    raw = mne.io.read_raw_brainvision(meeg / "brainvision" / "test.vhdr", preload=True)
    order = np.random.default_rng(0).permutation(len(raw.ch_names))
    shuffled = raw.copy().reorder_channels([raw.ch_names[i] for i in order])
    a = tokenize_raw(raw, window_s=2.0)
    b = tokenize_raw(shuffled, window_s=2.0)
    assert len(a) == len(b)
    perm = [a[0].meta["ch_names"].index(n) for n in b[0].meta["ch_names"]]
    assert perm != list(range(len(perm)))
    for sa, sb in zip(a, b, strict=True):
        expected = sa.permute(perm)
        np.testing.assert_allclose(sb.signal, expected.signal, atol=1e-5)
        np.testing.assert_array_equal(sb.positions, expected.positions)
        assert sb.kinds == expected.kinds and sb.meta["ch_names"] == expected.meta["ch_names"]


def test_line_noise_detected_and_notched(meeg):
    raw = mne.io.read_raw_brainvision(meeg / "brainvision" / "test.vhdr", preload=True).pick("eeg")
    t = raw.times
    raw._data += 50e-6 * np.sin(2 * np.pi * 60.0 * t)  # strong 60 Hz mains on every channel
    assert detect_line_freq(raw.get_data(), raw.info["sfreq"]) == 60.0
    seg = tokenize_raw(raw, window_s=2.0, reject_scaled=None)
    assert seg[0].meta["filter"]["line_freq"] == 60.0
    x = np.concatenate([s.to_physical() for s in seg], axis=1)
    spectrum = np.abs(np.fft.rfft(x, axis=1)).mean(axis=0)
    freqs = np.fft.rfftfreq(x.shape[1], 1 / 200.0)
    at_60 = spectrum[np.abs(freqs - 60) < 0.5].max()
    around = np.median(spectrum[(np.abs(freqs - 60) > 3) & (np.abs(freqs - 60) < 10)])
    assert at_60 < 3 * around


# --------------------------------------------------------------------------- bad input


def test_missing_positions_names_channels_and_options(meeg):
    with pytest.raises(MissingPositionsError, match=r"test_raw.set: 32 of 32 channels have no "
                       r"position \(EEG 000, EEG 001.*montage="):
        tokenize_raw(meeg / "eeglab" / "test_raw.set")


def test_unknown_channel_names_are_an_error_or_dropped(meeg):
    raw = mne.io.read_raw_brainvision(meeg / "brainvision" / "test.vhdr", preload=True)
    raw.rename_channels({"Cz": "Xq1", "Pz": "Xq2"})
    with pytest.raises(MissingPositionsError, match=r"2 of 26 channels have no position \(Xq1, Xq2\)"):
        tokenize_raw(raw, window_s=2.0)
    segments = tokenize_raw(raw, window_s=2.0, on_missing_positions="drop")
    assert segments[0].n_sensors == 24
    assert segments[0].meta["dropped_channels"] == {"Xq1": "no position", "Xq2": "no position"}


def test_truncated_file_is_an_error_unless_allowed(meeg, tmp_path):
    data = (meeg / "edf" / "test_reduced.edf").read_bytes()
    truncated = tmp_path / "sub-01_eeg.edf"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(RecordingError, match=r"sub-01_eeg.edf: file holds \d+ data records but its header "
                                             r"declares \d+: truncated\?"):
        tokenize_raw(truncated, window_s=1.0, on_missing_positions="drop")
    segments = tokenize_raw(truncated, window_s=1.0, on_missing_positions="drop",
                            allow_truncated=True)
    assert 1 <= len(segments) < 6


@pytest.mark.parametrize("declared", [b"10      ", b"-1      "])
def test_edf_header_that_undercounts_is_not_truncation(eegmmidb, tmp_path, declared, caplog):
    data = bytearray((eegmmidb / "S001" / "S001R04.edf").read_bytes())
    assert data[236:244] == b"125     "
    data[236:244] = declared  # a recorder that was not stopped cleanly, or wrote -1
    path = tmp_path / "S001R04.edf"
    path.write_bytes(bytes(data))
    with caplog.at_level("WARNING", logger="neurofm"):
        segments = tokenize_raw(path, window_s=4.0)
    assert len(segments) == 31  # all 125 one-second records are read
    assert f"header declares {int(declared)} data records, the file holds 125" in caplog.text


@pytest.mark.parametrize("content", [b"", b"0       not an edf header" * 20])
def test_unreadable_file(tmp_path, content):
    path = tmp_path / "broken.edf"
    path.write_bytes(content)
    with pytest.raises(RecordingError, match="broken.edf: (file is empty|cannot read recording)"):
        tokenize_raw(path)


def test_shorter_than_window(meeg):
    with pytest.raises(RecordingError, match=r"lasts 1.00\d s, shorter than one window \(10 s\)"):
        tokenize_raw(meeg / DEVICES["kit"][0], window_s=10.0)


def test_no_usable_channels(meeg):
    with pytest.raises(RecordingError, match="no usable channels of kinds \\['seeg'\\]"):
        tokenize_raw(meeg / "brainvision" / "test.vhdr", window_s=2.0, kinds=("seeg",))


def test_sampling_rate_below_band(meeg):
    with pytest.raises(RecordingError, match=r"sampling rate 128 Hz is below 2x the requested band top 100 Hz"):
        tokenize_raw(eeglab_tutorial(meeg), h_freq=100.0)


def test_nan_samples_reject_windows_and_nan_channels_are_dropped(meeg):
    raw = mne.io.read_raw_brainvision(meeg / "brainvision" / "test.vhdr", preload=True)
    raw._data[raw.ch_names.index("Fz")] = np.nan        # a dead channel
    raw._data[:, 2500:2600] = np.nan                     # a gap at 2.5-2.6 s
    segments = tokenize_raw(raw, window_s=1.0, reject_scaled=None)
    assert segments[0].meta["dropped_channels"]["Fz"] == "all samples NaN/inf"
    assert [r["onset_s"] for r in segments.report["rejected"]] == [2.0]
    assert len(segments) == 6 and all(np.isfinite(s.signal).all() for s in segments)
    raw._data[:] = np.nan
    with pytest.raises(RecordingError, match="no usable channels: all 26 are flat, saturated or NaN"):
        tokenize_raw(raw, window_s=1.0)


def test_flat_and_extreme_windows(meeg):
    raw = mne.io.read_raw_brainvision(meeg / "brainvision" / "test.vhdr", preload=True)
    raw._data[raw.ch_names.index("Pz")] = 0.0
    raw._data[raw.ch_names.index("Cz"), 4100:4120] += 0.05  # a 50 mV artefact at 4.1 s
    segments = tokenize_raw(raw, window_s=1.0)
    assert segments[0].meta["dropped_channels"]["Pz"] == "flat"
    assert any(r["onset_s"] == 4.0 and "amplitude" in r["reason"] for r in segments.report["rejected"])


def test_lazy_crop_reads_only_the_span(meeg, monkeypatch):
    raw = eeglab_tutorial(meeg)  # not preloaded: 30 504 samples per channel on disk
    read = []
    original = type(raw)._read_segment_file

    def counting(self, data, idx, fi, start, stop, *args):
        read.append(stop - start)
        return original(self, data, idx, fi, start, stop, *args)

    monkeypatch.setattr(type(raw), "_read_segment_file", counting)
    segments = tokenize_raw(raw, window_s=2.0, tmin_s=100.0, tmax_s=110.0)
    assert len(segments) == 5
    assert segments[0].meta["onset_s"] == 0.0
    # only the 10 s span (1281 samples at 128 Hz) came off the disk, not the 238 s recording
    assert 0 < sum(read) <= 1281


def test_bids_entities_from_file_name(meeg, tmp_path):
    bids_name = tmp_path / "sub-07_ses-2_task-rest_run-01_eeg.vhdr"
    for ext in (".vhdr", ".vmrk", ".eeg"):
        shutil.copy(meeg / "brainvision" / f"test{ext}", bids_name.with_suffix(ext))
    text = bids_name.read_text().replace("test.eeg", bids_name.with_suffix(".eeg").name)
    bids_name.write_text(text.replace("test.vmrk", bids_name.with_suffix(".vmrk").name))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        meta = tokenize_raw(bids_name, window_s=2.0)[0].meta
    assert (meta["subject"], meta["session"], meta["task"], meta["run"]) == ("07", "2", "rest", "01")


def test_segment_validates_shapes():
    with pytest.raises(ValueError, match="positions"):
        Segment(np.zeros((3, 10), np.float32), np.zeros((2, 3)), np.zeros((3, 3)), ("eeg",) * 3)


def test_plot_sensors_writes_png(meeg, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    seg = tokenize_raw(meeg / DEVICES["neuromag"][0], window_s=0.5)[0]
    out = tmp_path / "sensors.png"
    fig = plot_sensors(seg, fname=out)
    assert out.stat().st_size > 10_000
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["grad (204)", "mag (102)", "eeg (60)"]


def test_string_options_are_checked(meeg):
    from neurofm.errors import ConfigError

    path = meeg / "brainvision" / "test.vhdr"
    with pytest.raises(ConfigError, match=r"on_missing_positions must be one of 'raise', 'drop'; got 'dorp' "
                                          r"\(did you mean 'drop'\?\)"):
        tokenize_raw(path, window_s=1.0, on_missing_positions="dorp")
    with pytest.raises(ConfigError, match="events_from must be one of 'auto', 'annotations', 'stim'; got 'annotation'"):
        tokenize_raw(path, window_s=1.0, events_from="annotation")


def test_cleaning_steps_leave_the_callers_raw_alone_and_do_what_they_say(eegmmidb):
    """The named steps of ``tokenize_raw`` on a real EEGMMI run: the caller's Raw (with a NaN
    burst) is unchanged afterwards; ``zero_nonfinite`` marks and zeroes exactly the NaN
    instants; ``average_reference`` leaves every instant's EEG mean at 0; the samples a step
    reads cannot be written."""
    from neurofm.tokenizers import tokenize_raw
    from neurofm.tokenizers.steps import average_reference, samples_of, zero_nonfinite

    raw = mne.io.read_raw_edf(eegmmidb / "S001" / "S001R04.edf", preload=True, verbose="error")
    raw._data[3, 1000:1200] = np.nan
    before = raw.get_data()
    segments = tokenize_raw(raw, window_s=2.0, average_reference=True)
    np.testing.assert_array_equal(raw.get_data(), before)  # NaN included: same positions, same values
    assert len(segments) > 0 and all(np.isfinite(s.signal).all() for s in segments)
    work = raw.copy()
    mask = zero_nonfinite(work, "S001R04.edf")
    assert mask.sum() == 200 and mask[1000:1200].all()
    assert np.isfinite(work.get_data()).all() and (work.get_data()[3, 1000:1200] == 0).all()
    np.testing.assert_array_equal(work.get_data()[:, ~mask], before[:, ~mask])
    average_reference(work, tuple(["eeg"] * len(work.ch_names)))
    np.testing.assert_allclose(work.get_data().mean(axis=0), 0.0, atol=1e-12)
    with pytest.raises(ValueError, match="read-only"):
        samples_of(work)[0, 0] = 1.0
