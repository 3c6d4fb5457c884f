"""Problems a user can fix (UserError), and the one line said for a full disk or an unwritable folder."""
from __future__ import annotations

import errno
import os
import re
import tempfile
from pathlib import Path


class UserError(Exception):
    """A problem the user can fix (missing file, bad column, unknown id): shown as one line."""


ENVIRONMENT_ERRNOS = {
    errno.ENOSPC: ("the disk is full", "free some space"),
    errno.EDQUOT: ("the disk quota is exceeded", "free some space"),
    errno.EACCES: ("permission denied", "check the permissions of that file and its folder"),
    errno.EPERM: ("operation not permitted", "check the permissions of that file and its folder"),
    errno.EROFS: ("the file system is read-only", "choose another --data-dir"),
}
OS_ERROR = re.compile(r"\(os error (\d+)\)")  # how polars (Rust) words an OSError; it sets no errno


def environment_problem(exc: BaseException) -> str | None:
    """One line for a full disk or an unwritable folder behind an OSError or a polars error; None otherwise."""
    code = getattr(exc, "errno", None)
    if code is None:
        found = OS_ERROR.search(str(exc))
        code = int(found.group(1)) if found else None
    if code not in ENVIRONMENT_ERRNOS:
        return None
    what, todo = ENVIRONMENT_ERRNOS[code]
    where = getattr(exc, "filename", None)
    where = f" ({where})" if where else ""
    return f"{what}{where}: {todo}, then rerun; no output of this run was kept half-written"


def check_writable(*folders: Path) -> None:
    """UserError unless a file can be created in each folder (or, if it does not exist yet, in the
    nearest folder above it that does): called before a stage's work, so it fails in seconds."""
    for folder in map(Path, folders):
        probe_dir = folder
        while not probe_dir.exists() and probe_dir != probe_dir.parent:
            probe_dir = probe_dir.parent
        try:
            fd, probe = tempfile.mkstemp(prefix=".write-check-", dir=probe_dir)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            why = exc.strerror or type(exc).__name__
            if probe_dir != folder:
                why += f" in {probe_dir}"
            raise UserError(f"cannot write to {folder} ({why}): make it writable or choose "
                            f"another --data-dir; nothing was computed") from None

