"""`consent-banner receipt verify FILE [--public-key KEY]...`: check a visitor's signed receipt.

Anyone can run it: the visitor, a regulator, the site's auditor. The key comes from `--public-key`
PEM files (the site's `{prefix}/log-key`, `log pubkey`; repeat for a retired key), or, without one,
from the issuer's published JWK Set, fetched from the receipt's `log_key` URL on its `iss` origin,
and the command says where it got it: a key fetched from the address the token names proves only
that whoever holds that address signed it. A key inside the token is never used (`signed_receipt.py`).

Exit status: 0 valid; 1 invalid (the reason named: malformed, alg none or not EdDSA, a key in the
header, unknown kid, bad signature, a record whose hash does not match); 2 usage (no such file, an
unreadable key); 3 nothing could be checked (the published key could not be fetched).
"""

from __future__ import annotations

import http.client
import json
import sys
import threading
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

import click

from ..display import escape_controls, shown
from ..errors import LogKeyError
from ..log.keys import PublicKey, from_b64url, read_public_key_files
from .signed_receipt import (
    MAX_TOKEN_BYTES,
    ReceiptInvalid,
    VerifiedReceipt,
    check_header,
    unverified_parts,
    verify_receipt,
)

MAX_KEYS_BYTES = 1024 * 1024  # a JWK Set larger than this is not a site's handful of keys
JWKS_ACCEPT = "application/jwk-set+json, application/jwk+json"
EXIT_INVALID = 1
EXIT_UNCHECKED = 3


class KeyUnavailable(click.ClickException):
    """The issuer's published key could not be fetched: nothing was verified (exit 3)."""

    exit_code = EXIT_UNCHECKED


@click.group()
def receipt() -> None:
    """A visitor's signed consent receipt ({prefix}/receipt?format=jws)."""


@receipt.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, allow_dash=True, path_type=Path))
@click.option(
    "--public-key",
    "public_key_files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A PEM file of the site's public key ({prefix}/log-key, `log pubkey`); repeat for a retired "
    "one. Without it the key is fetched from the address the receipt names, and that is said.",
)
@click.option(
    "--timeout",
    default=10.0,
    show_default=True,
    type=click.FloatRange(0.1, 120),
    help="Seconds to wait for the published key, without --public-key.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the verified payload as JSON.")
def verify(file: Path, public_key_files: tuple[Path, ...], timeout: float, as_json: bool) -> None:
    """Verify a signed receipt and print what it says. Exit 0 valid, 1 invalid, 2 usage, 3 no key."""
    token = _read_token(file)
    if public_key_files:
        try:
            keys = {k.kid: k for k in read_public_key_files(public_key_files)}
        except LogKeyError as e:
            raise click.BadParameter(shown(e), param_hint=["--public-key"]) from None
        source = "given with --public-key"
    else:
        keys, source = _fetched_keys(token, timeout)
    try:
        verified = verify_receipt(token, keys)
    except ReceiptInvalid as e:
        _invalid(e.reason)
    if as_json:
        click.echo(escape_controls(json.dumps(verified.claims, indent=2, ensure_ascii=False), newlines=True))
    else:
        _print(verified, source)


def _read_token(file: Path) -> str:
    try:
        if str(file) == "-":
            data = sys.stdin.buffer.read(MAX_TOKEN_BYTES + 1)
        else:
            with file.open("rb") as f:
                data = f.read(MAX_TOKEN_BYTES + 1)
    except OSError as e:
        raise click.BadParameter(shown(f"cannot read it: {e}"), param_hint=["FILE"]) from None
    if len(data) > MAX_TOKEN_BYTES:
        _invalid(f"malformed token: larger than {MAX_TOKEN_BYTES} bytes")
    if not data.isascii():
        _invalid("malformed token: a compact JWS is ASCII (base64url and dots)")
    return data.decode("ascii").strip()


def _invalid(reason: str) -> NoReturn:
    click.echo(f"receipt INVALID: {shown(reason)}", err=True)
    sys.exit(EXIT_INVALID)


def _fetched_keys(token: str, timeout: float) -> tuple[dict[str, PublicKey], str]:
    """The issuer's published keys by id, from the receipt's `log_key` URL on its `iss` origin; and
    a sentence saying where they came from (also written to stderr at once)."""
    try:
        header, claims = unverified_parts(token)
        check_header(header)  # a token refused anyway (alg none, a key inside) sends no request
        url = key_url(claims)
    except ReceiptInvalid as e:
        _invalid(e.reason)
    plain = urlsplit(url).scheme == "http"
    click.echo(
        shown(
            f"key fetched from {url}: trust it only if that is the site's address"
            + (" (plain HTTP: anyone on the way could have swapped it)" if plain else "")
        ),
        err=True,
    )
    return _jwks(_fetch(url, timeout), url), f"fetched from {url}"


