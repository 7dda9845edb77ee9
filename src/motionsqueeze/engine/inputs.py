"""Inputs of the inference commands: videos, frame folders, folders of them, list files.

``gather_inputs`` turns what the user named into ``(source, name)`` pairs: ``source`` is the
path to read, ``name`` a relative name that is stable across runs (outputs are named after
it, which is what makes ``extract-features`` resumable).

* a video file or a frame folder (a folder holding its first frame file) is one input,
  named after its file or folder name;
* any other folder holds inputs: its video files and frame folders, searched recursively,
  named by their path inside it;
* ``--list FILE``: one path per line (blank lines and ``#`` comments ignored), relative to
  the list file's folder unless absolute, named by that path.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..data.annotations import VIDEO_EXTENSIONS

__all__ = ["gather_inputs"]


def _is_frame_folder(path: Path, template: str, start_index: int) -> bool:
    return (path / template.format(start_index)).is_file()


def _walk(folder: Path, template: str, start_index: int) -> list[Path]:
    found = []
    for entry in sorted(folder.iterdir()):
        if entry.is_dir():
            found += [entry] if _is_frame_folder(entry, template, start_index) else _walk(entry, template, start_index)
        elif entry.suffix.lower() in VIDEO_EXTENSIONS:
            found.append(entry)
    return found


def gather_inputs(paths: list[str], list_file: str | None = None, *, template: str = "{:05d}.jpg",
                  start_index: int = 1) -> list[tuple[str, str]]:
    """``(source, name)`` of every input (see the module docstring), in order, no duplicates.

    A path that does not exist is kept (its reading fails and is reported like any other
    unreadable input); two inputs with the same name are an error.
    """
    pairs: list[tuple[str, str]] = []
    for p in paths:
        path = Path(p)
        if path.is_dir() and not _is_frame_folder(path, template, start_index):
            found = _walk(path, template, start_index)
            if not found:
                raise ValueError(f"{p} is neither a frame folder (no {template.format(start_index)}) nor a folder "
                                 f"holding videos or frame folders")
            pairs += [(os.fspath(f), f.relative_to(path).as_posix()) for f in found]
        else:
            pairs.append((p, path.name or p))
    if list_file is not None:
        root = Path(list_file).parent
        try:
            lines = Path(list_file).read_text().splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise ValueError(f"cannot read the input list {list_file}: {err}") from None
        for line in lines:
            entry = line.strip()
            if entry and not entry.startswith("#"):
                pairs.append((os.fspath(root / entry), Path(entry).as_posix().lstrip("/")))
    if not pairs:
        raise ValueError("no inputs: name videos, frame folders or folders of them, or give --list FILE")
    seen: dict[str, str] = {}
    unique = []
    for source, name in pairs:
        if name in seen:
            if seen[name] == source:
                continue
            raise ValueError(f"inputs {seen[name]} and {source} would both be named {name!r}; pass their "
                             f"common parent folder or a list file instead")
        seen[name] = source
        unique.append((source, name))
    return unique
