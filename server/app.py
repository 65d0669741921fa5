"""Start the demo: the site and its third parties, each on its own loopback host, in one process.

`consent-banner demo` calls `run()`. The tests use `Demo.start(...)` (through
`e2e/demo_support.py`), which serves the same apps on free ports in a background thread.

The third parties bind to 127.0.0.2, 127.0.0.3, ... (Linux routes all of 127/8 to loopback):
for the browser each address is a different site, so their cookies are third-party cookies and
their scripts are cross-origin. Where an address cannot be bound (macOS has only 127.0.0.1 by
default) the third party falls back to 127.0.0.1 on another port and the demo says so: it still
works, but the hosts then share one cookie jar.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import os
import signal
import socket
import sys
import threading
import time
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import ip_address
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import uvicorn
from starlette.types import ASGIApp

from consent_banner import ConfigError, ConsentConfig, LogError
from consent_banner.display import mask_passwords

from .site import Hits, build_site
from .thirdparty import THIRD_PARTIES, RequestLog, build_third_party

DEFAULT_CONFIG = Path(__file__).with_name("consent.toml")
# The same company as a US controller, with [geo]: opt-out in the US states that say so (issue 17).
US_CONFIG = Path(__file__).with_name("consent-us.toml")
ENV_AUDIT_USER = "CONSENT_AUDIT_USER"
ENV_AUDIT_PASSWORD = "CONSENT_AUDIT_PASSWORD"
ENV_AUDIT_TOKEN = "CONSENT_AUDIT_TOKEN"


def load_config(
    config_path: Path | None = None,
    *,
    third_parties: Mapping[str, str] | None = None,
    workdir: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> ConsentConfig:
    """The demo's ConsentConfig.

    Without `config_path` it is server/consent.toml with the origins of the third parties set to
    where they are served (`third_parties`, name -> origin), and so is the demo's other config
    (US_CONFIG); any other file given explicitly is used as is. A relative SQLite log path is taken
    relative to `workdir` (default: the current directory).
    `overrides` replaces top-level keys after loading (the tests change `policy_revision` with it).
    """
    path = config_path or DEFAULT_CONFIG
    with path.open("rb") as f:
        data = tomllib.load(f)
    own = config_path is None or config_path.resolve() in (DEFAULT_CONFIG.resolve(), US_CONFIG.resolve())
    if own and third_parties:
        data = copy.deepcopy(data)
        for service in data.get("services", []):
            if service.get("name") in third_parties:
                service["origins"] = [third_parties[service["name"]]]
    if overrides:
        data = {**data, **overrides}
    log = data.get("log")
    if workdir is not None and isinstance(log, str) and log.startswith("sqlite:///"):
        db = Path(log.removeprefix("sqlite:///"))
        if not db.is_absolute():
            data["log"] = f"sqlite:///{(workdir / db).resolve()}"
    return ConsentConfig.from_dict(data, source=str(path))


def build(
    config_path: Path | None = None,
    *,
    third_parties: Mapping[str, str] | None = None,
    workdir: Path | None = None,
    secret_keys: Sequence[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> tuple[ASGIApp, dict[str, Any]]:
    """The demo site as an ASGI app, and what the tests need to know about it.

    `third_parties` maps stats, ads, maps, chat and gtag to the origins they are served at (the
    pages load from there); without it the origins in the config are used. Returns the app
    (ConsentMiddleware around the site) and {"config", "middleware", "hits", "third_parties"}.
    """
    config = load_config(config_path, third_parties=third_parties, workdir=workdir, overrides=overrides)
    origins = dict(third_parties or {})
    for name in THIRD_PARTIES:
        if name not in origins:
            service = config.services_by_name.get(name)
            # Port 9 (discard): a config without this third party gets its tags pointed at nothing.
            origins[name] = service.origins[0] if service and service.origins else "http://127.0.0.1:9"
    middleware, hits = build_site(config, origins, secret_keys=secret_keys)
    return middleware, {"config": config, "middleware": middleware, "hits": hits, "third_parties": origins}


# --- serving ------------------------------------------------------------------------------------------


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signals to the demo, which stops all its servers together."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _origin(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _wanted_addresses(config_path: Path | None) -> dict[str, tuple[str, int]]:
    """Where each third party should listen: the loopback address its service names in an
    explicit config, else its own address (127.0.0.N); port 0 (a free one) unless named."""
    wanted = {name: (address, 0) for name, (address, _) in THIRD_PARTIES.items()}
    if config_path is None:
        return wanted
    with config_path.open("rb") as f:
        data = tomllib.load(f)
    for service in data.get("services", []):
        name, origins = service.get("name"), service.get("origins")
        if name not in wanted or not origins:
            continue
        parts = urlsplit(str(origins[0]))
        try:
            if parts.hostname and ip_address(parts.hostname).is_loopback:
                wanted[name] = (parts.hostname, parts.port or 0)
        except ValueError:
            pass  # a host name, not an address: keep the default
    return wanted


@dataclass
class Demo:
    """The site and its third parties, bound to their sockets and ready to serve."""

    site_url: str
    third_parties: dict[str, str]  # name -> origin
    requests: dict[str, RequestLog]  # name -> what that host received
    config: ConsentConfig
    hits: Hits
    app: ASGIApp
    warnings: list[str] = field(default_factory=list)
    _servers: list[tuple[uvicorn.Server, socket.socket]] = field(default_factory=list)
    _thread: threading.Thread | None = None

    @classmethod
    def prepare(
        cls,
        host: str = "127.0.0.1",
        port: int = 0,
        config_path: Path | None = None,
        *,
        workdir: Path | None = None,
        secret_keys: Sequence[str] | None = None,
        overrides: Mapping[str, Any] | None = None,
        log_level: str = "warning",
    ) -> Demo:
        """Bind every socket (port 0: a free one) and build every app; nothing is served yet."""
        warnings: list[str] = []
        sockets: dict[str, socket.socket] = {}
        try:
            for name, (want_host, want_port) in _wanted_addresses(config_path).items():
                try:
                    sockets[name] = _bind(want_host, want_port)
                except OSError as e:
                    sockets[name] = _bind("127.0.0.1", 0)
                    warnings.append(
                        f"{name}: cannot listen on {want_host}:{want_port} ({e.strerror}); using "
                        f"{_origin(sockets[name])}, which shares its cookies with the site's host"
                    )
            site_socket = _bind(host, port)
        except OSError:
            for s in sockets.values():
                s.close()
            raise
        origins = {name: _origin(s) for name, s in sockets.items()}
        app, info = build(
            config_path, third_parties=origins, workdir=workdir, secret_keys=secret_keys, overrides=overrides
        )
        config: ConsentConfig = info["config"]
        if config_path is not None:
            for name, origin in origins.items():
                service = config.services_by_name.get(name)
                if service is not None and origin not in service.origins:
                    warnings.append(
                        f"{name} is served at {origin}, which {config_path} does not list among its "
                        "origins: the middleware will keep it out even after consent"
                    )
        requests: dict[str, RequestLog] = {}
        servers: list[tuple[uvicorn.Server, socket.socket]] = []
        for name, sock in sockets.items():
            tp_app, requests[name] = build_third_party(name, origins[name])
            # The third parties' access logs would drown the site's: they log warnings only.
            quiet = "warning" if log_level in ("info", "debug", "trace") else log_level
            servers.append((_server(tp_app, sock, quiet), sock))
        servers.insert(0, (_server(app, site_socket, log_level, lifespan="on"), site_socket))
        site_host, site_port = site_socket.getsockname()[:2]
        shown = "127.0.0.1" if site_host in ("0.0.0.0", "::") else site_host
        site_url = f"http://[{shown}]:{site_port}" if ":" in shown else f"http://{shown}:{site_port}"
        return cls(site_url, origins, requests, config, info["hits"], app, warnings, servers)

    async def serve(self) -> None:
        """Serve every app until `stop()` (or Ctrl-C in `run`)."""
        await asyncio.gather(*(server.serve(sockets=[sock]) for server, sock in self._servers))

    @property
    def started(self) -> bool:
        return all(server.started for server, _ in self._servers)

    def stop(self) -> None:
        """Ask every server to finish its requests and stop (thread-safe)."""
        for server, _ in self._servers:
            server.should_exit = True

    def force_stop(self) -> None:
        for server, _ in self._servers:
            server.force_exit = True

    def start(self, timeout: float = 15.0) -> Demo:
        """Serve in a background thread (for tests); returns once every server accepts requests."""
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self.serve()), name="consent-demo", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.started:
            if not self._thread.is_alive():
                raise RuntimeError("the demo stopped while starting: see the output above")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"the demo did not start within {timeout} s")
            time.sleep(0.02)
        return self

    def join(self, timeout: float = 15.0) -> None:
        """Stop and wait for the background thread."""
        self.stop()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                self.force_stop()
                self._thread.join(5)
        for _, sock in self._servers:
            sock.close()


def _server(app: ASGIApp, sock: socket.socket, log_level: str, *, lifespan: str = "off") -> uvicorn.Server:
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        lifespan=lifespan,  # the site's: the middleware closes the consent log on shutdown
        # The third parties are reached only from this machine's browser; keep-alive short so
        # shutdown on Ctrl-C is prompt.
        timeout_keep_alive=2,
        timeout_graceful_shutdown=3,
    )
    return _Server(config)


class _EachLineOnce(logging.Filter):
    """The demo's six servers share uvicorn's logger: each says "Started server process", "Shutting
    down" and so on. Say each such line once."""

    def __init__(self) -> None:
        super().__init__()
        self._seen: set[tuple[object, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO:
            return True
        key = (record.msg, repr(record.args))  # args may be a mapping, which does not hash
        if key in self._seen:
            return False
        self._seen.add(key)
        return True


async def _upgrade_own_log(url: str) -> str | None:
    """The demo's own log brought to this release's schema, as `consent-banner log migrate` does (a
    site's server never migrates a log: it refuses and says to run that). What to print, or None
    when there is nothing to do (no log yet: the server creates it; or it is current)."""
    from consent_banner.consent import secret_keys_from_env
    from consent_banner.log import hmac_keys_from_secrets, open_log
    from consent_banner.log.keys import LogKeys
    from consent_banner.log.schema import SCHEMA_VERSION

    try:
        reader = await open_log(url, hmac_key=None, read_only=True)
    except LogError:
        return None
    try:
        found = await reader.schema_version()
    finally:
        await reader.close()
    if found >= SCHEMA_VERSION:
        return None
    key, old = hmac_keys_from_secrets(secret_keys_from_env())
    log = await open_log(url, hmac_key=key, previous_hmac_keys=old, migrate=True, log_keys=LogKeys.from_env())
    await log.close()
    return f"upgraded from schema {found} to {SCHEMA_VERSION}, as `consent-banner log migrate` would"


def run(host: str, port: int, config_path: Path | None, *, show_audit_password: bool = False) -> None:
    """`consent-banner demo`: serve the site and its third parties until Ctrl-C.

    show_audit_password: print the audit password (one the demo generated); else only say it is set.
    """
    try:
        demo = Demo.prepare(host, port, config_path, workdir=Path.cwd(), log_level="info")
    except ConfigError as e:
        raise SystemExit(f"consent-banner demo: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise SystemExit(f"consent-banner demo: {config_path}: not valid TOML: {e}") from None
    except OSError as e:
        raise SystemExit(f"consent-banner demo: cannot start on {host}:{port}: {e.strerror or e}") from None
    try:
        upgraded = asyncio.run(_upgrade_own_log(demo.config.log))
    except LogError as e:
        upgraded = f"not upgraded: {e}"
    user = os.environ.get(ENV_AUDIT_USER, "")
    password = os.environ.get(ENV_AUDIT_PASSWORD, "")
    token = os.environ.get(ENV_AUDIT_TOKEN, "").strip()
    prefix = demo.config.prefix
    lines = [
        "",
        "consent-banner demo: Tallgrove Workspaces (a fictional office rental company)",
        f"  site            {demo.site_url}/            (Swedish: {demo.site_url}/sv/)",
        f"  privacy policy  {demo.site_url}/privacy",
        f"  your receipt    {demo.site_url}{prefix}/receipt",
        f"  audit view      {demo.site_url}{prefix}/audit/",
    ]
    if password and user:
        shown = password if show_audit_password else f"as set in {ENV_AUDIT_PASSWORD}"
        lines.append(f"{'':18}user {user}, password {shown}")
    if token:
        lines.append(f"{'':18}token as set in {ENV_AUDIT_TOKEN} (Authorization: Bearer)")
    if not (password and user) and not token:
        lines.append(f"{'':18}disabled: set {ENV_AUDIT_USER} and {ENV_AUDIT_PASSWORD} to enable it")
    lines.append("  third parties (each its own site for the browser):")
    for name, origin in demo.third_parties.items():
        lines.append(f"    {name:<6} {origin}/")
    lines.append(f"  consent log     {mask_passwords(demo.config.log)}")
    if upgraded:
        lines.append(f"{'':18}{upgraded}")
    lines += [f"  WARNING: {w}" for w in demo.warnings]
    lines += ["Press Ctrl-C to stop.", ""]
    print("\n".join(lines), flush=True)
    logging.getLogger("uvicorn.error").addFilter(_EachLineOnce())

    async def main() -> None:
        loop = asyncio.get_running_loop()
        presses = 0

        def on_signal() -> None:
            nonlocal presses
            presses += 1
            demo.stop()
            if presses > 1:  # a second Ctrl-C: do not wait for open connections
                demo.force_stop()

        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):  # Windows: KeyboardInterrupt instead
                loop.add_signal_handler(sig, on_signal)
        await demo.serve()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    print("consent-banner demo stopped.", file=sys.stderr, flush=True)
