"""Run folders in the real world: one writer, honest resume, preemption, clean failures."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from motionsqueeze.cli import main
from motionsqueeze.engine import NonFiniteLossError, fit
from motionsqueeze.engine.checkpoint import load_checkpoint, save_checkpoint
from motionsqueeze.engine.config import config_to_dict
from motionsqueeze.engine.preemption import PREEMPTED_EXIT_CODE
from motionsqueeze.engine.resume import check_resume_config
from motionsqueeze.engine.run_lock import RunFolderBusyError, RunLock
from test_trainer import tiny_config

# A trainer in a subprocess that, after step PAUSE_AT, writes MARKER (its pid) and waits
# until a stop is requested (a signal) or it is killed: the test acts on the marker, never
# on a guessed sleep, so it holds on a loaded machine.
DRIVER = """
import os, sys, time
from pathlib import Path
from motionsqueeze.cli import main
from motionsqueeze.engine import optim, preemption
pause_at = int(os.environ["MS_PAUSE_AT"])
marker = Path(os.environ["MS_MARKER"] + "." + os.environ.get("RANK", "0"))
original = optim.LRSchedule.step
def step(self):
    lr = original(self)
    if self.step_count == pause_at:
        marker.write_text(str(os.getpid()))
        deadline = time.monotonic() + 120
        while preemption.stop_requested() is None and time.monotonic() < deadline:
            time.sleep(0.01)
    return lr
