"""torchrun: a failing worker ends the job."""

import os
import subprocess
import sys


TINY_DDP_RECIPE = (
    "model: {arch: tsm_tiny}\n"
    "data: {dataset: synthetic, train_clips: 16, val_clips: 6, num_segments: 2, size: 32}\n"
    "optim: {lr: 0.01, reference_batch_size: 0}\n"
    "schedule: {epochs: 1}\n"
    "train: {batch_size: 2, workers: 0, device: cpu, progress: false, tensorboard: false, log_every: 0}\n"
)


def test_a_failing_worker_ends_the_torchrun_job_instead_of_hanging(tmp_path):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(TINY_DDP_RECIPE)
    driver = tmp_path / "driver.py"
    driver.write_text(
        "import os, sys\n"
        "from motionsqueeze.engine import fit, load_config\n"
        "from motionsqueeze.engine import optim\n"
        "original = optim.LRSchedule.step\n"
        "def step(self):\n"
        "    if os.environ['RANK'] == '1' and self.step_count == 1:\n"
        "        raise RuntimeError('worker 1 failed on purpose')\n"
        "    return original(self)\n"
        "optim.LRSchedule.step = step\n"
        "fit(load_config(sys.argv[1]), run_dir=sys.argv[2])\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(driver), str(recipe), str(tmp_path / "run")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode != 0
    assert "worker 1 failed on purpose" in proc.stderr
