"""`consent-banner log ...`: export, verify, stats, purge, migrate, blocked, checkpoints.

One module over 400 lines on purpose: it is the whole `log` command group, eight short commands and
the option parsing they share (keys, filters, dates, the files an auditor hands in); split, each part
would import the same helpers and a reader would lose the one page that lists the CLI.

Every command reads the log URL from `--config` (consent.toml's `log` key; a relative SQLite
path is taken from the current directory, as the server does). The key that signs the chain
comes from CONSENT_SECRET_KEYS; without it the read commands still work but cannot check
signatures, and purge refuses.

The read commands (export, verify, stats, blocked, checkpoints without --new) open the log
read-only: they write nothing, take no lock and change no schema, so they run with read-only
database credentials, on a SQLite file in a read-only directory, and on a log of an older schema.
Only `migrate` changes a schema; purge and `checkpoints --new` write and, on an older schema,
say to run `log migrate` first.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime, timedelta
from functools import wraps
from pathlib import Path
from typing import Any, TextIO, TypeVar

import click

from .. import cli_options
from ..config import ConsentConfig
from ..consent import secret_keys_from_env
from ..display import escape_controls, shown
from ..durations import parse_duration
from ..errors import ConsentBannerError, MissingSecretKey
from . import derive_hmac_key, hmac_keys_from_secrets, open_log
from .checkpoints import Checkpoint
from .export import FORMATS, stream, stream_export
from .filters import RecordFilter, parse_day, valid_action
from .keys import LogKeys, read_public_key_files
from .offline import ExportError, read_pins, verify_export
from .protocol import ConsentLog
from .results import PurgeResult, VerifyResult
from .signing import key_id

T = TypeVar("T")

config_option = cli_options.config_option("The consent.toml whose `log` key names the log.")


def _run(fn: Callable[..., Coroutine[Any, Any, T]]) -> Callable[..., T]:
    """Run an async command body; library errors become clean CLI errors (exit 1)."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return asyncio.run(fn(*args, **kwargs))
        except (ConsentBannerError, ValueError) as e:
            raise click.ClickException(shown(e)) from e

    return wrapper


def _keys(required: bool) -> tuple[bytes | None, list[bytes]]:
    try:
        return hmac_keys_from_secrets(secret_keys_from_env())
    except MissingSecretKey as e:
        if required:
            raise click.ClickException(str(e)) from e
        return None, []


async def _open(config_path: Path, *, write: bool = False) -> ConsentLog:
    """The log to read (read-only, the keys only check signatures) or, with `write`, to write (the
    server key required; an older schema refused with "run consent-banner log migrate")."""
    config = ConsentConfig.from_toml(config_path)
    key, old = _keys(write)
    # The log signing key (Ed25519) signs what a writer writes; a reader checks with its public half.
    return await open_log(
        config.log,
        hmac_key=key,
        previous_hmac_keys=old,
        create=False,
        read_only=not write,
        log_keys=LogKeys.from_env(),
    )


def _filter(since: str | None, until: str | None, action: str | None, consent_id: str | None) -> RecordFilter:
    return RecordFilter(
        since=_day(since, "--since"),
        until=_day(until, "--until", end=True),
        action=valid_action(action),
        consent_id=consent_id or None,
    )


def _day(text: str | None, option: str, *, end: bool = False) -> datetime | None:
    try:
        return parse_day(text, end=end)
    except ValueError as e:
        raise click.BadParameter(shown(e), param_hint=[option]) from None


async def _with_log(
    config_path: Path, body: Callable[[ConsentLog], Awaitable[T]], *, write: bool = False
) -> T:
    log = await _open(config_path, write=write)
    try:
        return await body(log)
    finally:
        await log.close()


@click.group("log")
def log() -> None:
    """The consent log: export, verify, stats, purge, migrate, blocked, webhooks."""


filters = [
    click.option("--since", help="From this day (YYYY-MM-DD, UTC) or ISO time, inclusive."),
    click.option("--until", help="Up to this day (inclusive) or ISO time (exclusive)."),
    click.option("--action", help="Only this action (accept_all, reject_all, custom, withdraw, gpc, renew)."),
    click.option("--consent-id", help="Only this consent id."),
]