optim.LRSchedule.step = step
sys.exit(main(sys.argv[1:]))
"""


def small_config(**train):
    cfg = tiny_config(**train)
    cfg.data.train_clips = 16  # 4 steps per epoch, 2 epochs
    cfg.data.val_clips = 4
    return cfg


def _recipe(tmp_path, cfg, name="recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    return path


def _env(**extra):
    # The same thread count as this process, so that CPU results agree bit for bit.
    return {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads()), "PYTHONPATH": os.pathsep.join(sys.path),
            **extra}


def _start_paused_trainer(tmp_path, recipe, run, pause_at, *extra, launcher=(), ranks=1):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    marker = tmp_path / f"marker-{pause_at}-{len(list(tmp_path.iterdir()))}"
    env = _env(MS_PAUSE_AT=str(pause_at), MS_MARKER=str(marker))
    proc = subprocess.Popen([sys.executable, *launcher, str(driver), "train", str(recipe), "--out", str(run), *extra],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own process group, as a batch job has
    markers = [Path(f"{marker}.{r}") for r in range(ranks)]
    deadline = time.monotonic() + 240
    while not all(m.exists() for m in markers):
        if proc.poll() is not None or time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            pytest.fail(f"the trainer never reached step {pause_at}: rc {proc.returncode}\n{err[-3000:]}")
        time.sleep(0.05)
    proc.rank_pids = [int(m.read_text()) for m in markers]
    return proc


def _same_weights(a, b):
    a, b = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _metrics_without_seconds(run):
    rows = (Path(run) / "metrics.csv").read_text().splitlines()
    return [r.rsplit(",", 1)[0] for r in rows]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """An uninterrupted run of small_config, to compare interrupted ones with."""
    run = tmp_path_factory.mktemp("straight")
    fit(small_config(save_every_steps=2), run_dir=run, quiet=True)
    return run


# ----------------------------------------------------------------------- one writer per folder


def test_a_second_trainer_on_a_busy_run_folder_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    recipe = _recipe(tmp_path, small_config(save_every_steps=2))
    first = _start_paused_trainer(tmp_path, recipe, run, 3)
    try:
        before = (run / "checkpoints" / "last.pt").read_bytes()
        assert main(["train", str(recipe), "--out", str(run)]) == 2
        assert main(["train", str(recipe), "--out", str(run), "--resume", "auto"]) == 2
        err = capsys.readouterr().err
        assert f"is in use by process {first.pid} on host" in err and "choose another --out" in err
        assert "Traceback" not in err
        assert (run / "checkpoints" / "last.pt").read_bytes() == before  # the first's checkpoint intact
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # a crash: the lock is released by the kernel
        first.communicate()
    # The dead holder's lock file is no obstacle.
    assert (run / ".lock").exists()
    RunLock(run).acquire().release()


def test_the_lock_is_released_on_any_exit_in_process(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(RunFolderBusyError, match=f"process {os.getpid()}"):
            RunLock(tmp_path).acquire()
    with pytest.raises(ZeroDivisionError):
        with RunLock(tmp_path):
            1 / 0
    RunLock(tmp_path).acquire().release()


# ----------------------------------------------------------------------- honest resume


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory):
    run = tmp_path_factory.mktemp("one_epoch")
    cfg = small_config()
    cfg.schedule.epochs = 1
    cfg.data.train_clips = cfg.data.val_clips = 8
    fit(cfg, run_dir=run, quiet=True)
    return run


@pytest.mark.parametrize("override, key", [
    ("optim.lr=0.02", "optim.lr"), ("optim.weight_decay=0.5", "optim.weight_decay"),
    ("optim.betas=[0.8, 0.9]", "optim.betas"), ("train.batch_size=2", "train.batch_size"),
    ("data.num_segments=4", "data.num_segments"), ("optim.name=sgd", "optim.name"),
    ("model.arch=tsm_tiny", "model.arch"),
])
def test_resume_with_a_changed_recipe_is_refused_with_the_changed_keys(one_epoch, tmp_path, capsys, override, key):
    cfg = small_config()
    cfg.schedule.epochs = 1
    cfg.data.train_clips = cfg.data.val_clips = 8
    recipe = _recipe(tmp_path, cfg)
    assert main(["train", str(recipe), "--out", str(one_epoch), "--resume", "auto", "--set", override]) == 2
    err = capsys.readouterr().err
    assert f"recipe differs from the one that run was started with" in err and f"{key}:" in err
    assert f"--allow-change {key}" in err and "Traceback" not in err


def test_allowed_changes_are_logged_and_harmless_ones_need_no_flag(one_epoch, tmp_path):
    saved = load_checkpoint(one_epoch / "checkpoints" / "last.pt")["config"]
    now = config_to_dict(small_config(workers=2, log_every=5))
    now["schedule"]["epochs"] = 1
    now["data"]["train_clips"] = now["data"]["val_clips"] = 8
    assert check_resume_config(saved, now, "last.pt") == {}  # workers / log_every change nothing
    # A field added after the checkpoint was written, at its default, is no change.
    older = {**saved, "optim": {k: v for k, v in saved["optim"].items() if k != "bias_lr_mult"}}
    assert check_resume_config(older, now, "last.pt", defaults=config_to_dict(small_config())) == {}
    now["optim"]["lr"] = 0.5
    with pytest.raises(ValueError, match=r"optim.lr: 0.003 -> 0.5.*--allow-change optim.lr"):
        check_resume_config(saved, now, "last.pt")
    assert check_resume_config(saved, now, "last.pt", ["optim"]) == {"optim.lr": (0.003, 0.5)}

    # Switching the optimiser when allowed: fresh optimiser state, no KeyError, logged.
    run = tmp_path / "run"
    import shutil

    shutil.copytree(one_epoch, run)
    cfg = small_config()
    cfg.data.train_clips = cfg.data.val_clips = 8
    cfg.optim.name, cfg.optim.momentum = "sgd", 0.9
    fit(cfg, run_dir=run, resume="auto", quiet=True, allow_changes=["optim.name", "schedule.epochs"])
    log = (run / "config_changes.log").read_text()
    assert "optim.name: 'adamw' -> 'sgd'" in log and "schedule.epochs: 1 -> 2" in log
    assert "optimiser starts with fresh state" in (run / "train.log").read_text()
    assert yaml.safe_load((run / "config.yaml").read_text())["optim"]["name"] == "sgd"


def test_a_checkpoint_of_another_model_gives_a_message_not_a_traceback(one_epoch, tmp_path, capsys):
    cfg = small_config()
    cfg.schedule.epochs = 1
    cfg.data.train_clips = cfg.data.val_clips = 8
    recipe = _recipe(tmp_path, cfg)
    last = one_epoch / "checkpoints" / "last.pt"
    # Another architecture, even when the change is allowed.
    code = main(["train", str(recipe), "--out", str(tmp_path / "r1"), "--resume", str(last),
                 "--set", "model.arch=tsm_tiny", "--allow-change", "model.arch"])
    err = capsys.readouterr().err
    assert code == 2 and f"checkpoint {last} holds another model than this recipe builds" in err
    assert "model.init_from" in err and "Traceback" not in err
    # Another class count (a checkpoint whose classifier has 5 outputs).
    state = load_checkpoint(last)
    state["model"]["fc.weight"] = state["model"]["fc.weight"][:5]
    state["model"]["fc.bias"] = state["model"]["fc.bias"][:5]
    other = tmp_path / "other.pt"
    save_checkpoint(other, state)
    assert main(["train", str(recipe), "--out", str(tmp_path / "r2"), "--resume", str(other)]) == 2
    err = capsys.readouterr().err
    assert "fc.weight: file (5, 128), model (8, 128)" in err and "Traceback" not in err
    # ... given to init_from with another architecture, and to predict.
    assert main(["train", str(recipe), "--out", str(tmp_path / "r3"), "--set", f"model.init_from={last}",
                 "--set", "model.arch=tsn_r18"]) == 2
    assert "init_from needs a model of the same architecture" in capsys.readouterr().err
    video = tmp_path / "clip.mp4"
    from test_engine_files import _clip
    from video_factory import encode_video

    encode_video(video, _clip(0, 1))
    assert main(["predict", str(other), str(video)]) == 2
    err = capsys.readouterr().err
    assert str(other) in err and "Traceback" not in err


def test_out_naming_an_existing_file_is_a_clear_error(tmp_path, capsys):
    recipe = _recipe(tmp_path, small_config())
    afile = tmp_path / "taken"
    afile.write_text("not a folder")
    assert main(["train", str(recipe), "--out", str(afile)]) == 2
    assert main(["train", str(recipe), "--out", str(afile / "sub")]) == 2
    err = capsys.readouterr().err
    assert f"{afile} is an existing file where a folder is needed" in err and f"{afile} is a file" in err
    assert afile.read_text() == "not a folder"


def test_predict_on_a_training_checkpoint_uses_that_runs_class_names(one_epoch, tmp_path, capsys):
    import json

    state = load_checkpoint(one_epoch / "checkpoints" / "last.pt")
    state["class_names"] = [f"my class {i}" for i in range(8)]
    path = tmp_path / "mine.pt"
    save_checkpoint(path, state)
    from test_engine_files import _clip
    from video_factory import encode_video

    encode_video(tmp_path / "clip.mp4", _clip(0, 1))
    assert main(["predict", str(path), str(tmp_path / "clip.mp4"), "--json", "--topk", "8"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert sorted(p["class"] for p in answer["predictions"]) == sorted(state["class_names"])


# ----------------------------------------------------------------------- preemption


@pytest.mark.parametrize("workers", [0, 2])
def test_sigterm_mid_epoch_saves_and_resume_ends_bit_identical(straight, tmp_path, workers):
    run = tmp_path / "run"
    recipe = _recipe(tmp_path, small_config(save_every_steps=2, workers=workers))
    proc = _start_paused_trainer(tmp_path, recipe, run, 3)
    # A stale temporary file from an earlier interrupted write, to be removed on the next start.
    (run / "checkpoints" / ".last.pt.abc123.tmp").write_bytes(b"half a checkpoint")
    os.killpg(proc.pid, signal.SIGTERM)  # as a scheduler does: the whole process group
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == PREEMPTED_EXIT_CODE, err[-3000:]
    assert "continue with the same command and --resume auto" in err and "Traceback" not in err
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert (state["epoch"], state["step_in_epoch"], state["step"]) == (0, 3, 3)
    assert "stop requested (SIGTERM)" in (run / "train.log").read_text()

    fit(small_config(save_every_steps=2, workers=workers), run_dir=run, resume="auto", quiet=True)
    assert not list(run.rglob("*.tmp"))
    _same_weights(straight / "checkpoints" / "last.pt", run / "checkpoints" / "last.pt")
    # The interrupted epoch's loss and top-1 cover all its steps, as in the straight run.
    assert _metrics_without_seconds(run) == _metrics_without_seconds(straight)


def test_kill_after_an_epoch_row_does_not_duplicate_it(straight, tmp_path, monkeypatch):
    run = tmp_path / "run"
    from motionsqueeze.engine import trainer

    original = trainer.save_checkpoint

    def killed_at_epoch_end(path, state):
        if state["step"] == 8:  # the last epoch's row is written, its checkpoint is not
            raise KeyboardInterrupt("killed")
        return original(path, state)

    monkeypatch.setattr(trainer, "save_checkpoint", killed_at_epoch_end)
    with pytest.raises(KeyboardInterrupt):
        fit(small_config(save_every_steps=2), run_dir=run, quiet=True)
    monkeypatch.setattr(trainer, "save_checkpoint", original)
    assert len((run / "metrics.csv").read_text().splitlines()) == 3  # header + 2 epoch rows
    fit(small_config(save_every_steps=2), run_dir=run, resume="auto", quiet=True)
    assert _metrics_without_seconds(run) == _metrics_without_seconds(straight)
    kinds = [yaml.safe_load(line)["kind"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert kinds.count("epoch") == 2


# ----------------------------------------------------------------------- non-finite guard


def test_non_finite_weights_are_never_saved(tmp_path, monkeypatch):
    from motionsqueeze.engine import optim as optim_mod

    original = optim_mod.LRSchedule.step

    def poison(self):
        if self.step_count == 1:  # weights go inf while the loss of that step was finite
            with torch.no_grad():
                self.optimizer.param_groups[0]["params"][0].fill_(float("inf"))
        return original(self)

    monkeypatch.setattr(optim_mod.LRSchedule, "step", poison)
    with pytest.raises(NonFiniteLossError, match=r"became NaN or infinite.*not saved.*Last good checkpoint: none yet"):
        fit(small_config(save_every_steps=2), run_dir=tmp_path, quiet=True)
    assert not (tmp_path / "checkpoints" / "last.pt").exists()


def test_an_absurd_learning_rate_is_refused_before_any_step(tmp_path, capsys):
    cfg = small_config()
    cfg.optim.lr = 1e300  # past the recipe's range check: the trainer's own guard
    with pytest.raises(NonFiniteLossError, match=r"learning rate .* beyond what torch.float32 holds.*Lower optim.lr"):
        fit(cfg, run_dir=tmp_path / "run", quiet=True)
    assert not (tmp_path / "run" / "checkpoints" / "last.pt").exists()
    recipe = _recipe(tmp_path, cfg)  # from a recipe file the range check refuses it at load
    assert main(["train", str(recipe), "--out", str(tmp_path / "run2")]) == 2
    err = capsys.readouterr().err
    assert "optim.lr" in err and "Traceback" not in err


# ----------------------------------------------------------------------- torchrun


TORCHRUN = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def _ddp_recipe(tmp_path) -> Path:
    cfg = tiny_config(batch_size=2, save_every_steps=1, device="cpu")
    cfg.model.arch, cfg.model.options = "tsm_tiny", {"dropout": 0.5}
    cfg.data.train_clips, cfg.data.val_clips, cfg.schedule.epochs = 12, 4, 2  # 3 steps per epoch per rank
    return _recipe(tmp_path, cfg)


def _torchrun_train(recipe, run, *extra):
    proc = subprocess.run([sys.executable, *TORCHRUN, "-m", "motionsqueeze", "train", str(recipe), "--out",
                           str(run), *extra], env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def ddp_straight(tmp_path_factory):
    """An uninterrupted two-process gloo run (with dropout) through torchrun."""
    tmp = tmp_path_factory.mktemp("ddp")
    proc = _torchrun_train(_ddp_recipe(tmp), tmp / "run")
    return tmp / "run", proc


def test_two_process_gloo_training_through_torchrun(ddp_straight):
    run, proc = ddp_straight
    assert proc.stdout.count("best top1") == 1  # only rank 0 reports
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["world_size"] == 2 and state["epoch"] == 2 and state["step"] == 6  # 12 clips / (2 x 2) x 2
    rows = [yaml.safe_load(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["kind"] == "epoch" and "val_top1" in rows[-1]
    # Only rank 0 wrote: one epoch row per epoch.
    assert sum(r["kind"] == "epoch" for r in rows) == 2


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
def test_torchrun_ranks_stop_when_the_launcher_is_killed_and_resume_bit_exact_with_dropout(ddp_straight, tmp_path):
    recipe = _ddp_recipe(tmp_path)
    run = tmp_path / "killed"
    proc = _start_paused_trainer(tmp_path, recipe, run, 4, launcher=TORCHRUN, ranks=2)
    proc.kill()  # SIGKILL to the launcher alone: it cannot stop its workers
    proc.communicate()
    deadline = time.monotonic() + 180
    while any(_alive(pid) for pid in proc.rank_pids):
        assert time.monotonic() < deadline, "ranks kept running after their launcher was killed"
        time.sleep(0.1)
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert (state["epoch"], state["step_in_epoch"]) == (1, 1) and len(state["rng_per_rank"]) == 2
    assert "stop requested (launcher gone)" in (run / "train.log").read_text()
    _torchrun_train(recipe, run, "--resume", "auto")
    _same_weights(ddp_straight[0] / "checkpoints" / "last.pt", run / "checkpoints" / "last.pt")


# ----------------------------------------------------------------------- lists leaving data.root


def test_list_paths_leaving_the_root_need_allow_outside_root(tmp_path, capsys):
    from motionsqueeze.data import build_dataset
    from motionsqueeze.data.config import DataConfig
    from motionsqueeze.data.errors import DataError
    from test_engine_files import FRAMES, _clip
    from video_factory import write_frame_folder

    root, elsewhere = tmp_path / "root", tmp_path / "elsewhere"
    for folder in (root / "inside", elsewhere):
        write_frame_folder(folder, _clip(0, 1))
    listing = root / "train.txt"
    listing.write_text(f"inside {FRAMES} 0\n../elsewhere {FRAMES} 1\n{elsewhere} {FRAMES} 1\ninside/../inside {FRAMES} 0\n")
    cfg = DataConfig(root=str(root), train_list=str(listing), num_classes=2, resize=None, crop_size=32)
    with pytest.raises(DataError, match=r"train.txt:2: the path '../elsewhere' leaves data.root.*allow_outside_root"):
        build_dataset(cfg, "train")
    assert len(build_dataset(cfg.replace(allow_outside_root=True), "train")) == 4

    assert main(["check-data", str(listing), "--root", str(root)]) == 1
    out = capsys.readouterr().out
    assert "train.txt:2: outside-root" in out and "train.txt:3: outside-root" in out
    assert ":1: " not in out and ":4: " not in out
    assert main(["check-data", str(listing), "--root", str(root), "--allow-outside-root"]) == 0
