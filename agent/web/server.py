"""Run the app under gunicorn (a production WSGI server), one app per worker.

The workers are ``agent.web.front.BufferingWorker``: gthread's threads, but each request is
read whole in the worker's event loop, within ``[server] header_timeout`` and
``body_timeout``, before a thread takes it, so slow clients hold no thread.

The gunicorn master also:

- reloads on SIGHUP (``systemctl reload seat-agent``): it reads the configuration file again
  and replaces the workers gracefully (new ones start, old ones finish their requests); the
  listening socket stays open throughout, so no connection is refused. A configuration that no
  longer validates is logged and the running one kept. The secrets named by ``*_env`` settings
  come from the process environment, which systemd fixes at start; ``seat-agent reload`` (the
  unit's ExecReload=, which systemd runs with the EnvironmentFile read afresh) hands their new
  values over in a file of the runtime directory before it sends SIGHUP.
- supervises the embedded scheduler (``seat-agent scheduler``, a child of the master, never of
  a worker): when it dies it is started again, after 1 s, then 2, 4, ... up to 60 s while it
  keeps dying; the database lease decides which scheduler acts.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter
from gunicorn.glogging import Logger

from agent.config import ConfigError, Settings, load_settings
from agent.web.front import worker_class

# gunicorn >= 25.1 opens a control socket at $XDG_RUNTIME_DIR/gunicorn.ctl or
# ~/.gunicorn/gunicorn.ctl; under systemd (ProtectHome=yes, a system user without a home) that
# path is unwritable, and seat-agent has no use for `gunicornc`, so it is disabled.
OPTIONAL_SETTINGS = frozenset({"control_socket_disable"})

log = logging.getLogger("seat_agent.server")

HANDOFF_FILE = "reload-environment.json"


def secret_variables(settings: Settings) -> list[str]:
    """The environment variables the settings read secrets from."""
    return [
        settings.auth.scim_token_env,
        settings.auth.admin_token_env,
        settings.auth.session_secret_env,
        settings.downstream.token_env,
        settings.alerts.password_env,
    ]


def handoff_path() -> Path | None:
    """Where ``seat-agent reload`` leaves the environment for the master: systemd's
    ``RuntimeDirectory=`` (``$RUNTIME_DIRECTORY``, /run/seat-agent, mode 0700)."""
    directory = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    return Path(directory) / HANDOFF_FILE if directory else None


def write_handoff(settings: Settings, environ: dict[str, str], path: Path) -> None:
    """Write the secret variables of ``environ`` (None: unset) for the master, mode 0600,
    atomically; values never reach a log."""
    values = {name: environ.get(name) for name in secret_variables(settings)}
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(values, out)
    os.replace(tmp, path)


def take_handoff(path: Path | None) -> list[str]:
    """Apply and delete a handoff file, if there is one; the names of the variables set."""
    if path is None:
        return []
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    finally:
        path.unlink(missing_ok=True)
    values = json.loads(raw)
    for name, value in values.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    return sorted(values)


class SchedulerSupervisor:
    """``seat-agent scheduler`` beside the gunicorn master, restarted with backoff if it dies.

    ``check`` is called from the master's loop (about once a second, and on SIGCHLD); it never
    blocks. A scheduler that ran ``STABLE_SECONDS`` resets the backoff.
    """

    FIRST_DELAY = 1.0
    MAX_DELAY = 60.0
    STABLE_SECONDS = 60.0
    STOP_TIMEOUT = 15.0

    def __init__(
        self,
        command: list[str],
        clock: Callable[[], float] = time.monotonic,
        spawn: Callable[[list[str]], subprocess.Popen[bytes]] = subprocess.Popen,
    ):
        self.command = command
        self.clock = clock
        self.spawn = spawn
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.delay = self.FIRST_DELAY
        self.restart_at: float | None = None
        self.stopping = False
        self.replacing = False

    def start(self) -> None:
        self.proc = self.spawn(self.command)
        self.started_at = self.clock()
        self.restart_at = None
        log.info("embedded scheduler started (pid %s)", self.proc.pid)

    def check(self) -> None:
        if self.stopping:
            return
        now = self.clock()
        if self.proc is None:
            if self.restart_at is not None and now >= self.restart_at:
                self.start()
            return
        code = self.proc.poll()
        if code is None:
            return
        pid, self.proc = self.proc.pid, None
        if self.replacing:  # stopped on purpose by a reload: start the new one at once
            self.replacing = False
            self.start()
            return
        if now - self.started_at >= self.STABLE_SECONDS:
            self.delay = self.FIRST_DELAY
        log.error(
            "embedded scheduler (pid %s) exited (%s); restarting in %.0f s",
            pid,
            f"signal {-code}" if code < 0 else f"status {code}",
            self.delay,
        )
        self.restart_at = now + self.delay
        self.delay = min(self.delay * 2, self.MAX_DELAY)

    def replace(self) -> None:
        """After a reload: stop the running scheduler (SIGTERM releases its lease) and start
        one with the new configuration as soon as it has exited."""
        if self.stopping:
            return
        if self.proc is not None and self.proc.poll() is None:
            self.replacing = True
            self.proc.terminate()
        else:
            self.proc = None
            self.start()

    def stop(self) -> None:
        self.stopping = True
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=self.STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()


class SeatAgentArbiter(Arbiter):  # type: ignore[misc]
    """gunicorn's master loop, also looking after the embedded scheduler."""

    supervisor: SchedulerSupervisor | None = None

    def handle_chld(self) -> None:
        # Before gunicorn's waitpid(-1) reaps every child: collect the scheduler's own status.
        if self.supervisor is not None:
            self.supervisor.check()
        super().handle_chld()

    handle_cld = handle_chld  # the name gunicorn dispatches SIGCHLD to on Linux

    def manage_workers(self) -> None:
        super().manage_workers()
        if self.supervisor is not None:
            self.supervisor.check()


