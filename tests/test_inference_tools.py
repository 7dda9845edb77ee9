"""Tools for applying a trained model: selftest, fuse, test_segments, extract-features."""

from __future__ import annotations

import importlib
import json

import pytest
import torch

from motionsqueeze import ops
from motionsqueeze.cli import main
from motionsqueeze.selftest import run_selftest

# The module, not the function of the same name that motionsqueeze.ops exports.
displacement_module = importlib.import_module("motionsqueeze.ops.displacement")


@pytest.fixture
def no_triton(monkeypatch):
    # The Triton interpreter is slow on CPU; tests/test_triton_displacement.py covers it.
    monkeypatch.setattr(ops, "available_backends", lambda: ["auto", "reference"])


def test_selftest_passes_on_cpu(no_triton):
    report = run_selftest("cpu", torch.float32)
    assert report.passed, report.to_dict()
    names = [c.name for c in report.checks]
    assert names == ["backend 'auto'", "backend 'reference'", "motion field res3", "motion path changes logits"]
    assert all(c.status == "ok" for c in report.checks)
    assert report.verdict().startswith("OK")


def test_selftest_catches_a_wrong_backend(monkeypatch):
    # A backend whose confidence is slightly off (the kind of error that trains silently).
    def skewed(f1, f2, *args):
        out = displacement_module.displacement_reference(f1, f2, *args)
        return out * torch.tensor([1.0, 1.0, 0.99], dtype=out.dtype)[:, None, None]

    monkeypatch.setitem(displacement_module._BACKENDS, "skewed", (skewed, lambda t: False))
    monkeypatch.setattr(ops, "available_backends", lambda: ["reference", "skewed"])
    report = run_selftest("cpu", torch.float32)
    status = {c.name: c.status for c in report.checks}
    assert status["backend 'reference'"] == "ok" and status["backend 'skewed'"] == "FAIL"
    assert not report.passed and "backend 'skewed'" in report.verdict()


def test_selftest_catches_a_dead_motion_path(monkeypatch, no_triton):
    # The original code's failure: the correlation op silently returned nothing useful.
    import motionsqueeze.layers.motion_squeeze as ms

    monkeypatch.setattr(ms, "displacement", lambda f1, f2, *a, **k: f1.new_zeros(f1.shape[0], 3, *f1.shape[2:]))
    report = run_selftest("cpu", torch.float32)
    status = {c.name: c.status for c in report.checks}
    assert status["motion field res3"] == "FAIL" and status["motion path changes logits"] == "FAIL"
    assert status["backend 'reference'"] == "ok"


def test_selftest_cli_prints_a_verdict_and_json(capsys, no_triton):
    assert main(["selftest", "--dtype", "bfloat16"]) == 0
    out = capsys.readouterr().out
    assert "OK: MotionSqueeze is computed correctly on cpu in bfloat16" in out
    assert main(["selftest", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["passed"] is True and doc["dtype"] == "float32" and len(doc["checks"]) == 4
