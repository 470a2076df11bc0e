"""Work-arounds for the Qt binding, in one place.

``emit``: in PySide6 6.12 on Python 3.11, ``SignalInstance.emit()`` returns
``True`` without taking a reference to it. Before Python 3.12 ``True`` is not
immortal, so every emit from Python lowers its reference count by one and,
after a few thousand emits (one streamed answer is hundreds), the interpreter
aborts with "bool_dealloc: deallocating True or False". Every emit in the app
goes through ``emit`` below, which gives the reference back when (and only
when) this binding is found to drop it, so a fixed PySide6 needs no change here.
"""
from __future__ import annotations

import ctypes
import sys

from PySide6.QtCore import QObject, Signal


class _Probe(QObject):
    ping = Signal()


def _emit_drops_true() -> bool:
    if sys.version_info >= (3, 12):
        return False            # True is immortal; its count cannot reach zero
    probe = _Probe()
    n = 16
    before = sys.getrefcount(True)
    for _ in range(n):
        probe.ping.emit()
    lost = before - sys.getrefcount(True)
    if lost >= n:
        for _ in range(lost):   # repay the probe's own debt too
            ctypes.pythonapi.Py_IncRef(ctypes.py_object(True))
    return lost >= n


EMIT_DROPS_TRUE = _emit_drops_true()


def emit(signal, *args) -> None:
    """``signal.emit(*args)``, keeping ``True``'s reference count right on affected PySide6 builds."""
    result = signal.emit(*args)
    if EMIT_DROPS_TRUE and isinstance(result, bool):
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(result))
