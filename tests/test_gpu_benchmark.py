"""benchmarks/gpu.py --dry-run: the one-command GPU measurement runs its code paths on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SDPA_OPS = {"flash": "_flash_attention", "memory-efficient": "_efficient_attention", "cudnn": "_cudnn_attention"}


@pytest.mark.slow  # a training run in a subprocess
def test_gpu_measurement_dry_run_on_cpu(tmp_path):
    result = subprocess.run([sys.executable, str(BENCHMARKS / "gpu.py"), "--dry-run", "--steps", "12",
                             "--work", str(tmp_path / "work"), "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=900, cwd=BENCHMARKS,
                            env={**os.environ, "NEUROFM_PROGRESS": "0"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = json.loads((tmp_path / "gpu_dry_run.json").read_text())
    (run,) = out["pretrain"]
    assert (run["model"], run["trainer"], run["steps"]) == ("tiny", "cpu", 12)
    assert run["step_s"] > 0 and run["tokens_per_s"] > 0 and run["mfu"] is None
    for batch in ("unpadded", "padded"):  # the kernel named is the SDPA op the profiler saw
        seen = out["sdpa"][batch]
        assert seen["ops"] and any(op.startswith("aten::_scaled_dot_product_") for op in seen["ops"])
        assert seen["kernel"] != "math" and any(SDPA_OPS[seen["kernel"]] in op for op in seen["ops"])
    assert out["reference"]["ratio"] > 0 and out["reference"]["windows"] >= 2
    assert out["zero3_export"]["max_abs_diff"] == 0.0  # fp32 ZeRO-3: the export is the live model
    assert out["resume"] == {"trainer": "cpu", "ended_at": 12, "resumed_at": 12, "now_at": 16, "ok": True}
    assert "| tiny | cpu |" in result.stdout and "resume (cpu): ended at 12, continued at 12" in result.stdout
