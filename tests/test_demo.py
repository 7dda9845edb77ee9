"""``motionsqueeze demo``: how the command ends when a run is stopped or its folder is busy."""

import pytest

import motionsqueeze.demo
from motionsqueeze.cli import main
from motionsqueeze.engine.preemption import Preempted
from motionsqueeze.engine.run_lock import RunFolderBusyError


@pytest.mark.parametrize("error,code,message", [
    (Preempted("stopped on request (SIGTERM) after saving runs/x/checkpoints/last.pt"), 75,
     "saving runs/x/checkpoints/last.pt\n(the demo resumes by itself: run the same demo command again"),
    (RunFolderBusyError("runs/x is in use by process 12"), 2, "error: runs/x is in use by process 12"),
])
def test_a_stopped_or_busy_run_ends_the_demo_with_a_message(monkeypatch, capsys, tmp_path, error, code, message):
    seen = {}

    def stopped(out, models, overrides):
        seen.update(out=out, models=models, overrides=overrides)
        raise error

    monkeypatch.setattr(motionsqueeze.demo, "run_demo", stopped)
    argv = ["demo", "--out", str(tmp_path), "--models", "tsn_mbv2_050, msnet_mbv2_050", "--set", "schedule.epochs=1"]
    assert main(argv) == code
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert seen == {"out": str(tmp_path), "models": ("tsn_mbv2_050", "msnet_mbv2_050"), "overrides": ["schedule.epochs=1"]}
