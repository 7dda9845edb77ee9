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
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert len(cells) == 13 and "-" not in cells  # every column filled, the floor's too


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
    cells = [c.strip() for c in rows[0].split("|")[1:-1]]
    assert cells[6] == "-" and cells[11] == "-"  # no msnet-with-reference-op columns for tiny
    assert cells[7] != "-" and cells[12] != "-"  # the floor (no matching) is timed by default


def test_cpu_benchmark_refuses_a_thread_clock_with_several_threads():
    cmd = [sys.executable, str(BENCH / "cpu.py"), "--clock", "thread", "--threads", "2"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--clock thread" in done.stderr and "--threads 1" in done.stderr


def test_the_floor_replaces_only_the_matching_and_only_during_its_own_call(monkeypatch):
    import argparse

    import torch

    from motionsqueeze import create_model
    from motionsqueeze.layers import motion_squeeze
    from motionsqueeze.models.streaming import StreamingRecognizer

    monkeypatch.syspath_prepend(str(BENCH))
    import common
    import cpu

    names = ("displacement", "pair_features", "displacement_prepared")
    calls = []
    for name in names:
        real = getattr(motion_squeeze, name)
        monkeypatch.setattr(motion_squeeze, name, lambda *a, _real=real, _name=name, **k: calls.append(_name) or _real(*a, **k))
    spies = {name: getattr(motion_squeeze, name) for name in names}
    args = argparse.Namespace(classes=4, frames=2, channels_last=False)
    for work in ("infer", "train"):  # the whole clip, with and without autograd
        cpu._job(work, "msnet_tiny", {}, args, 16, 1)()
        assert calls == ["displacement"]  # the real matching ran
        calls.clear()
        cpu._job(work, "msnet_tiny", {"no_matching": True}, args, 16, 1)()
        assert calls == []  # the floor's did not ...
        assert {name: getattr(motion_squeeze, name) for name in names} == spies  # ... and is undone after
    torch.manual_seed(0)
    stream = StreamingRecognizer(create_model("msnet_tiny", num_classes=4, num_segments=2, causal=True).eval())
    frame = torch.randn(3, 16, 16)
    with torch.no_grad():
        stream.step(frame), stream.step(frame)
        assert "displacement_prepared" in calls  # the streaming step's matching
        calls.clear()
        floor = common.without_matching(stream.step)
        floor(frame), floor(frame)
    assert calls == [] and {name: getattr(motion_squeeze, name) for name in names} == spies
