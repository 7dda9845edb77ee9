"""Honest resume: continue a run only with the recipe it was started with.

A training checkpoint holds the resolved recipe of its run. ``--resume`` compares it with the
recipe given now, key by key (dotted names such as ``optim.lr``):

* identical (apart from :data:`HARMLESS_KEYS`, which never change the numbers): continue;
* any other difference: refuse with the list of changed keys, unless every changed key was
  allowed with ``--allow-change KEY`` (a key, or a whole section such as ``optim``); then the
  changes are written to ``train.log`` and ``config_changes.log`` in the run folder and the
  run continues with the new values (it is then neither the old recipe nor the new one).

Also here: putting the run folder's metric files back to what the checkpoint knows (rows
written after it, by a run that was then killed, would be duplicated by the resumed run)
and removing temporary files of a write that was interrupted.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

from .checkpoint import atomic_write

__all__ = ["HARMLESS_KEYS", "config_changes", "check_resume_config", "rewind_metrics", "remove_stale_temp_files"]

# Keys that change how a run is watched or fed, not what it computes (data order and
# augmentation do not depend on the number of loader workers).
HARMLESS_KEYS = ("out", "train.workers", "train.progress", "train.tensorboard", "train.log_every",
                 "train.save_every_steps", "train.stop_signals")

_MISSING = "<absent>"


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = list(v) if isinstance(v, tuple) else v
    return out


def config_changes(saved: dict, current: dict, defaults: dict | None = None) -> dict[str, tuple]:
    """``{dotted key: (saved value, current value)}`` for every key that differs. A key that
    the saved recipe lacks (it predates the field) and that now holds its default in
    ``defaults`` is no change."""
    a, b, d = _flatten(saved or {}), _flatten(current or {}), _flatten(defaults or {})
    return {k: (a.get(k, _MISSING), b.get(k, _MISSING)) for k in sorted(set(a) | set(b))
            if a.get(k, _MISSING) != b.get(k, _MISSING)
            and not (k not in a and k in d and b.get(k) == d[k])}


def _allowed(key: str, allow) -> bool:
    return any(key == a or key.startswith(a.rstrip(".") + ".") for a in allow)


def check_resume_config(saved: dict | None, current: dict, checkpoint, allow=(), defaults: dict | None = None
                        ) -> dict[str, tuple]:
    """Raise ``ValueError`` listing the changed keys unless each is harmless or allowed;
    return the allowed changes (to be logged). ``defaults``: see :func:`config_changes`."""
    if saved is None:
        raise ValueError(f"checkpoint {checkpoint} holds no recipe, so resuming cannot check that it "
                         f"continues the same run; start a new run folder with model.init_from={checkpoint}")
    changes = {k: v for k, v in config_changes(saved, current, defaults).items() if not _allowed(k, HARMLESS_KEYS)}
    refused = {k: v for k, v in changes.items() if not _allowed(k, allow)}
    if refused:
        listing = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in refused.items())
        keys = ",".join(refused)
        raise ValueError(
            f"the recipe differs from the one that run was started with (checkpoint {checkpoint}): {listing}. "
            f"Resume with the original recipe (its copy is config.yaml in the run folder) to continue the "
            f"same run bit for bit; or, if the change is intended, pass --allow-change {keys} (it is then "
            f"logged in the run folder); or start a new run folder with model.init_from"
        )
    return changes


def log_allowed_changes(run_dir: Path, changes: dict, checkpoint, step: int, log) -> None:
    if not changes:
        return
    listing = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changes.items())
    log(f"resuming with changed recipe keys (allowed by --allow-change): {listing}")
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    with open(Path(run_dir) / "config_changes.log", "a") as f:
        f.write(f"{stamp} resumed from {checkpoint} at step {step}: {listing}\n")


def rewind_metrics(run_dir: Path, history: list[dict], step: int, csv_keys: list[str]) -> None:
    """Make ``metrics.csv`` / ``metrics.jsonl`` hold what the checkpoint knows: its epoch
    rows, and step rows up to its step. Rows from after the checkpoint (written by a run
    that was then killed) would otherwise appear twice."""
    import csv
    import io


    run_dir = Path(run_dir)
    path = run_dir / "metrics.csv"
    if path.exists() or history:
        text = io.StringIO()
        w = csv.DictWriter(text, fieldnames=csv_keys, extrasaction="ignore", lineterminator="\r\n")
        w.writeheader()
        for row in history:
            w.writerow({k: row.get(k, "") for k in csv_keys})
        atomic_write(path, lambda f: f.write(text.getvalue().encode()))
    path = run_dir / "metrics.jsonl"
    if path.exists():
        epochs = len(history)
        kept = []
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue  # a line torn by a kill
            if row.get("kind") == "epoch" and row.get("epoch", 0) > epochs:
                continue
            if row.get("kind") != "epoch" and row.get("step", 0) > step:
                continue
            kept.append(line)
        atomic_write(path, lambda f: f.write("".join(k + "\n" for k in kept).encode()))


def remove_stale_temp_files(run_dir: Path, log) -> list[Path]:
    """Delete ``.<name>.*.tmp`` files of writes that a kill interrupted (the caller holds
    the run folder's lock, so no write is in progress)."""
    run_dir = Path(run_dir)
    stale = [p for folder in (run_dir, run_dir / "checkpoints") if folder.is_dir()
             for p in folder.glob(".*.tmp") if p.is_file()]
    for p in stale:
        p.unlink()
    if stale:
        log(f"removed {len(stale)} temporary file(s) of an interrupted write: {', '.join(p.name for p in stale)}")
    return stale
