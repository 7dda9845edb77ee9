"""The benchmark scripts run end to end (tiny settings; no time is asserted)."""

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def test_throughput_script_prints_its_tables():
    cmd = [sys.executable, str(BENCH / "throughput.py"), "--device", "cpu", "--models", "tsm_tiny,msnet_tiny",
           "--size", "32", "--frames", "2", "--batch", "2", "--precisions", "fp32,bf16", "--modes", "eager",
           "--memory-formats", "contiguous", "--warmup", "0", "--repeat", "1", "--profile"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True).stdout
    assert "training step, 2 clips of 32x32" in out and "single-clip inference" in out
    assert "MSNet time / TSM time" in out
    assert out.count("| msnet_tiny |") == 2 * 2 + 2 * 2  # train + inference rows, then the two ratio tables
    # --profile: one operator table per model, of its first setting (fp32)
    assert "profile, 3 training steps of tsm_tiny (2 frames, fp32, eager, contiguous)" in out
    assert "profile, 3 training steps of msnet_tiny" in out and "aten::convolution" in out


def test_backbones_script_prints_its_table():
    cmd = [sys.executable, str(BENCH / "backbones.py"), "--backbones", "tiny", "--size", "32", "--frames", "2",
           "--rounds", "1", "--warmup", "0"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True).stdout
    assert "1 clip of 2x32x32, fp32" in out and "MSNet / TSM" in out
    assert out.count("| tiny ") == 1 and " s in all" in out


def test_backbones_script_names_an_unregistered_backbone():
    cmd = [sys.executable, str(BENCH / "backbones.py"), "--backbones", "tiny,r19"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert "unregistered models ['tsm_r19', 'msnet_r19']" in run.stderr and "tsm_r18" in run.stderr
