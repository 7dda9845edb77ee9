"""Stopping a run cleanly when asked to: preemption signals and a lost ``torchrun`` launcher.

Cluster schedulers announce preemption with a signal (SLURM: SIGTERM, then SIGKILL after a
grace period; ``--signal=USR1@120`` sends SIGUSR1 two minutes early). While a run trains,
the signals named in ``train.stop_signals`` only set a flag; the loop saves a resumable
checkpoint at the next step boundary, writes a note in ``train.log`` and raises
:class:`Preempted`, which ``motionsqueeze train`` turns into exit code
:data:`PREEMPTED_EXIT_CODE` so that a job script can requeue.

Under ``torchrun`` a rank also stops when its launcher disappears (killed with SIGKILL, so
it could not stop its workers): a watcher thread notices that the parent process changed
and requests a stop; if the rank is stuck in a collective with a dead peer it exits after
``grace`` seconds.
"""

from __future__ import annotations

import os
import signal
import threading

__all__ = ["Preempted", "PREEMPTED_EXIT_CODE", "StopSignals", "stop_requested", "request_stop",
           "ignore_stop_signals"]

# EX_TEMPFAIL of sysexits.h: "temporary failure, try again later".
PREEMPTED_EXIT_CODE = 75

_requested: str | None = None


class Preempted(RuntimeError):
    """The run saved a resumable checkpoint and stopped because it was asked to."""


def stop_requested() -> str | None:
    """Why a stop was requested (a signal name, ``"launcher gone"``), or ``None``."""
    return _requested


def request_stop(reason: str) -> None:
    global _requested
    if _requested is None:
        _requested = reason


def _signal_number(name: str) -> signal.Signals:
    name = name.upper()
    name = name if name.startswith("SIG") else "SIG" + name
    try:
        return signal.Signals[name]
    except KeyError:
        raise ValueError(f"train.stop_signals: unknown signal {name!r} on this platform") from None


def ignore_stop_signals(names, *_worker_id) -> None:
    """Data-loader workers ignore the stop signals (a scheduler signals the whole process
    group): the main process stops them itself after saving."""
    for name in names:
        try:
            signal.signal(_signal_number(name), signal.SIG_IGN)
        except (ValueError, OSError):
            pass


class StopSignals:
    """``with StopSignals(names, distributed):`` - for the block, turn the named signals into
    a stop request, and (under torchrun) watch the launcher. Previous handlers come back on
    exit. Outside the main thread signal handlers cannot be set; then only the watcher runs."""

    def __init__(self, names, watch_launcher: bool = False, grace: float = 120.0, poll: float = 0.5):
        self.signals = [_signal_number(n) for n in names]
        self.watch_launcher = watch_launcher
        self.grace = grace
        self.poll = poll
        self._previous: dict = {}
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "StopSignals":
        global _requested
        _requested = None
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        if self.watch_launcher:
            self._thread = threading.Thread(target=self._watch, args=(os.getppid(),), daemon=True,
                                            name="motionsqueeze-launcher-watch")
            self._thread.start()
        return self

    def _handle(self, signum, frame) -> None:
        request_stop(signal.Signals(signum).name)

    def _watch(self, launcher: int) -> None:
        while not self._done.wait(self.poll):
            if os.getppid() != launcher:
                request_stop("launcher gone")
                # A peer may be gone too, leaving this rank blocked in a collective.
                if not self._done.wait(self.grace):
                    os._exit(PREEMPTED_EXIT_CODE)
                return

    def __exit__(self, *exc) -> None:
        global _requested
        self._done.set()
        for sig, previous in self._previous.items():
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()
        _requested = None