def with_filters(fn: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(filters):
        fn = option(fn)
    return fn


@log.command()
@config_option
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="csv", show_default=True)
@with_filters
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, allow_dash=True),
    default="-",
    help="File to write (default: standard output).",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Progress bar on standard error (default: when it is a terminal and the data is not).",
)
@_run
async def export(
    config_path: Path,
    fmt: str,
    since: str | None,
    until: str | None,
    action: str | None,
    consent_id: str | None,
    output: str,
    progress: bool | None,
) -> None:
    """Export records as CSV or NDJSON, streamed in constant memory."""
    flt = _filter(since, until, action, consent_id)
    to_stdout = output == "-"
    if progress is None:
        progress = sys.stderr.isatty() and not (to_stdout and sys.stdout.isatty())

    async def body(lg: ConsentLog) -> None:
        total = await lg.count(flt) if progress else 0
        out: TextIO = sys.stdout if to_stdout else open(output, "w", encoding="utf-8", newline="")  # noqa: SIM115
        # A file or a pipe gets the stored text as is: it is data, verified from. A terminal gets
        # it with control characters escaped, so no record can drive the terminal.
        on_terminal = to_stdout and sys.stdout.isatty()
        written = 0
        try:
            bar = (
                click.progressbar(length=total, label=f"exporting {total} records", file=sys.stderr)
                if progress
                else None
            )
            try:
                # NDJSON carries the checkpoints and the signed head it was taken at (one snapshot),
                # for `log verify --export` with the public key alone.
                texts = (
                    stream_export(lg.export_chunks(flt), await lg.schema_version())
                    if fmt == "ndjson"
                    else stream(lg.iter_chunks(flt), fmt)
                )
                async for text in texts:
                    out.write(escape_controls(text, newlines=True) if on_terminal else text)
                    if bar is not None:
                        n = text.count("\n")
                        bar.update(0 if written == 0 and fmt == "ndjson" else n - 1 if written == 0 else n)
                    written += 1
            finally:
                if bar is not None:
                    bar.render_finish()
        finally:
            if not to_stdout:
                out.close()

    await _with_log(config_path, body)


