"""Run the app under gunicorn (a production WSGI server), one app per worker."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from typing import Any

from gunicorn.app.base import BaseApplication

from agent.config import Settings

# gunicorn >= 25.1 opens a control socket at $XDG_RUNTIME_DIR/gunicorn.ctl or
# ~/.gunicorn/gunicorn.ctl; under systemd (ProtectHome=yes, a system user without a home) that
# path is unwritable, and seat-agent has no use for `gunicornc`, so it is disabled.
OPTIONAL_SETTINGS = frozenset({"control_socket_disable"})


class SeatAgentServer(BaseApplication):  # type: ignore[misc]
    def __init__(self, settings: Settings, options: dict[str, Any]):
        self.settings = settings
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            if key in OPTIONAL_SETTINGS and key not in self.cfg.settings:
                continue  # an older gunicorn without this setting
            self.cfg.set(key, value)

    def load(self) -> Any:
        # Each worker builds its own app (and database engine) after the fork.
        from agent.app import create_app

        return create_app(self.settings)


def _scheduler_hooks(args: list[str]) -> dict[str, Any]:
    """Start ``seat-agent scheduler`` beside the gunicorn master, never inside a worker
    (APScheduler FAQ: one scheduler per job store; the lease makes it one across hosts)."""
    state: dict[str, subprocess.Popen[bytes]] = {}

    def when_ready(_server: Any) -> None:
        state["proc"] = subprocess.Popen([sys.executable, "-m", "agent.cli", "scheduler", *args])

    def on_exit(_server: Any) -> None:
        proc = state.get("proc")
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()

    return {"when_ready": when_ready, "on_exit": on_exit}


def _multiprocess_metrics() -> tuple[str, dict[str, Any]]:
    """A fresh directory for prometheus-client's per-process metric files, in the environment
    before gunicorn forks, so every worker writes there and ``/metrics`` sums them all; a fresh
    one at each start so counters of an earlier run are never added in."""
    path = tempfile.mkdtemp(prefix="seat-agent-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    if "prometheus_client.values" in sys.modules:
        # Imported before the variable was set: choose the multiprocess value class now.
        from prometheus_client import values

        values.ValueClass = values.get_value_class()

    def child_exit(_server: Any, worker: Any) -> None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid, path)

    return path, {"child_exit": child_exit}


def run_gunicorn(
    settings: Settings,
    host: str,
    port: int,
    workers: int,
    scheduler_args: list[str] | None = None,
) -> None:
    master_pid = os.getpid()
    metrics_dir, metrics_hooks = _multiprocess_metrics()
    from agent.web.observability import logging_config

    hooks = _scheduler_hooks(scheduler_args) if scheduler_args is not None else {}
    stop_scheduler = hooks.pop("on_exit", None)

    def on_exit(server: Any) -> None:
        if stop_scheduler is not None:
            stop_scheduler(server)
        shutil.rmtree(metrics_dir, ignore_errors=True)

    try:
        SeatAgentServer(
            settings,
            {
                **hooks,
                **metrics_hooks,
                "on_exit": on_exit,
                "bind": f"{host}:{port}",
                "workers": workers,
                "worker_class": "gthread",
                "threads": 4,
                "timeout": 60,
                "graceful_timeout": 20,
                # agent.web.observability writes one line per request, with its request id.
                "accesslog": None,
                "errorlog": "-",
                "logconfig_dict": logging_config(settings.server.json_logs),
                "control_socket_disable": True,
                "preload_app": False,
            },
        ).run()
    finally:
        # Workers return through here too (gunicorn forks inside run()); only the master cleans.
        if os.getpid() == master_pid:
            shutil.rmtree(metrics_dir, ignore_errors=True)
