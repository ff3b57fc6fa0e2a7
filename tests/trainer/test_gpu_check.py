"""bench/gpu_check.sh's CPU fallback runs end to end, so the GPU check cannot rot between GPU days."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.trainer


def test_gpu_check_cpu_fallback_reports_every_case(tmp_path: Path) -> None:
    out = tmp_path / "gpu-check.json"
    env = dict(os.environ, PYTHON=os.environ.get("PYTHON", str(Path(os.sys.executable))))
    proc = subprocess.run(
        [str(REPO / "bench" / "gpu_check.sh"), "--cpu", "--steps", "3", "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    report = json.loads(out.read_text())
    assert report["fallback"] is True and report["ok"] is True
    cases = {c["case"]: c for c in report["cases"]}
    assert set(cases) == {"lora", "lora-fast", "qlora", "zero3"}
    assert report["speedup_lora_fast"] > 0
    # the GPU-only speed options fall back on a CPU, each with its log line, and the run still succeeds
    fast = cases["lora-fast"]["speed_settings"]
    assert fast["attention"] == "default (sdpa)" and fast["liger_kernels"] is False, fast
    assert fast["padding_free"] is True and fast["optimizer"] == "adamw_torch_fused", fast
    assert any("ligerKernels" in line for line in fast["fallbacks"]), fast
    assert cases["lora"]["speed_settings"]["attention"] == "sdpa"
    assert cases["zero3"]["processes"] == 2
    for case in cases.values():
        assert case["phase"] == "Succeeded" and case["steps"] == 3, case
        assert case["tokens_per_second"] > 0 and case["loss_start"] > 0 and case["loss_end"] > 0, case
        assert case["cuda_paths"] == [] and case["mfu"] is None  # nothing CUDA-only on a CPU
        assert case["plan"]["shape_source"] == "config.json", case["plan"]
    # The trainer's estimate against the model states torch held (on a GPU: against the peak allocated);
    # DeepSpeed keeps its own buffers, so ZeRO-3 on a CPU has nothing comparable.
    for name in ("lora", "qlora"):
        assert abs(cases[name]["plan"]["error_percent"]) <= 10, cases[name]["plan"]
    assert "error_percent" not in cases["zero3"]["plan"]
    assert report["plan_max_abs_error_percent"] <= 10