def _print_verify(result: VerifyResult, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
    else:
        click.echo(shown(result.message))
        if result.signatures:
            click.echo(shown(result.signatures))
        for note in result.notes:
            click.echo(f"note: {shown(note)}", err=True)
    if not result.ok:
        sys.exit(1)


def _read_pins(path: Path) -> list[Checkpoint]:
    try:
        return read_pins(path)
    except ExportError as e:
        raise click.BadParameter(shown(f"{path}, {e}"), param_hint=["--pins"]) from None


def _public_keys(files: tuple[Path, ...]) -> LogKeys:
    """The log's public keys verify checks Ed25519 signatures with: from --public-key files when
    given, else from CONSENT_LOG_SIGNING_KEY and CONSENT_LOG_PUBLIC_KEYS (never from the log)."""
    if files:
        return LogKeys(retired=tuple(read_public_key_files(files)))
    return LogKeys.from_env()


@log.command()
@config_option
@click.option(
    "--export",
    "--file",
    "file_",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Verify an export (`log export --format ndjson`: with its checkpoints and signed head; or CSV) "
    "instead of the database: no database, and with --public-key no secret either.",
)
@click.option(
    "--public-key",
    "public_key_files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A PEM file of the log's public key ({prefix}/log-key, `log pubkey`); repeat for a retired "
    "one. Instead of CONSENT_LOG_SIGNING_KEY and CONSENT_LOG_PUBLIC_KEYS.",
)
@click.option(
    "--pins",
    "--checkpoints",
    "pinned",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Checkpoints pinned earlier (NDJSON from `log checkpoints`, kept outside the database) that "
    "the log must still hold and agree with: the only way to catch a rollback to an older copy.",
)
@click.option(
    "--key",
    "cli_keys",
    multiple=True,
    help="A server key to check signatures with, instead of CONSENT_SECRET_KEYS (repeat for older "
    "ones). Keys never come from the database.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@_run
async def verify(
    config_path: Path,
    file_: Path | None,
    public_key_files: tuple[Path, ...],
    pinned: Path | None,
    cli_keys: tuple[str, ...],
    as_json: bool,
) -> None:
    """Recompute the hash chain: "N records, chain intact, head H", or the first bad record and why.

    With the server keys (CONSENT_SECRET_KEYS or --key) the head must be signed by one of them, and
    the checkpoints must form the chain the head signs. Exits with status 1 when anything fails.
    """
    pins = _read_pins(pinned) if pinned else []
    public = _public_keys(public_key_files)
    # With the public key alone an export needs no secret; a secret given too checks the HMACs.
    keys = [] if public_key_files and not cli_keys else _verify_keys(cli_keys)
    if file_ is not None:
        try:
            result = verify_export(
                file_, pins=pins, keys=_key_map(keys) if keys else None, public_keys=public.public or None
            )
        except ExportError as e:
            raise click.BadParameter(shown(f"{file_}, {e}"), param_hint=["--export"]) from None
        _print_verify(result, as_json)
        return
    config = ConsentConfig.from_toml(config_path)
    # Read-only: verifying never writes (and so never re-signs) the head, nor takes a lock.
    lg = await open_log(config.log, hmac_key=None, previous_hmac_keys=keys, read_only=True, log_keys=public)
    try:
        result = await lg.verify(pins, require_public=bool(public_key_files))
    finally:
        await lg.close()
    _print_verify(result, as_json)


def _verify_keys(cli_keys: tuple[str, ...]) -> list[bytes]:
    """The HMAC keys verify checks with: from --key when given, else from CONSENT_SECRET_KEYS."""
    if cli_keys:
        for i, k in enumerate(cli_keys, 1):
            if len(k.strip()) < 32:  # the rule of CONSENT_SECRET_KEYS: an empty key checks nothing
                raise click.BadParameter(f"key #{i} is shorter than 32 characters", param_hint="--key")
        return [derive_hmac_key(k.strip()) for k in cli_keys]
    key, old = _keys(False)
    return [key, *old] if key is not None else []


def _key_map(keys: list[bytes]) -> dict[str, bytes]:
    return {key_id(k): k for k in keys}


@log.command()
@config_option
@click.option("--since")
@click.option("--until")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@_run
async def stats(config_path: Path, since: str | None, until: str | None, as_json: bool) -> None:
    """Decisions per day by action, the acceptance rate per category, and by region and model."""
    s = await _with_log(config_path, lambda lg: lg.stats(_filter(since, until, None, None)))
    if as_json:
        click.echo(json.dumps(s.to_json(), indent=2))
        return
    # Days, actions and categories come from the database: shown with their controls escaped.
    period = f", {s.first_at[:10]} to {s.last_at[:10]}" if s.first_at and s.last_at else ""
    click.echo(escape_controls(f"{s.total} decisions by {s.consent_ids} consent ids{period}"))
    if not s.total:
        return
    actions = sorted(s.by_action)
    click.echo("")
    click.echo("day         " + "".join(f"{escape_controls(a):>12}" for a in actions) + f"{'total':>10}")
    for day, counts in sorted(s.per_day.items()):
        figures = "".join(f"{counts.get(a, 0):>12}" for a in actions) + f"{sum(counts.values()):>10}"
        click.echo(f"{escape_controls(day)}  {figures}")
    click.echo("")
    click.echo("acceptance rate per category")
    for c in s.categories:
        click.echo(
            f"  {escape_controls(c):<20} {s.acceptance_rate(c) * 100:6.1f}%  ({s.granted.get(c, 0)} of "
            f"{s.granted.get(c, 0) + s.denied.get(c, 0)})"
        )
    if list(s.by_model) != ["unknown"]:  # a log of an earlier release says no jurisdiction at all
        models = list(s.by_model)
        click.echo("")
        click.echo("by region and consent model")
        click.echo("  region    " + "".join(f"{escape_controls(m):>10}" for m in models))
        for region, counts in s.by_region.items():
            figures = "".join(f"{counts.get(m, 0):>10}" for m in models)
            click.echo(f"  {escape_controls(region):<8}{figures}")


@log.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print the states as JSON.")
@_run
async def webhooks(config_path: Path, as_json: bool) -> None:
    """Each webhook's delivery: delivered through which record, pending, failing (read-only)."""
    from ..events.status import describe, webhook_status

    config = ConsentConfig.from_toml(config_path)
    found = await _with_log(config_path, lambda lg: webhook_status(lg, config.webhooks))
    if as_json:
        click.echo(json.dumps([s.to_json() for s in found], indent=2))
        return
    if not found:
        click.echo("no webhooks: add [[webhooks]] to consent.toml")
    for s in found:
        for line in describe(s):  # names and errors come from the database and receivers: escaped
            click.echo(escape_controls(line))


@log.command()
@config_option
@click.option(
    "--older-than", help="Remove records older than this: 90d, 6m, 3y (default: config `retention`)."
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@_run
async def purge(config_path: Path, older_than: str | None, yes: bool) -> None:
    """Remove old records (R21); the rest stays verifiable from a signed checkpoint; the purge is logged."""
    config = ConsentConfig.from_toml(config_path)
    period = older_than or config.retention
    if not period:
        raise click.UsageError("say --older-than (e.g. 3y), or set `retention` in the config")
    try:
        days = parse_duration(period)
        datetime.now(UTC) - timedelta(days=days)
    except OverflowError:
        raise click.BadParameter(
            f"{period!r} reaches back before the year 1", param_hint=[_period_source(older_than)]
        ) from None
    except ValueError as e:
        raise click.BadParameter(shown(e), param_hint=[_period_source(older_than)]) from None
    if not yes:
        click.confirm(f"Remove every consent record older than {period} ({days} days)?", abort=True)

    async def body(lg: ConsentLog) -> PurgeResult:
        return await lg.purge(timedelta(days=days))

    result = await _with_log(config_path, body, write=True)
    if result.removed and result.checkpoint is not None:  # a purge that removed records has its anchor
        click.echo(
            f"removed {result.removed} records (up to record {result.through_seq}, older than "
            f"{result.cutoff}); signed checkpoint at record {result.through_seq}: {result.checkpoint.hash}"
        )
    else:
        click.echo(f"nothing older than {result.cutoff}")
    click.echo(f"purge logged as record {result.record.seq}")


def _period_source(older_than: str | None) -> str:
    return "--older-than" if older_than else "retention (consent.toml)"


@log.command()
@config_option
@_run
async def migrate(config_path: Path) -> None:
    """Create the log's schema, or bring it to this version's (the only command that changes a schema;
    run it with credentials that may change tables, once, after an upgrade of consent-banner)."""
    config = ConsentConfig.from_toml(config_path)
    key, old = _keys(False)
    lg = await open_log(
        config.log,
        hmac_key=key,
        previous_hmac_keys=old,
        create=True,
        migrate=True,
        log_keys=LogKeys.from_env(),
    )
    try:
        before, after = lg.migrated_from, await lg.schema_version()
    finally:
        await lg.close()
    click.echo(
        f"schema version {after}"
        + (" (up to date)" if before == after else " (created)" if before == 0 else f" (was {before})")
    )


@log.command()
@config_option
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 100_000), help="Rows to show.")
@click.option(
    "--suggest",
    is_flag=True,
    help="Print TOML to paste into consent.toml for the reported origins: the service that declares "
    'each already, or a new [[services]] block (category "TODO" where a person must decide).',
)
@click.option(
    "--min-clients",
    default=3,
    show_default=True,
    type=click.IntRange(0, 1_000_000),
    help="With --suggest: leave out origins reported from fewer distinct client networks (/24, /48); "
    "reports are unauthenticated, and rows from before schema 3 have no client.",
)
@_run
async def blocked(config_path: Path, limit: int, suggest: bool, min_clients: int) -> None:
    """Blocked attempts from CSP reports: page, blocked origin, directive, how often, from how many
    client networks; with --suggest, the consent.toml declarations they call for."""
    if suggest:
        from ..scan.blocked import suggest_blocked

        config = ConsentConfig.from_toml(config_path)
        origins = await _with_log(config_path, lambda lg: lg.blocked_origins())
        click.echo(suggest_blocked(config, origins, min_clients), nl=False)
        return
    rows = await _with_log(config_path, lambda lg: lg.blocked(limit=limit))
    if not rows:
        click.echo("no blocked attempts reported")
        return
    click.echo(
        f"{'count':>7} {'clients':>7}  {'last seen':<20} {'directive':<18} {'blocked origin':<40} page"
    )
    for r in rows:
        # Every column but the counts is what a visitor posted: shown with its controls escaped.
        when, directive, origin, page = map(escape_controls, (r.last_at[:19], r.directive, r.origin, r.page))
        click.echo(f"{r.count:>7} {r.clients:>7}  {when:<20} {directive:<18} {origin:<40} {page}")


@log.command()
@config_option
@click.option("--new", "make_new", is_flag=True, help="Sign the current head first.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, allow_dash=True), default="-")
@_run
async def checkpoints(config_path: Path, make_new: bool, output: str) -> None:
    """Signed checkpoints as NDJSON, to keep outside the server (pin them; `verify --checkpoints`)."""

    async def body(lg: ConsentLog) -> list[Checkpoint]:
        if make_new:
            await lg.checkpoint("manual")
        return list(await lg.checkpoints())

    cps = await _with_log(config_path, body, write=make_new)
    text = "".join(json.dumps(cp.to_json()) + "\n" for cp in cps)
    if output == "-":
        click.echo(text, nl=False)
    else:
        Path(output).write_text(text, encoding="utf-8")


@log.command()
@click.option(
    "--line", "as_line", is_flag=True, help="The one-line form CONSENT_LOG_PUBLIC_KEYS lists, not PEM."
)
@click.option("--all", "all_keys", is_flag=True, help="Every key, the retired ones too, each after its id.")
@_run
async def pubkey(as_line: bool, all_keys: bool) -> None:
    """The log's public key (of CONSENT_LOG_SIGNING_KEY) as PEM: what an auditor passes to
    `log verify --public-key`, and what `{prefix}/log-key` serves."""
    keys = LogKeys.from_env()
    signer = keys.signer
    if signer is None:
        raise click.ClickException(
            "CONSENT_LOG_SIGNING_KEY is not set: make a log signing key with `consent-banner keygen --log`"
        )
    chosen = sorted(keys.public.values(), key=lambda k: k.kid != signer.kid) if all_keys else [signer.public]
    if as_line:
        click.echo("".join(k.line() + "\n" for k in chosen), nl=False)
    else:
        click.echo(keys.pem() if all_keys else signer.public.pem(), nl=False)
