"""The first error a user meets, as one clear message.

An error raised while the LightningCLI builds the model or the data (weights unavailable offline, a missing data
root, an unknown catalogue column) reaches Python wrapped in jsonargparse's "Does not validate against any of the
Union subtypes", after library log lines and warnings. :class:`UserErrors` holds back what is written to stderr
while the command starts (at the file-descriptor level, so logging handlers and warnings are held too); if the
command fails with one of our errors, only that error's message is printed, and the traceback and the held output
go to a log file (``--verbose`` prints everything instead). Once the classes are built, :func:`release` gives
stderr back (progress bars, training logs) and replays what was held.
"""

from __future__ import annotations

import os
import sys
import tempfile
import traceback
from pathlib import Path
from types import TracebackType

PACKAGE_DIR = str(Path(__file__).resolve().parent)
ERROR_LOG = "error.log"

_active: UserErrors | None = None


class UserErrors:
    def __init__(self, command: str, verbose: bool = False) -> None:
        self.command = command
        self.verbose = verbose
        self.log_dir: Path | None = None
        self._held: tempfile._TemporaryFileWrapper | None = None
        self._saved_fd: int | None = None

    def __enter__(self) -> UserErrors:
        global _active
        _active = self
        if not self.verbose:
            sys.stderr.flush()
            self._held = tempfile.TemporaryFile(mode="w+b")
            self._saved_fd = os.dup(2)
            os.dup2(self._held.fileno(), 2)
        return self

    def release(self) -> str:
        """Stop holding stderr; return what was held (written out too, unless ``replay`` is off)."""
        return self._stop(replay=True)

    def _stop(self, *, replay: bool) -> str:
        if self._saved_fd is None or self._held is None:
            return ""
        sys.stderr.flush()
        os.dup2(self._saved_fd, 2)
        os.close(self._saved_fd)
        self._saved_fd = None
        self._held.seek(0)
        held = self._held.read().decode(errors="replace")
        self._held.close()
        if replay and held:
            sys.stderr.write(held)
            sys.stderr.flush()
        return held

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> bool:
        global _active
        _active = None
        ours = user_error(exc) if isinstance(exc, Exception) else None
        held = self._stop(replay=ours is None or self.verbose)
        if ours is None or self.verbose:
            return False
        log = self._write_log(held, exc)
        print(f"fashion-bench {self.command}: error: {ours} (traceback: {log}; --verbose prints it)", file=sys.stderr)
        raise SystemExit(1)

    def _write_log(self, held: str, exc: BaseException) -> Path:
        from fashion_bench.atomic import write_text_atomic

        text = held + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        if self.log_dir is not None:
            try:
                return write_text_atomic(self.log_dir / ERROR_LOG, text)
            except OSError:
                pass
        fd, name = tempfile.mkstemp(prefix=f"fashion-bench-{self.command}-", suffix=".log")
        os.close(fd)
        return write_text_atomic(name, text)


def user_error(exc: BaseException | None) -> BaseException | None:
    """The error in ``exc``'s chain that our code raised for the user: a ValueError (DataError, bad argument),
    an OSError (a file not found) or a RuntimeError (weights unavailable) whose innermost frame is in
    fashion_bench; None for anything else (a bug keeps its traceback)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (ValueError, OSError, RuntimeError)) and _raised_here(exc):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _raised_here(exc: BaseException) -> bool:
    frames = traceback.extract_tb(exc.__traceback__)
    return bool(frames) and str(Path(frames[-1].filename).resolve()).startswith(PACKAGE_DIR)


def release() -> None:
    """Give stderr back once the command has started (no-op outside :class:`UserErrors`)."""
    if _active is not None:
        _active.release()


def note_run_dir(run_dir: Path) -> None:
    """Where a failed command's log goes (its run directory), once known."""
    if _active is not None:
        _active.log_dir = Path(run_dir)
