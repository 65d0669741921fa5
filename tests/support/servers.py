"""Servers a test starts and stops: a free port, waiting for a listener, stopping a process group, and
Debian's nginx run by the test itself.

tests/ and e2e/ both import this as `tests.support.servers` (pytest's `pythonpath = ["."]` puts the
repository on sys.path for either). nginx runs in the foreground as the test's own process, with its
prefix, pid file, temp dirs and logs in the test's directory (never /var/log/nginx or /run), so tests
run side by side and as any user. `NGINX` names the binary (default: Debian's /usr/sbin/nginx).
"""

from __future__ import annotations

import grp
import os
import pwd
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

NGINX = os.environ.get("NGINX", "/usr/sbin/nginx")


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on at `host` now (the kernel's pick; a race with others is possible)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for_port(
    host: str,
    port: int,
    *,
    server: subprocess.Popen[Any] | threading.Thread | None = None,
    log: Path | None = None,
    seconds: float = 20.0,
) -> None:
    """Returns once host:port accepts a connection. Raises if `server` (the process or thread meant to
    listen there) ends first, with the end of its `log`, or after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        if isinstance(server, subprocess.Popen) and server.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log is not None and log.exists() else ""
            argv = server.args
            program = os.fsdecode(argv if isinstance(argv, str | bytes | os.PathLike) else argv[0])
            raise RuntimeError(f"{program} exited ({server.returncode}): {tail}")
        if isinstance(server, threading.Thread) and not server.is_alive():
            raise RuntimeError(f"{server.name} ended before listening on {host}:{port}")
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on {host}:{port}") from None
            time.sleep(0.05)


def stop(process: subprocess.Popen[Any], seconds: float = 10.0) -> None:
    """SIGTERM (nginx's fast shutdown, uvicorn's graceful one), then SIGKILL to the whole process group
    (started with `start_new_session=True`: a worker left behind goes too)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(seconds)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(5)


class Nginx:
    """nginx listening on host:port (`start(http)`, then `stop()`), run from `directory`.

    The `http {}` body is the test's own (servers, upstreams, caches, its access_log: `self.access_log` is the
    path to name there); the runner adds the rest: the foreground process, the pid file, every temp
    path and the error log in `directory`, and the user (run as root, the workers would become
    `nobody`, who cannot read the test's directory: they stay who the test is).
    """

    def __init__(self, directory: Path, host: str, port: int, *, error_level: str = "warn") -> None:
        self.directory, self.host, self.port = directory, host, port
        self.error_level = error_level
        self.conf = directory / "nginx.conf"
        self.access_log = directory / "access.log"
        self.error_log = directory / "error.log"
        self.process: subprocess.Popen[bytes] | None = None

    def config(self, http: str) -> str:
        d = self.directory
        user = ""
        if os.geteuid() == 0:
            user = f"user {pwd.getpwuid(os.geteuid()).pw_name} {grp.getgrgid(os.getegid()).gr_name};\n"
        kinds = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        temps = "".join(f"    {kind}_temp_path {d}/{kind};\n" for kind in kinds)
        return (
            f"{user}daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\n"
            f"error_log {self.error_log} {self.error_level};\nevents {{ worker_connections 64; }}\n\n"
            f"http {{\n{temps}{http}}}\n"
        )

    def start(self, http: str) -> None:
        """Writes the config around `http`, has nginx check it (`-t`), starts it, waits until it listens."""
        assert Path(NGINX).is_file(), f"{NGINX} is missing: ./run test installs Debian's nginx"
        self.conf.write_text(self.config(http))
        # -p: its own prefix; -e: the error log from the start (never the system's /var/log/nginx).
        args = [NGINX, "-p", str(self.directory), "-e", str(self.error_log), "-c", str(self.conf)]
        check = subprocess.run([*args, "-t"], capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, check.stderr
        self.process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        try:
            wait_for_port(self.host, self.port, server=self.process, log=self.error_log)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)
            self.process = None

    def access_lines(self) -> list[str]:
        return self.access_log.read_text().splitlines()
