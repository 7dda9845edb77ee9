"""The one exception type of the data pipeline."""

from __future__ import annotations

__all__ = ["DataError", "KINDS"]

KINDS = ("missing", "unreadable", "truncated", "too-short", "mislabelled", "malformed", "wrong-count", "outside-root")
"""Problem kinds, as ``check-data`` reports them."""


class DataError(ValueError):
    """A file, list line or setting that the data pipeline cannot use.

    The message always names the file (and the line, for list files) and says what is wrong
    and, where there is one, what to do. It derives from ``ValueError`` so that the command
    line prints it as ``motionsqueeze CMD: error: ...`` without a traceback.

    Attributes:
        kind: one of :data:`KINDS` (``"unreadable"`` unless the raiser knows better).
    """

    def __init__(self, message: str, kind: str = "unreadable"):
        super().__init__(_from_worker(message))
        self.kind = kind

    def __reduce__(self):  # keep ``kind`` when sent between processes
        return type(self), (str(self), self.kind)


def _from_worker(message: str) -> str:
    """PyTorch's DataLoader re-raises a worker's exception as ``type(exc)(text)`` where
    ``text`` is "Caught DataError in DataLoader worker process N. Original Traceback ..."
    followed by the whole traceback; keep only the original message, which says it all."""
    if not (message.startswith("Caught DataError in DataLoader worker") and "\nOriginal Traceback" in message):
        return message
    marker = "DataError: "
    at = message.rfind(marker)
    return message[at + len(marker):].rstrip("\n") if at >= 0 else message
