"""The diagnostic log: `tailor.log` in the data directory, rotating.

A person sees one clear line when something fails; whoever helps them needs
the traceback. Both the CLI and the app write here through the standard
``logging`` module (loggers named ``tailor.*``). Messages name files, counts
and errors, never the text of a document or a chat: the log is meant to be
shared when reporting a problem.
"""
from __future__ import annotations

import logging
import logging.handlers
import os
from pathlib import Path

LOG_FILE = "tailor.log"
MAX_BYTES = 1_000_000
BACKUPS = 3

log = logging.getLogger("tailor")
# Until setup_logging knows the data dir there is nowhere to write: records are dropped rather than reaching
# logging's last-resort stderr handler, which printed a failure a second time beside the CLI's one line.
log.addHandler(logging.NullHandler())


def setup_logging(home: Path) -> Path:
    """Send the ``tailor`` loggers to ``home/tailor.log`` (owner-only, 1 MB x 4 files). Idempotent per path."""
    path = Path(home) / LOG_FILE
    for h in log.handlers:
        if isinstance(h, logging.handlers.RotatingFileHandler) and Path(h.baseFilename) == path.absolute():
            return path
    close_logging()                     # a new data dir (tests, a wipe): stop writing to the old one
    handler = logging.handlers.RotatingFileHandler(path, maxBytes=MAX_BYTES, backupCount=BACKUPS,
                                                   encoding="utf-8", delay=True)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s pid=%(process)d: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    path.touch(mode=0o600, exist_ok=True)
    os.chmod(path, 0o600)
    return path


def close_logging() -> None:
    """Release the log file (before the data directory is deleted)."""
    for h in list(log.handlers):
        if isinstance(h, logging.handlers.RotatingFileHandler):
            log.removeHandler(h)
            h.close()
