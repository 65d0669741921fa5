"""`consent-banner`: demo, serve, proxy, keygen, presets, log ..., receipt verify, scan (--config)."""

from __future__ import annotations

import importlib
import os
import secrets
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import click

from .cli_options import config_option
from .config import ConsentConfig
from .consent import ENV_SECRET_KEYS, secret_keys_from_env
from .display import shown
from .errors import ConfigError, MissingSecretKey
from .log.keys import ENV_LOG_SIGNING_KEY, SigningKey

DEMO_KEY_FILE = ".consent-demo-key"  # `demo` without CONSENT_SECRET_KEYS: its key, beside its log
# `demo` without CONSENT_LOG_SIGNING_KEY: its log key (so the demo's receipts are signed), beside its log
DEMO_LOG_KEY_FILE = ".consent-demo-log-key"


def load_config(path: Path) -> ConsentConfig:
    """The config, or a CLI error naming the file and each bad key."""
    try:
        return ConsentConfig.from_toml(path)
    except ConfigError as e:
        raise click.ClickException(str(e)) from None


def require_keys() -> list[str]:
    try:
        return secret_keys_from_env()
    except MissingSecretKey as e:
        raise click.ClickException(str(e)) from None


class _Commands(click.Group):
    """The command group. What a command fails with is shown with passwords masked and control
    characters escaped: messages quote log URLs, and what sites and databases hold."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except click.ClickException as e:
            # click types `message` Final, but every subclass (BadParameter, UsageError, ours) builds
            # what it shows from it, so the masked text replaces it in place.
            vars(e)["message"] = shown(e.message)
            raise


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="consent-banner")
def cli() -> None:
    """Cookie consent enforced on the server, with a tamper-evident consent log."""


@cli.command()
@click.option(
    "--log",
    "log_key",
    is_flag=True,
    help="A log signing key for CONSENT_LOG_SIGNING_KEY instead (Ed25519, one line: ed25519:<seed>); "
    "`consent-banner log pubkey` prints its public key.",
)
@click.option(
    "--webhook",
    "webhook_secret",
    is_flag=True,
    help="A webhook secret instead (Standard Webhooks' whsec_<base64>, 32 random bytes), for the "
    "variable a [[webhooks]] secret_env names; give the receiver the same.",
)
def keygen(log_key: bool, webhook_secret: bool) -> None:
    """Print a new signing key for CONSENT_SECRET_KEYS (or, with --log, for CONSENT_LOG_SIGNING_KEY;
    with --webhook, a webhook secret)."""
    if log_key and webhook_secret:
        raise click.UsageError("--log and --webhook make different keys: give one")
    if log_key:
        click.echo(SigningKey.generate().line())
        return
    if webhook_secret:
        from .events.signature import new_secret

        click.echo(new_secret())
        return
    click.echo(secrets.token_urlsafe(32))


def _demo_key(path: Path, make: Callable[[], str] = lambda: secrets.token_urlsafe(32)) -> str:
    """The demo's signing key: read from `path`, or made up once (`make`) and written there (owner-only)."""
    try:
        key = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        key = ""
    except (OSError, UnicodeDecodeError) as e:
        raise click.ClickException(f"cannot read the demo key {path}: {e}") from None
    if key:
        return key
    key = make()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(key + "\n")
    except OSError as e:
        raise click.ClickException(f"cannot write the demo key {path}: {e}") from None
    return key


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="a consent.toml for the demo (default: the demo's own)",
)
@click.option(
    "--us",
    is_flag=True,
    help="the demo's US controller (consent-us.toml: [geo], opt-out in the US states that say so)",
)
def demo(host: str, port: int, config_path: Path | None, us: bool) -> None:
    """Run the demo site (office space booking) with the SQLite consent log."""
    if us and config_path is not None:
        raise click.UsageError("--us is the demo's own US configuration: give it or --config, not both")
    if not os.environ.get(ENV_SECRET_KEYS):
        # The log refuses to write after a head signed by a key it does not list, so a key made up
        # per run would strand the demo's log at the second run: the key is kept beside the log.
        os.environ[ENV_SECRET_KEYS] = _demo_key(Path.cwd() / DEMO_KEY_FILE)
        click.secho(
            f"WARNING: {ENV_SECRET_KEYS} is not set; the demo signs with a key kept in ./{DEMO_KEY_FILE}. "
            "Never do this in production.",
            fg="red",
            bold=True,
            err=True,
        )
    else:
        require_keys()
    if not os.environ.get(ENV_LOG_SIGNING_KEY):
        # Its receipts signed, as a site with a log key has them; kept like the key above, since a log
        # whose head this key signed refuses to go on without it.
        os.environ[ENV_LOG_SIGNING_KEY] = _demo_key(
            Path.cwd() / DEMO_LOG_KEY_FILE, lambda: SigningKey.generate().line()
        )
        click.echo(
            f"note: {ENV_LOG_SIGNING_KEY} is not set; the demo signs its log and receipts with a key kept "
            f"in ./{DEMO_LOG_KEY_FILE}",
            err=True,
        )
    generated = not (os.environ.get("CONSENT_AUDIT_TOKEN") or os.environ.get("CONSENT_AUDIT_PASSWORD"))
    if generated:
        os.environ.setdefault("CONSENT_AUDIT_USER", "auditor")
        os.environ["CONSENT_AUDIT_PASSWORD"] = secrets.token_urlsafe(12)
    site = _demo_module()
    if us:
        config_path = site.US_CONFIG
    # A password the demo made up is printed once (nobody could know it otherwise); one the
    # operator set is never echoed.
    site.run(host=host, port=port, config_path=config_path, show_audit_password=generated)


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@config_option("the consent.toml to use")
def serve(host: str, port: int, config_path: Path) -> None:
    """Run a stand-alone consent server for sites that embed the script (not Python sites)."""
    import uvicorn

    from .standalone import build_app

    config = load_config(config_path)
    app = build_app(config, require_keys())
    click.echo(f"consent server on http://{host}:{port}{config.prefix}/consent.js")
    uvicorn.run(app, host=host, port=port, log_level="warning")


