"""Offline by construction: Tailor never sends a byte off the machine.

Nothing in the app opens a connection (tests/test_privacy.py checks the sources
and runs the whole path under a guard that fails on any connect or DNS lookup).
This module makes sure the libraries underneath stay quiet too: the Hugging
Face stacks are told they are offline (set, not defaulted: a user's
``HF_HUB_OFFLINE=0`` does not turn networking back on inside Tailor), the
common opt-out variables for telemetry are set, and onnxruntime's telemetry
events (Windows ETW) are switched off once onnxruntime is loaded.
``force_offline()`` is idempotent and cheap; the core calls it when a ``Tailor``
is created and again after it loads an onnxruntime model, the CLI on import.
"""
from __future__ import annotations

import os
import sys

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",              # huggingface_hub: never reach the hub
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
    "HF_HUB_DISABLE_UPDATE_CHECK": "1",
    "DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",                # https://consoledonottrack.com
    "TOKENIZERS_PARALLELISM": "false",  # no fork warnings from the tokenizers thread pool
}

_done = False


def force_offline() -> None:
    global _done
    os.environ.update(OFFLINE_ENV)
    ort = sys.modules.get("onnxruntime")     # never imported here just for this (it costs ~0.15 s)
    if ort is None or _done:
        return
    _done = True
    try:
        ort.disable_telemetry_events()
    except Exception:   # an old build without the call: nothing to disable
        pass
