"""Files written in place: a new temporary file beside the target, with the usual permissions."""

from __future__ import annotations

import os
import secrets


def create_temp_file(folder: str, prefix: str = ".tmp-", suffix: str = "") -> tuple[int, str]:
    """Like tempfile.mkstemp (a new file, O_EXCL, an fd open for writing) but created with mode
    0o666 less the umask, as open() would, instead of 0600: the file is renamed into place and
    keeps its mode, so artifacts get the usual permissions. The kernel applies the umask at
    creation, so nothing reads or changes the process-wide umask (no race with other threads)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        name = os.path.join(folder, f"{prefix}{secrets.token_hex(8)}{suffix}")
        try:
            return os.open(name, flags, 0o666), name
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary file name in {folder}")