class SeatAgentServer(BaseApplication):  # type: ignore[misc]
    """gunicorn with the agent's settings; SIGHUP reads ``config_path`` again."""

    def __init__(
        self,
        settings: Settings,
        config_path: str | None,
        options: Callable[[Settings], dict[str, Any]],
        supervisor: SchedulerSupervisor | None = None,
    ):
        self.settings = settings
        self.config_path = config_path
        self.options = options
        self.supervisor = supervisor
        self.loaded = False
        super().__init__()

    def load_config(self) -> None:
        if self.loaded:
            self.settings = self.reread(self.settings)
        self.loaded = True
        for key, value in self.options(self.settings).items():
            if key in OPTIONAL_SETTINGS and key not in self.cfg.settings:
                continue  # an older gunicorn without this setting
            self.cfg.set(key, value)

    def reread(self, running: Settings) -> Settings:
        """The configuration file again (tokens in it included; the environment is the one
        the process started with), or the running settings if it no longer validates."""
        try:
            names = take_handoff(handoff_path())
        except (OSError, ValueError) as err:
            log.error("reload: environment handoff unreadable (%s); environment unchanged", err)
            names = []
        if names:
            log.info("reload: environment variables %s taken over", ", ".join(names))
        if self.config_path is None:
            return running  # *_env secrets are looked up in os.environ when workers start
        try:
            settings = load_settings(self.config_path)
        except ConfigError as err:
            log.error("reload refused, keeping the running configuration: %s", err)
            return running
        log.info("configuration reloaded from %s", self.config_path)
        return settings

    def load(self) -> Any:
        # Each worker builds its own app (and database engine) after the fork.
        from agent.app import create_app

        return create_app(self.settings)

    def run(self) -> None:
        try:
            arbiter = SeatAgentArbiter(self)
            arbiter.supervisor = self.supervisor
            arbiter.run()
        except RuntimeError as e:
            print(f"\nError: {e}\n", file=sys.stderr)
            sys.exit(1)


class AgentLogger(Logger):
    """gunicorn's logger without its access log. agent.web.observability writes one line per
    request, with its request id; gunicorn would otherwise still build its access-log fields
    for every request (its logging is configured by ``logconfig_dict``) only for the
    ``gunicorn.access`` logger to drop them."""

    def access(self, resp: Any, req: Any, environ: Any, request_time: Any) -> None:
        return None

    def _compute_access_log_enabled(self) -> bool:  # gunicorn >= 25: skip building the fields
        return False


def _worker_ready(_worker: Any) -> None:
    """After a worker has built its app: everything allocated so far (modules, the app, the
    engine) lives as long as the worker, so the garbage collector stops walking it. Without
    this every full collection walks a few hundred thousand long-lived objects, a pause that
    lands on whichever request is running."""
    gc.collect()
    gc.freeze()


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
    host: str | None,
    port: int | None,
    workers: int | None,
    scheduler_args: list[str] | None = None,
    config_path: str | None = None,
) -> None:
    """Serve until stopped. ``host``/``port``/``workers`` override the settings (also after a
    reload); ``scheduler_args`` not None runs the embedded scheduler with them."""
    master_pid = os.getpid()
    metrics_dir, metrics_hooks = _multiprocess_metrics()
    from agent.web.observability import logging_config

    supervisor = (
        SchedulerSupervisor([sys.executable, "-m", "agent.cli", "scheduler", *scheduler_args])
        if scheduler_args is not None
        else None
    )

    def when_ready(_server: Any) -> None:
        # Never inside a worker (APScheduler FAQ: one scheduler per job store; the lease makes
        # it one across hosts).
        if supervisor is not None:
            supervisor.start()

    def on_reload(_server: Any) -> None:
        if supervisor is not None:
            supervisor.replace()

    def on_exit(_server: Any) -> None:
        if supervisor is not None:
            supervisor.stop()
        shutil.rmtree(metrics_dir, ignore_errors=True)

    def options(current: Settings) -> dict[str, Any]:
        return {
            **metrics_hooks,
            "when_ready": when_ready,
            "on_reload": on_reload,
            "on_exit": on_exit,
            "bind": f"{host or current.server.host}:{port or current.server.port}",
            "workers": workers or current.server.workers,
            "worker_class": worker_class(
                current.server.header_timeout,
                current.server.body_timeout,
                current.server.max_body_bytes,
            ),
            "threads": current.server.threads,
            "timeout": 60,
            "graceful_timeout": 20,
            # agent.web.observability writes one line per request, with its request id.
            "accesslog": None,
            "errorlog": "-",
            "logconfig_dict": logging_config(current.server.json_logs),
            "logger_class": AgentLogger,
            "post_worker_init": _worker_ready,
            "control_socket_disable": True,
            "preload_app": False,
        }

    try:
        SeatAgentServer(settings, config_path, options, supervisor).run()
    finally:
        # Workers return through here too (gunicorn forks inside run()); only the master cleans.
        if os.getpid() == master_pid:
            shutil.rmtree(metrics_dir, ignore_errors=True)