@cli.command()
@click.option("--upstream", required=True, help="the site to put the gate in front of: http://host[:port]")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--forwarded-allow-ips",
    default=None,
    help="addresses of the front server whose X-Forwarded-For/-Proto count (uvicorn's; default "
    "$FORWARDED_ALLOW_IPS or 127.0.0.1)",
)
@config_option("the consent.toml to use")
def proxy(upstream: str, host: str, port: int, forwarded_allow_ips: str | None, config_path: Path) -> None:
    """Put the whole gate in front of any site (PHP, Node, static...) as a streaming reverse proxy."""
    import uvicorn

    from .middleware import ConsentMiddleware
    from .proxy import MISSING_EXTRA, ProxyApp

    config = load_config(config_path)
    try:
        inner = ProxyApp(upstream, site_origins=config.site_origins)
    except ModuleNotFoundError:
        raise click.ClickException(MISSING_EXTRA) from None
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--upstream") from None
    app = ConsentMiddleware(inner, config=config, secret_keys=require_keys())
    click.echo(f"consent-banner proxy on http://{host}:{port}, in front of {inner.upstream}")
    # uvicorn's ProxyHeadersMiddleware resolves the client and scheme from a trusted front server's
    # headers (only from it): what the log keeps, the rate limit counts, and the upstream is told.
    # Date and Server are the upstream's: uvicorn adding its own would send each twice.
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="warning",
        forwarded_allow_ips=forwarded_allow_ips,
        server_header=False,
        date_header=False,
    )


@cli.command()
@click.argument("name", required=False)
def presets(name: str | None) -> None:
    """List the catalog of services, or print the [[services]] TOML of preset NAME."""
    from . import catalog

    if name is None:
        rows = list(catalog.catalog().values())
        width = max(len(p.name) for p in rows)
        for p in rows:
            n = len(p.origins)
            origins = f"{n:>2} origin{'s' if n != 1 else ' '}"
            click.echo(f"{p.name:<{width}}  {p.category:<10}  {origins}  {p.provider}")
        click.echo(f"\n{len(rows)} presets; `consent-banner presets NAME` prints one as TOML.")
        return
    try:
        click.echo(catalog.toml_block(name), nl=False)
    except catalog.UnknownPreset as e:
        raise click.UsageError(str(e)) from None


def _demo_module() -> ModuleType:
    """The demo site: shipped in the wheel as consent_banner.demo_site, or server/ in a checkout."""
    try:
        return importlib.import_module("consent_banner.demo_site.app")
    except ModuleNotFoundError:
        root = Path(__file__).resolve().parent.parent
        if (root / "server" / "app.py").exists() and str(root) not in sys.path:
            sys.path.insert(0, str(root))
        return importlib.import_module("server.app")


def _add_subcommands() -> None:
    from .audit.receipt_commands import receipt
    from .log.commands import log
    from .scan import scan  # imports Playwright only when a scan runs (the `scan` extra)

    cli.add_command(log)
    cli.add_command(receipt)
    cli.add_command(scan)


_add_subcommands()


def main() -> None:
    cli(prog_name="consent-banner")
