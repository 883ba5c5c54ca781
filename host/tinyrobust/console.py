"""What a user sees: progress and results on the terminal, and the libraries' own chatter (TensorFlow's C++ and
Python logging, Keras's export messages, ART's warnings) in a log file, or on screen with --verbose."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Where progress goes: the terminal's stderr, also while libraries_to_log sends everything else to the log.
_terminal = sys.stderr


@contextmanager
def libraries_to_log(log: Path | None) -> Iterator[None]:
    """While the block runs, whatever is written to stdout or stderr, by Python code or by C++ code writing to
    file descriptors 1 and 2, goes to log; progress_bar and status still reach the terminal. log None: no
    change (--verbose)."""
    global _terminal
    if log is None:
        yield
        return
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved_fds = os.dup(1), os.dup(2)
    saved_streams = sys.stdout, sys.stderr
    with open(log, "a", buffering=1) as sink:
        terminal = os.fdopen(os.dup(saved_fds[1]), "w", buffering=1)
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        sys.stdout = sys.stderr = sink
        _terminal = terminal
        try:
            yield
        finally:
            sink.flush()
            os.dup2(saved_fds[0], 1)
            os.dup2(saved_fds[1], 2)
            for fd in saved_fds:
                os.close(fd)
            sys.stdout, sys.stderr = saved_streams
            _terminal = saved_streams[1]
            terminal.close()


def progress_bar(total: int, unit: str, enabled: bool = True, initial: int = 0):
    """A tqdm bar on the terminal (hidden when not enabled, or when the terminal is not a TTY)."""
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit=unit, file=_terminal, disable=not enabled or None)


def status(text: str) -> None:
    """A line of progress on the terminal."""
    print(text, file=_terminal, flush=True)
