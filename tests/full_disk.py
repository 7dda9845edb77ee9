"""A disk that fills up while one named file is written, for the tests of atomic writes."""

import builtins
import errno
import io
import os

__all__ = ["FULL", "disk_full_while_writing"]

FULL = "no space left on the device"  # what motionsqueeze.files says about ENOSPC


class _FillsUp:
    """A file on a disk that fills up: the first write stores half of its data, then fails."""

    def __init__(self, f):
        self._f = f

    def write(self, data):
        self._f.write(data[: len(data) // 2])
        self._f.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()
        return False


def disk_full_while_writing(monkeypatch, name: str) -> None:
    """Writes to files called ``name``, and to their temporary files (``.name.*``), fail midway."""
    real_open = builtins.open

    def fake_open(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        base = os.path.basename(os.fspath(file)) if isinstance(file, (str, os.PathLike)) else ""
        if any(c in mode for c in "wax+") and (base == name or base.startswith(f".{name}.")):
            return _FillsUp(f)
        return f

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(io, "open", fake_open)  # pathlib's write_text opens through io.open
