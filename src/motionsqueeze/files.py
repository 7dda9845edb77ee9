"""Writing output files safely, and saying clearly why a write failed.

* :func:`atomic_output` / :func:`atomic_write`: a file is written under a temporary name in
  its destination folder, flushed to disk and renamed over ``path`` (``os.replace`` is atomic
  on POSIX and Windows), so a kill, a full disk or an error at any moment leaves either the
  previous file or the new one, never a torn file. Model files, training checkpoints,
  exports and every other result file (lists, reports, metrics, pictures) are written this way.
* :class:`OutputError` / :func:`describe_os_error`: a disk that is full, a read-only file
  system, a missing permission or an output path that names a file where a folder is needed
  (or the reverse) become one sentence that names the path and what to do. The command line
  prints it instead of a traceback.
* :func:`tensor_digest`: the SHA-256 of every tensor (dtype, shape, bytes) and plain value in
  a nested structure; stored in model files and training checkpoints and verified on load,
  so flipped bytes are found before a damaged file is used.

This module imports only the standard library at import time (``torch`` is imported by the
digest when called), so every layer of the package can use it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

__all__ = ["OutputError", "describe_os_error", "atomic_output", "atomic_write", "atomic_write_text",
           "tensor_digest", "DIGEST_KEY"]

DIGEST_KEY = "sha256"


class OutputError(OSError):
    """An output file or folder that cannot be written; ``str()`` says why and what to do."""

    def __str__(self) -> str:
        return self.args[1] if len(self.args) > 1 else super().__str__()


def describe_os_error(exc: OSError, path: str | os.PathLike | None = None) -> str:
    """One sentence for an :class:`OSError` met while writing ``path``.

    Disk full, quota, read-only file system, permission, a file where a folder is needed
    and a folder where a file is needed get a message that names the path and what to do;
    other errors keep the system's text, with the path.
    """
    if isinstance(exc, OutputError):
        return str(exc)
    where = os.fspath(path) if path is not None else (exc.filename or "the output")
    code = exc.errno
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return (f"cannot write {where}: no space left on the device (disk full or quota reached). "
                f"Files written before are intact; free some space and run the command again "
                f"(a training run continues from its last checkpoint with --resume auto)")
    if code == errno.EROFS:
        return (f"cannot write {where}: the file system is read-only; choose an output folder on "
                f"a writable disk (--out)")
    if code in (errno.EACCES, errno.EPERM):
        return (f"{where}: permission denied; choose a location you may use (for outputs: --out) "
                f"or change its permissions")
    if code in (errno.ENOTDIR, errno.EEXIST):
        blocker = _existing_file_on(Path(exc.filename or where))
        return (f"cannot use {where} as a folder: {blocker or 'a part of it'} is an existing file where a "
                f"folder is needed; give a folder path (for outputs: --out) or remove the file")
    if code == errno.EISDIR:
        return f"{where}: it is a folder; give a file name (e.g. model.onnx) instead"
    if code == errno.ENAMETOOLONG:
        return f"{where}: the path or one of its names is too long for the file system"
    return f"{where}: {exc.strerror or exc}"


def _existing_file_on(path: Path) -> Path | None:
    """The first existing non-folder among ``path`` and its parents."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return None if candidate.is_dir() else candidate
    return None


def _output_error(exc: OSError, path: Path) -> OutputError:
    return OutputError(exc.errno, describe_os_error(exc, path), os.fspath(path))


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed to ``path``.

    Use it with writers that want a file name (``safetensors``, ONNX exporters, Pillow, PyAV);
    ``suffix`` is added after ``.tmp`` for writers that choose the format by the file
    extension (e.g. ``".mp4"``). The caller
    writes the temporary file completely; it is then flushed to disk, given the permissions
    of a newly created file (``0o666`` less the umask) and renamed. On any
    error the temporary file is removed and ``path`` is left as it was; an :class:`OSError`
    becomes an :class:`OutputError` with a clear message.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(errno.EISDIR, describe_os_error(OSError(errno.EISDIR, "Is a directory"), path),
                          os.fspath(path))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
        os.close(fd)
    except OutputError:
        raise
    except OSError as exc:
        raise _output_error(exc, path) from exc
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        # mkstemp (and safetensors) create files 0o600: give the file the usual permissions
        # (0o666 less the umask), so that colleagues sharing a run folder can read it.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except OutputError:
        raise
    except OSError as exc:
        raise _output_error(exc, path) from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None]) -> None:
    """Call ``write(file_object)`` on a temporary binary file, then rename it to ``path``
    (see :func:`atomic_output`)."""
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as f:
            write(f)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` as UTF-8 to ``path`` atomically (see :func:`atomic_output`)."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def _plain(value: Any) -> str:
    """A stable text form of a non-tensor leaf (numpy scalars as Python numbers)."""
    item = getattr(value, "item", None)
    if item is not None and type(value).__module__ == "numpy":
        value = item()
    return f"{type(value).__name__}:{value!r}"


def tensor_digest(obj: Any) -> str:
    """SHA-256 (hex) of a nested structure of dicts, lists, tuples, tensors and plain values.

    Dict keys are visited in sorted order; a tensor contributes its dtype, shape and raw bytes
    (device and memory layout do not matter). Entries named :data:`DIGEST_KEY` at the top
    level are skipped, so a digest can be stored in the structure it covers.
    """
    import torch

    h = hashlib.sha256()

    def visit(x: Any, top: bool = False) -> None:
        if isinstance(x, torch.Tensor):
            t = x.detach().to("cpu").contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            if t.numel():
                h.update(t.reshape(-1).view(torch.uint8).numpy().data)
        elif isinstance(x, dict):
            keys = sorted((k for k in x if not (top and k == DIGEST_KEY)), key=repr)
            h.update(f"D{len(keys)}".encode())
            for k in keys:
                h.update(_plain(k).encode())
                visit(x[k])
        elif isinstance(x, (list, tuple)):
            h.update(f"L{len(x)}".encode())
            for v in x:
                visit(v)
        else:
            h.update(_plain(x).encode())
        h.update(b";")

    visit(obj, top=True)
    return h.hexdigest()
