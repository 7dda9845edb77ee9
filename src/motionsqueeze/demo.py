"""``motionsqueeze demo``: TSN vs TSM vs MSNet on the built-in synthetic motion set, on the CPU.

The three default models share one small backbone (ResNet-10 at a quarter width,
``*_tiny``) and one recipe (the bundled ``synthetic`` recipe); they differ only in temporal
modelling. ``models`` may name any registered variants (e.g. ``tsn_mbv2_050`` and
``msnet_mbv2_050``); the picture of the motion field uses the first ``msnet*`` one. Since
a single frame of the synthetic set carries no class information, TSN stays near chance,
and the gap to TSM and MSNet measures what temporal modelling and explicit motion add. The
causal MSNet (past frames only, for streaming) shows what motion from t-1 to t alone gives.

The report folder holds ``results.json``, ``results.md`` (the printed table),
``training_curves.png``, ``confusion_<model>.png``, ``motion_field.png`` (MSNet's
displacement and confidence on test clips) and one run folder per model. Running the demo
again on the same folder continues or reuses the finished runs instead of retraining.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import platform
import time
from pathlib import Path

import torch

from .viz.motion_grid import field_to_pixels, save_motion_grid
from .data.transforms import normalize_clip
from .engine.config import load_config
from .engine.data import build_split
from .engine.evaluate import score_dataset
from .engine.distributed import DistInfo
from .engine.metrics import classification_report, plot_confusion, save_figure
from .engine.trainer import fit
from .files import atomic_output, atomic_write_text
from .models import create_model, measure_complexity

__all__ = ["DEMO_MODELS", "run_demo"]

_log = logging.getLogger(__name__)

# The default three differ only in temporal modelling; ``--models`` adds others, e.g.
# msnet_tiny_causal, the streaming variant (past frames only, docs/streaming.md).
DEMO_MODELS = ("tsn_tiny", "tsm_tiny", "msnet_tiny")


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def _plot_curves(results: list[dict], histories: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    for r in results:
        h = histories[r["model"]]
        epochs = [row["epoch"] for row in h]
        a.plot(epochs, [row["train_loss"] for row in h], marker="o", label=r["model"])
        val = [(row["epoch"], row["val_top1"]) for row in h if "val_top1" in row]
        if val:
            b.plot(*zip(*val), marker="o", label=r["model"])
    a.set_xlabel("epoch")
    a.set_ylabel("training loss")
    b.set_xlabel("epoch")
    b.set_ylabel("validation top-1 (%)")
    b.axhline(100 / 8, color="gray", linestyle=":", label="chance")
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    save_figure(fig, path)


def _motion_picture(model, dataset, cfg, path: Path) -> None:
    """MSNet's displacement and confidence on one test clip per motion family."""

    stage = next(iter(model.motion))
    ms = model.motion[stage]
    paths = []
    model.eval()
    for label, name in [(0, "moving right"), (4, "rotating clockwise"), (7, "shrinking")]:
        item = dataset[label]  # clip i has label i % 8
        clip = item["clip"][0]  # (T, 3, H, W) uint8

        x = normalize_clip(clip, cfg.data.mean, cfg.data.std).unsqueeze(0)
        with torch.no_grad():
            field = model.motion_fields(x)[stage][0]  # (T-1, 3, h, w)
        stride = clip.shape[-1] // field.shape[-1]
        part = path.with_name(f"{path.stem}_{label}.png")
        save_motion_grid(
            clip.permute(0, 2, 3, 1).numpy(), {stage: field_to_pixels(field, ms.patch_size, stride)}, part,
            title=f"MSNet ({stage}) on a test clip of class '{name}'",
            notes=[f"{stage}: 1 cell = {stride} px, reaches +-{(ms.patch_size - 1) // 2 * stride} px"],
        )
        paths.append(part)
    # One picture: stack the three grids vertically.
    from PIL import Image

    images = [Image.open(p).convert("RGB") for p in paths]
    canvas = Image.new("RGB", (max(i.width for i in images), sum(i.height for i in images)), "white")
    y = 0
    for im in images:
        canvas.paste(im, (0, y))
        y += im.height
    with atomic_output(path) as tmp:
        canvas.save(tmp, format="PNG")
    for p in paths:
        p.unlink()


def run_demo(out_dir: str | Path = "motionsqueeze-demo", models=DEMO_MODELS, overrides: list[str] | None = None) -> list[dict]:
    """Train and evaluate ``models`` on the synthetic set; write the report; return the rows."""

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base = load_config("synthetic", overrides)
    d = base.data
    _log.info(f"motionsqueeze demo: {len(models)} models on the synthetic motion set "
              f"({d.train_clips} training / {d.val_clips} test clips of {d.num_segments} frames, {d.size}x{d.size}, "
              f"{len(d.class_names)} motion classes)")
    _log.info(f"machine: {_machine()}")
    results, histories, trained = [], {}, {}
    started = time.perf_counter()
    for arch in models:
        cfg = copy.deepcopy(base)
        cfg.model.arch = arch
        cfg.source = f"synthetic ({arch})"
        _log.info(f"\n== {arch}")
        res = fit(cfg, run_dir=out / "runs" / arch, resume="auto", quiet=True)
        report = res.report  # the validation after the last epoch: the test clips, scored as below
        if report is None or cfg.train.amp != "none":  # a finished run reused from the folder; or run in low precision
            val = build_split(cfg.data, "val")
            scores = score_dataset(res.model, val, DistInfo(), tuple(d.mean), tuple(d.std), batch_size=cfg.eval.batch_size, workers=0)
            report = classification_report(scores.scores, scores.labels, len(res.class_names))
        plot_confusion(report.confusion, res.class_names, out / f"confusion_{arch}.png", title=f"{arch} on the synthetic test clips")
        with torch.device("meta"):
            meta_model = create_model(arch, num_classes=len(res.class_names), num_segments=d.num_segments, **cfg.model.options)
        cost = measure_complexity(meta_model, frames=d.num_segments, size=d.size)
        results.append({
            "model": arch, "top1": round(report.top1, 2), "top5": round(report.top5, 2), "params": cost.params,
            "gflops": round(cost.gflops, 4), "train_seconds": round(res.train_seconds, 1),
        })
        histories[arch] = res.history
        trained[arch] = res.model

    msnet = next((a for a in models if a.startswith("msnet")), None)
    if msnet is not None:
        _motion_picture(trained[msnet], build_split(base.data, "val"), base, out / "motion_field.png")
    _plot_curves(results, histories, out / "training_curves.png")

    header = f"| model | params | GFLOPs (1 clip, {d.num_segments}x{d.size}x{d.size}) | top-1 (%) | top-5 (%) | train time (s) |"
    lines = [header, "|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['model']} | {r['params']:,} | {r['gflops']:.3f} | {r['top1']:.1f} | {r['top5']:.1f} | {r['train_seconds']:.0f} |")
    table = "\n".join(lines)
    total = time.perf_counter() - started
    atomic_write_text(out / "results.md", f"{table}\n\nmachine: {_machine()}\n")
    atomic_write_text(out / "results.json", json.dumps({"models": results, "machine": _machine(), "seconds": round(total, 1)}, indent=2))
    _log.info("\n" + table)
    _log.info(f"\nreport written to {out}/ (results.json, training_curves.png, confusion_*.png, motion_field.png) in {total:.0f}s")
    return results
