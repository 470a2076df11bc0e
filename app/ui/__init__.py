"""Tailor's desktop app: Qt Widgets over the headless core (``app.core.Tailor``).

The UI never touches the core directly: every call goes through one worker
thread (``app.ui.worker``), because llama.cpp has one context and the event loop
must never wait on a model or the database.
"""
