"""benchmarks/cpu.py runs end to end and prints both tables (tiny settings; no time is asserted)."""

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def test_cpu_benchmark_prints_the_op_and_model_tables():
    cmd = [sys.executable, str(BENCH / "cpu.py"), "--shapes", "2x4x6x6", "--families", "tiny", "--works", "infer",
           "--frames", "2", "--classes", "4", "--rounds", "1", "--warmup", "0", "--threads", "1"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True).stdout
    assert "displacement, P = 15, float32" in out and "| 2x4x6x6 " in out
    assert "whole models, float32" in out and "| tiny   | inference |" in out
    row = next(line for line in out.splitlines() if line.startswith("| tiny"))
    assert len(row.split("|")) == 13  # 11 columns, every one filled


def test_cpu_benchmark_profiles_what_msnet_adds_and_skips_untimed_training():
    common = ["--families", "tiny", "--frames", "2", "--classes", "4", "--rounds", "1", "--warmup", "0",
              "--threads", "1", "--shapes", ""]
    out = subprocess.run([sys.executable, str(BENCH / "cpu.py"), *common, "--profile"],
                         capture_output=True, text=True, timeout=300, check=True).stdout
    assert "| operator" in out and "| msnet - tsm |" in out and "| (all operators)" in out
    out = subprocess.run([sys.executable, str(BENCH / "cpu.py"), *common, "--train-families", "r18",
                          "--reference-op-families", "", "--clock", "thread", "--channels-last"],
                         capture_output=True, text=True, timeout=300, check=True).stdout
    assert "(ms of CPU time of the one thread)" in out and "whole models, float32, channels-last" in out
    rows = [line for line in out.splitlines() if line.startswith("| tiny")]
    assert len(rows) == 1 and "| inference |" in rows[0]  # no tiny training row
    assert rows[0].rstrip(" |").endswith("-")  # no msnet-with-reference-op column for tiny


def test_cpu_benchmark_refuses_a_thread_clock_with_several_threads():
    cmd = [sys.executable, str(BENCH / "cpu.py"), "--clock", "thread", "--threads", "2"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--clock thread" in done.stderr and "--threads 1" in done.stderr