def key_url(claims: dict[str, Any]) -> str:
    """Where the receipt's issuer publishes its keys: its `log_key`, on the origin of its `iss` (a
    token naming a key elsewhere is refused: our receipts never do)."""
    iss, url = claims.get("iss"), claims.get("log_key")
    if not isinstance(iss, str) or not isinstance(url, str):
        raise ReceiptInvalid("malformed payload: it names no issuer (iss) or key address (log_key)")
    where, whose = urlsplit(url), urlsplit(iss)
    if where.scheme not in ("http", "https") or not where.netloc:
        raise ReceiptInvalid(f"the key address {url!r} is not an http(s) URL")
    if (where.scheme, where.netloc.lower()) != (whose.scheme, whose.netloc.lower()) or where.username:
        raise ReceiptInvalid(f"the key address {url!r} is not on the issuer's origin {iss!r}")
    if not where.path.endswith("/log-key") or where.query or where.fragment:
        raise ReceiptInvalid(f"the key address {url!r} is not a consent-banner {{prefix}}/log-key")
    return url


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect would fetch the key from somewhere the message did not name: refused instead."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirects)


def _fetch(url: str, timeout: float) -> bytes:
    """The body at `url`, at most MAX_KEYS_BYTES, within `timeout` seconds in all.

    urllib's timeout bounds each read of the socket, not the whole: a server dripping a byte a second
    would hold us for as long as it liked. So the request runs in a thread of its own that we stop
    waiting for at the deadline (daemon: the command ends without it; its socket timeout ends it)."""
    outcome: list[bytes | BaseException] = []

    def fetch() -> None:
        try:
            outcome.append(_get(url, timeout))
        except BaseException as e:  # handed to the caller, who names it
            outcome.append(e)

    worker = threading.Thread(target=fetch, name="receipt-key-fetch", daemon=True)
    worker.start()
    worker.join(timeout)
    if not outcome:
        raise KeyUnavailable(
            f"cannot fetch the site's key from {url}: no answer within {timeout:g} s; nothing was "
            "verified (give the key with --public-key)"
        )
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


def _get(url: str, timeout: float) -> bytes:
    request = urllib.request.Request(url, headers={"accept": JWKS_ACCEPT, "user-agent": "consent-banner"})
    try:
        with _opener.open(request, timeout=timeout) as response:
            body: bytes = response.read(MAX_KEYS_BYTES + 1)
    except urllib.error.HTTPError as e:
        e.close()  # it holds the answer's socket open
        raise KeyUnavailable(
            f"cannot fetch the site's key from {url}: HTTP {e.code}; nothing was verified "
            "(give the key with --public-key)"
        ) from None
    # http.client's own errors (a status line that is not HTTP, a header line over 64 KB, over 100
    # headers, a bad chunk) are neither OSError nor URLError: a hostile server must not make a traceback.
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or f"{type(e).__name__}: {e}"
        raise KeyUnavailable(
            f"cannot fetch the site's key from {url}: {reason}; nothing was verified "
            "(give the key with --public-key)"
        ) from None
    if len(body) > MAX_KEYS_BYTES:
        raise KeyUnavailable(f"{url} answered more than {MAX_KEYS_BYTES} bytes: not a JWK Set")
    return body


def _jwks(body: bytes, url: str) -> dict[str, PublicKey]:
    """The Ed25519 keys of a JWK Set by their RFC 7638 id (computed here: a `kid` the set states for
    another key is not believed)."""
    try:
        listed = json.loads(body)["keys"]
        if not isinstance(listed, list):
            raise TypeError
    except (ValueError, KeyError, TypeError, RecursionError):  # RecursionError: [[[[... a million deep
        raise KeyUnavailable(f"{url} did not answer a JWK Set; nothing was verified") from None
    keys: dict[str, PublicKey] = {}
    for jwk in listed:
        if not isinstance(jwk, dict) or jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
            continue
        try:
            key = PublicKey(from_b64url(str(jwk.get("x", ""))))
        except ValueError:
            continue
        if jwk.get("kid", key.kid) == key.kid:
            keys[key.kid] = key
    return keys


def _print(verified: VerifiedReceipt, source: str) -> None:
    c = verified.claims
    issued = datetime.fromtimestamp(c["iat"], UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    lines = [
        f"receipt valid: signed by key {verified.key.kid} ({source})",
        f"issuer      {c['iss']}",
        f"consent id  {c['sub']}",
        f"log         {c['log_id']}",
        f"issued at   {issued}",
        f"records     {len(c['records'])}",
    ]
    for r in c["records"]:
        services = ", ".join(f"{k}: {'on' if v else 'off'}" for k, v in sorted(r["services"].items()))
        lines.append(
            f"  #{r['seq']}  {r['at']}  {r['action']}  allowed: {', '.join(r['granted']) or '-'}  "
            f"refused: {', '.join(r['denied']) or '-'}"
        )
        lines.append(
            f"      services: {services or '-'}  policy revision {r['revision']}  "
            f"banner version {r['version_id'] or '-'}"
        )
        lines.append(f"      record hash {r['hash']}")
    for line in lines:
        click.echo(shown(line))
