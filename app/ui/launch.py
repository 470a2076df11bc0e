"""`tailor-app`: the program's entry. It picks the window or the headless self-test; both import from here and
nothing imports this module back, so the window and the self-test do not depend on each other's import order."""
from __future__ import annotations

import os
import sys
import time

_T0 = time.perf_counter()      # process-relative start, before Qt loads, for the self-test's startup time


def _prepare_env(self_test: bool) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if self_test:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    else:      # the data directory chosen in Settings is read by app.paths.data_dir, as the CLI does
        from .settings import migrate_qsettings_data_dir
        migrate_qsettings_data_dir()


def main(argv: list[str] | None = None) -> int:
    import multiprocessing
    multiprocessing.freeze_support()   # a frozen build's document sandbox is a spawned copy of this program
    argv = list(sys.argv if argv is None else argv)
    self_test = "--self-test" in argv
    _prepare_env(self_test)
    if self_test:
        from .selftest import run_self_test
        threads = int(argv[argv.index("--threads") + 1]) if "--threads" in argv[:-1] else 0
        sys.exit(run_self_test(_T0, threads=threads))
    from PySide6.QtWidgets import QApplication

    from .main import MainWindow
    app = QApplication.instance() or QApplication(argv)
    app.setApplicationName("Tailor")
    app.setApplicationDisplayName("Tailor")
    app.setOrganizationName("Tailor")
    win = MainWindow()
    win.show()
    sys.exit(app.exec())


if __name__ == "__main__":
    main()
