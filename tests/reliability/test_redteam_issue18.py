"""Red team, issue 18: the evidence features (signed receipts, offline verification of exports,
read-only opens) attacked by whoever is not meant to win.

A hostile `{prefix}/log-key` answering `consent-banner receipt verify`'s fetch (a redirect, an endless
body, a slow drip, an answer that is not HTTP, a key set nested a million deep, thousands of keys, a
`kid` stated for another key); a hostile token; a hostile export handed to `log verify --export`
(nested a million deep, a 2 GB line, a byte that is not UTF-8, a leading space to reach a laxer
reader); a log reached through a symlink. Each either fails cleanly, naming what is wrong, within
bounded time and memory, or is refused: never a traceback, never a stale state reported as intact.
"""

from __future__ import annotations

import gc
import json
import os
import secrets
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from starlette.applications import Starlette

from consent_banner.audit.signed_receipt import TYP, receipt_claims, sign_receipt
from consent_banner.cli import cli
from consent_banner.log import Decision, open_log
from consent_banner.log.canonical import ROW_COLUMNS
from consent_banner.log.export import csv_header, csv_lines
from consent_banner.log.keys import LogKeys, SigningKey, b64url
from consent_banner.log.offline import record_row, verify_export
from tests.log.conftest import KEY, PG_DSN, VERSION_EN, needs_postgres, pg_schema_url
from tests.log.test_offline_verify import LOG_KEY, export_to, signed_log
from tests.log.test_read_only import _WRITER as READ_ONLY_WRITER
from tests.log.test_read_only import SECRET as READ_ONLY_SECRET

SITE_KEY = SigningKey(bytes(range(7, 39)))  # the site's log key (fixed: failures name the same ids)
ATTACKER = SigningKey(bytes(range(9, 41)))

# --- receipt verify against a hostile key endpoint ------------------------------------------------

Behaviour = Callable[[socket.socket], None]
STOPPING = threading.Event()  # set when a test's servers stop: a drip still running ends


class Hostile:
    """A TCP server on 127.0.0.1 whose every connection is handed, after its request head was read,
    to `behaviour`; `requests` counts the requests it got."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.requests = 0
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                sock: socket.socket = self.request
                head = b""
                while b"\r\n\r\n" not in head and len(head) < 65536:
                    chunk = sock.recv(4096)
                    if not chunk:
                        return
                    head += chunk
                outer.requests += 1
                try:
                    behaviour(sock)
                except OSError:
                    pass  # the client hung up: what a bounded client does

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def hostile() -> Iterator[Callable[[Behaviour], Hostile]]:
    started: list[Hostile] = []
    STOPPING.clear()

    def start(behaviour: Behaviour) -> Hostile:
        started.append(Hostile(behaviour))
        return started[-1]

    yield start
    STOPPING.set()
    for server in started:
        server.stop()


def receipt(issuer: str, key: SigningKey = SITE_KEY, kid: str | None = None) -> str:
    """A receipt naming `issuer` and its `{issuer}/_consent/log-key`, signed by `key` (under `kid`)."""
    claims = receipt_claims(
        issuer=issuer,
        consent_id="AZXa1b2c3d4e5f6g7h8i9j0k1l2m3n",
        log_id="2890cc72eea7c9644e5470a69e4a7410",
        log_key_url=f"{issuer}/_consent/log-key",
        records=[],
        issued_at=1_780_000_000,
    )
    if kid is None:
        return sign_receipt(claims, key)
    header = b64url(json.dumps({"alg": "EdDSA", "kid": kid, "typ": TYP}).encode())
    payload = b64url(json.dumps(claims, separators=(",", ":")).encode())
    return f"{header}.{payload}.{key.sign(f'{header}.{payload}'.encode())}"


def verify_receipt_file(tmp_path: Path, token: str, *args: str) -> Any:
    path = tmp_path / "receipt.jws"
    path.write_text(token)
    return CliRunner().invoke(cli, ["receipt", "verify", str(path), *args], catch_exceptions=False)


def answer(body: bytes, *, status: str = "200 OK", headers: str = "") -> Behaviour:
    def send(sock: socket.socket) -> None:
        sock.sendall(
            f"HTTP/1.1 {status}\r\ncontent-type: application/jwk-set+json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n{headers}\r\n".encode()
            + body
        )

    return send


def jwks(*jwk: dict[str, str]) -> bytes:
    return json.dumps({"keys": list(jwk)}, separators=(",", ":")).encode()


def test_the_genuine_key_set_verifies_over_the_test_server(
    hostile: Callable[[Behaviour], Hostile], tmp_path: Path
) -> None:
    """The control: the same server answering the site's JWK Set, the receipt is valid (exit 0)."""
    site = hostile(answer(jwks(SITE_KEY.public.jwk())))
    result = verify_receipt_file(tmp_path, receipt(site.url))
    assert result.exit_code == 0, result.output
    assert f"signed by key {SITE_KEY.kid} (fetched from {site.url}/_consent/log-key)" in result.stdout


def test_a_redirect_to_another_host_is_never_followed(
    hostile: Callable[[Behaviour], Hostile], tmp_path: Path
) -> None:
    """R24: the receipt's key address answers 302 to a server holding the attacker's key, under
    which the attacker signed the receipt: the redirect is not followed (exit 3, nothing verified)."""
    elsewhere = hostile(answer(jwks(ATTACKER.public.jwk())))
    site = hostile(answer(b"", status="302 Found", headers=f"location: {elsewhere.url}/_consent/log-key\r\n"))
    result = verify_receipt_file(tmp_path, receipt(site.url, ATTACKER))
    assert result.exit_code == 3, result.output
    assert "HTTP 302" in result.stderr and "nothing was verified" in result.stderr
    assert elsewhere.requests == 0 and "receipt valid" not in result.output


def test_an_endless_body_is_cut_at_a_megabyte(
    hostile: Callable[[Behaviour], Hostile], tmp_path: Path
) -> None:
    """R24: A key endpoint streaming without end (a 10 GB answer): read no further than 1 MB, then refused."""

    def endless(sock: socket.socket) -> None:
        sock.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/jwk-set+json\r\n\r\n")
        block = b" " * 65536
        for _ in range(160_000):  # 10 GB, unless the client hangs up first
            if STOPPING.is_set():
                return
            sock.sendall(block)

    site = hostile(endless)
    started = time.monotonic()
    result = verify_receipt_file(tmp_path, receipt(site.url))
    assert result.exit_code == 3, result.output
    assert "answered more than 1048576 bytes: not a JWK Set" in result.stderr
    assert time.monotonic() - started < 10


def test_a_slow_drip_is_cut_at_the_timeout(hostile: Callable[[Behaviour], Hostile], tmp_path: Path) -> None:
    """R24: Slow-loris: a byte every 0.2 s never trips a per-read timeout of 1 s, so the fetch waited for
    as long as the server cared to drip (here 30 s, a header line of 64 KB would take 3.6 hours).
    --timeout bounds the whole fetch."""

    def drip(sock: socket.socket) -> None:
        sock.sendall(b"HTTP/1.1 200 OK\r\n")
        for _ in range(150):
            if STOPPING.is_set():
                return
            sock.sendall(b"x")
            time.sleep(0.2)

    site = hostile(drip)
    started = time.monotonic()
    result = verify_receipt_file(tmp_path, receipt(site.url), "--timeout", "1")
    elapsed = time.monotonic() - started
    assert result.exit_code == 3, result.output
    assert "no answer within 1 s" in result.stderr and "nothing was verified" in result.stderr
    assert elapsed < 5, f"the fetch took {elapsed:.1f} s with --timeout 1"


def _header_lines(count: int, size: int) -> Behaviour:
    def send(sock: socket.socket) -> None:
        sock.sendall(
            b"HTTP/1.1 200 OK\r\n" + b"".join(b"x-%d: %s\r\n" % (i, b"a" * size) for i in range(count))
        )
        sock.sendall(b"content-length: 2\r\n\r\n{}")

    return send


def _truncated(sock: socket.socket) -> None:
    sock.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n" + b'{"keys":[' + b" " * 100)


def _bad_chunk(sock: socket.socket) -> None:
    sock.sendall(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + b"f" * 70000 + b"\r\n")


# http.client leaves the socket of a response whose head it refused to the garbage collector (its
# makefile still holds it), which warns; the command exits right after, so nothing lingers.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize(
    "behaviour",
    [
        pytest.param(lambda sock: sock.sendall(b"SSH-2.0-OpenSSH_9.2\r\n\r\n"), id="not-http"),
        pytest.param(_header_lines(120, 10), id="too-many-headers"),
        pytest.param(_header_lines(1, 70_000), id="header-line-too-long"),
        pytest.param(_truncated, id="body-cut-short"),
        pytest.param(_bad_chunk, id="chunk-size-line-too-long"),
    ],
)
def test_an_answer_that_is_not_http_is_named_never_a_traceback(
    hostile: Callable[[Behaviour], Hostile], tmp_path: Path, behaviour: Behaviour
) -> None:
    """R24: http.client raises its own errors (BadStatusLine, LineTooLong, "got more than 100 headers"),
    which are neither OSError nor URLError: each escaped as a traceback. Now exit 3 with the reason,
    as an unreachable key is; a body cut short is no JWK Set."""
    site = hostile(behaviour)
    result = verify_receipt_file(tmp_path, receipt(site.url))
    gc.collect()  # that socket's warning here, not in whichever test the collector next runs in
    assert result.exit_code == 3, result.output
    assert f"{site.url}/_consent/log-key" in result.stderr and "nothing was verified" in result.stderr


def test_a_key_set_nested_a_million_deep_is_refused_not_a_traceback(
    hostile: Callable[[Behaviour], Hostile], tmp_path: Path
) -> None:
    """R24: Within the 1 MB bound, `{"keys":[[[[...` 500,000 deep made json.loads raise RecursionError,
    which escaped as a traceback. Now: not a JWK Set, exit 3."""
    site = hostile(answer(b'{"keys":' + b"[" * 500_000 + b"]" * 500_000 + b"}"))
    result = verify_receipt_file(tmp_path, receipt(site.url))
    assert result.exit_code == 3, result.output
    assert "did not answer a JWK Set; nothing was verified" in result.stderr


def test_thousands_of_keys_cost_a_fraction_of_a_second(
    hostile: Callable[[Behaviour], Hostile], tmp_path: Path
) -> None:
    """R24: As many keys as fit in 1 MB (12,000, the site's last) are each read once; a set of 100,000
    keys (8 MB) is refused by its size. Guard: held before."""
    filler = [
        {k: v for k, v in SigningKey(i.to_bytes(32, "big")).public.jwk().items() if k in ("kty", "crv", "x")}
        for i in range(1, 501)
    ]
    many = [*(filler * 24), SITE_KEY.public.jwk()]
    body = jwks(*many)
    assert len(body) < 1024 * 1024
    site = hostile(answer(body))
    started = time.monotonic()
    result = verify_receipt_file(tmp_path, receipt(site.url))
    assert result.exit_code == 0, result.output
    assert time.monotonic() - started < 5
    huge = hostile(answer(jwks(*(filler * 200), SITE_KEY.public.jwk())))
    result = verify_receipt_file(tmp_path, receipt(huge.url))
    assert result.exit_code == 3 and "answered more than 1048576 bytes" in result.stderr


def test_a_kid_stated_for_another_key_is_not_believed(
    hostile: Callable[[Behaviour], Hostile], tmp_path: Path
) -> None:
    """R24: A kid collision: the endpoint lists the attacker's key under the site's key id (and the site's
    own key as well), and the attacker signed the receipt naming the site's kid. The id is computed
    from each key (RFC 7638), so the stated one names nothing: bad signature, exit 1. Guard: held."""
    colliding = {**ATTACKER.public.jwk(), "kid": SITE_KEY.kid}
    site = hostile(answer(jwks(colliding, SITE_KEY.public.jwk(), colliding)))
    result = verify_receipt_file(tmp_path, receipt(site.url, ATTACKER, kid=SITE_KEY.kid))
    assert result.exit_code == 1, result.output
    assert "bad signature" in result.stderr and "receipt valid" not in result.output
    alone = hostile(answer(jwks(colliding)))
    result = verify_receipt_file(tmp_path, receipt(alone.url, ATTACKER, kid=SITE_KEY.kid))
    assert result.exit_code == 1 and f"unknown kid {SITE_KEY.kid!r}" in result.stderr


@pytest.mark.parametrize("part", ["header", "payload"])
def test_a_token_nested_a_million_deep_is_malformed_not_a_traceback(tmp_path: Path, part: str) -> None:
    """R24: Within the 4 MB bound, a header or payload of `[[[[...` made json.loads raise RecursionError
    before anything was checked: a traceback. Now: malformed, exit 1, and no request sent."""
    deep = b64url(b"[" * 1_000_000 + b"]" * 1_000_000)
    plain = b64url(json.dumps({"alg": "EdDSA", "kid": SITE_KEY.kid, "typ": TYP}).encode())
    token = f"{deep}.{plain}.AAAA" if part == "header" else f"{plain}.{deep}.AAAA"
    result = verify_receipt_file(tmp_path, token)
    assert result.exit_code == 1, result.output
    assert f"malformed token: its {part} is not base64url of JSON" in result.stderr


# --- log verify --export given a hostile file -----------------------------------------------------

PUBLIC_PEM = "log-key.pem"


def _decision(**kw: Any) -> Decision:
    base: dict[str, Any] = dict(
        consent_id="visitor-0000000000000",
        action="accept_all",
        granted=("necessary", "analytics"),
        denied=(),
        services={"plausible": True},
        revision="2026-01",
        language="en",
        source="banner",
        ip="203.0.113.0",
        browser="Firefox",
        version=VERSION_EN,
    )
    return Decision(**{**base, **kw})


@pytest.fixture
async def export(tmp_path: Path) -> tuple[Path, list[str]]:
    """A whole-log NDJSON export of 25 signed records (checkpoints every 10), its public key beside it."""
    lg = await signed_log(f"sqlite:///{tmp_path / 'log.db'}", _decision)
    try:
        path = tmp_path / "log.ndjson"
        lines = await export_to(lg, path)
    finally:
        await lg.close()
    (tmp_path / PUBLIC_PEM).write_text(LOG_KEY.public.pem())
    return path, lines


def verify_export_file(path: Path, *args: str) -> Any:
    """`consent-banner log verify --export PATH --public-key KEY`, tracebacks not caught."""
    key = path.parent / PUBLIC_PEM
    return CliRunner().invoke(
        cli, ["log", "verify", "--export", str(path), "--public-key", str(key), *args], catch_exceptions=False
    )


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(lines), encoding="utf-8")
    return path


DEEP = "[" * 500_000 + "]" * 500_000


def test_the_export_verifies(export: tuple[Path, list[str]]) -> None:
    """The control: the file as exported verifies with the public key alone."""
    result = verify_export_file(export[0])
    assert result.exit_code == 0, result.output
    assert "25 records, chain intact" in result.stdout


@pytest.mark.parametrize("where", ["record", "checkpoint", "pins"])
def test_json_nested_a_million_deep_is_named_by_its_line(
    export: tuple[Path, list[str]], tmp_path: Path, where: str
) -> None:
    """R22: A record's detail, a checkpoint line or a pins line of `[[[[...` 500,000 deep (1 MB) made
    json.loads raise RecursionError, which escaped as a traceback. Now named by its line (exit 2)."""
    path, lines = export
    args: list[str] = []
    if where == "pins":
        pins = write_lines(tmp_path / "pins.ndjson", [lines[-1].replace('"detail":null', f'"detail":{DEEP}')])
        args, option, line = ["--pins", str(pins)], "--pins", 1
    else:
        start = '{"seq":5,' if where == "record" else '{"type":"checkpoint"'
        i = next(n for n, text in enumerate(lines) if text.startswith(start))
        deep = lines[i].replace('"hash":', f'"deep":{DEEP},"hash":', 1)
        write_lines(path, [*lines[:i], deep, *lines[i + 1 :]])
        option, line = "--export", i + 1
    result = verify_export_file(path, *args)
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{option}'" in result.stderr and f"line {line}: " in result.stderr


def test_a_byte_that_is_not_utf8_is_named_at_its_line(export: tuple[Path, list[str]]) -> None:
    """R22: The file was decoded in blocks, so a bad byte was reported at the line last read, not its own
    (here line 16 for a byte on line 20). Now each line is decoded alone: its own number."""
    path, lines = export
    data = "".join(lines).encode()
    at = data.index(b"Firefox", len("".join(lines[:19]).encode()))
    assert data[:at].count(b"\n") == 19  # on line 20
    path.write_bytes(data[:at] + b"\xff" + data[at + 1 :])
    result = verify_export_file(path)
    assert result.exit_code == 2, result.output
    assert "line 20: " in result.stderr and "UTF-8" in result.stderr


def test_a_csv_field_over_the_csv_modules_limit_is_named(tmp_path: Path) -> None:
    """R22: A CSV export's field over 128 KB made the csv module raise csv.Error, which escaped as a
    traceback. Now the record is named (exit 2)."""
    path = tmp_path / "log.csv"
    path.write_text(",".join(ROW_COLUMNS) + "\n1," + "a" * 200_000 + "\n")
    (tmp_path / PUBLIC_PEM).write_text(LOG_KEY.public.pem())
    result = verify_export_file(path)
    assert result.exit_code == 2, result.output
    assert "record 1: not a record of a log export (field larger than field limit" in result.stderr


def test_a_line_of_2_gb_is_refused_in_bounded_memory(export: tuple[Path, list[str]]) -> None:
    """R22: A 2 GB line (a sparse file: its header, then 2 GB of NULs without a newline) was read whole
    into memory: under a 1 GB address-space limit, a MemoryError traceback; on a laptop, gigabytes.
    Now a line is read up to 16 MB and refused by its number there."""
    path, lines = export
    with open(path, "wb") as f:
        f.write(lines[0].encode())
        f.truncate(len(lines[0]) + 2 * 1024**3)
    script = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (1024**3, 1024**3))\n"
        "from consent_banner.cli import cli\n"
        "sys.exit(cli.main(sys.argv[1:], prog_name='consent-banner'))\n"
    )
    key = path.parent / PUBLIC_PEM
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", script, "log", "verify", "--export", str(path), "--public-key", str(key)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "line 2: longer than 16777216 bytes" in done.stderr and "Traceback" not in done.stderr
    assert time.monotonic() - started < 30


def test_a_leading_space_does_not_reach_a_laxer_reader(
    export: tuple[Path, list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """R22: A file opening with a space was taken for CSV by its first character, then read by the CSV
    reader's NDJSON fallback: the whole file held in memory, no line bound, and none of the strict
    reading of the export reader. Records pinned by the auditor's head, one spelled with `action`
    twice (two JSON readers read two decisions), verified. Now it is read as the export it is."""
    monkeypatch.delenv("CONSENT_SECRET_KEYS", raising=False)
    path, lines = export
    pins = write_lines(tmp_path / "pins.ndjson", [lines[-1 - 25]])
    assert pins.read_text().startswith('{"type":"head"')
    records = lines[-25:]
    twice = records[4].replace('"action":', '"action":"accept_all","action":', 1)
    spaced = write_lines(tmp_path / "spaced.ndjson", [" ", *records[:4], twice, *records[5:]])
    plain = write_lines(tmp_path / "records.ndjson", records)
    args = ["log", "verify", "--pins", str(pins), "--export"]
    assert CliRunner().invoke(cli, [*args, str(plain)], catch_exceptions=False).exit_code == 0
    result = CliRunner().invoke(cli, [*args, str(spaced)], catch_exceptions=False)
    assert result.exit_code == 2, result.output
    assert "line 5: " in result.stderr and "the member 'action' appears twice" in result.stderr


# --- read-only opens: a symlinked SQLite file, a PostgreSQL role that can write ---------------------


@pytest.mark.parametrize("link", ["file", "directory"])
async def test_a_log_reached_through_a_symlink_is_read_with_its_live_wal(tmp_path: Path, link: str) -> None:
    """R22: SQLite names the -wal after the file a symlink leads to; a reader that looked for the
    -wal beside the link would find none, open `immutable` and report the main file alone (no
    records at all) as the log. Another process holds 5 committed records only in the WAL: the
    reader, given the link, reads all 5. Guard: held (the reader resolves the path first)."""
    real = tmp_path / "real"
    real.mkdir()
    db = real / "log.db"
    if link == "file":
        given = tmp_path / "link.db"
        given.symlink_to(db)
    else:
        (tmp_path / "linked").symlink_to(real, target_is_directory=True)
        given = tmp_path / "linked" / "log.db"
    writer = subprocess.Popen(
        [sys.executable, "-c", READ_ONLY_WRITER, str(db), READ_ONLY_SECRET],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
        assert (real / "log.db-wal").exists()
        assert Path(f"{given}-wal").exists() == (link == "directory")  # none beside a file's link
        reader = await open_log(f"sqlite:///{given}", hmac_key=None, previous_hmac_keys=[KEY], read_only=True)
        try:
            result = await reader.verify()
            assert result.ok and result.records == 5, result.message
        finally:
            await reader.close()
    finally:
        if writer.stdin is not None:
            writer.stdin.write("\n")
            writer.stdin.close()
        writer.wait(timeout=30)
        if writer.stdout is not None:
            writer.stdout.close()
    assert writer.returncode == 0


@needs_postgres
@pytest.mark.postgres
async def test_an_audit_role_that_can_write_still_reads_read_only_and_the_real_schema(
    tmp_path: Path,
) -> None:
    """R22/R25: the operator's mistake, an audit DSN whose role may write, made worse by whoever
    holds the database: the role's own settings turn read-only transactions off and point its
    search_path at a schema of decoy tables (a forged log that verifies on its own), and the URL
    carries `default_transaction_read_only=off` and `options=-c default_transaction_read_only=off`.
    The reader still reads the log's schema (the decoy's forged record is not seen) and every write
    in its sessions is refused by the server. Guard: held (session settings from the connection)."""
    import asyncpg

    assert PG_DSN is not None
    schema, decoy, role = (f"cbr1_{secrets.token_hex(5)}" for _ in range(3))
    url = pg_schema_url(PG_DSN, schema)
    lg = await signed_log(url, _decision, n=5)
    await lg.close()
    admin = await asyncpg.connect(PG_DSN)
    try:
        await admin.execute(f'CREATE ROLE "{role}" LOGIN')
        await admin.execute(f'GRANT ALL ON SCHEMA "{schema}" TO "{role}"')
        await admin.execute(f'GRANT ALL ON ALL TABLES IN SCHEMA "{schema}" TO "{role}"')
        await admin.execute(f'CREATE SCHEMA "{decoy}"')
        for table in ("records", "head", "checkpoints", "versions", "meta"):
            await admin.execute(f'CREATE TABLE "{decoy}".{table} AS SELECT * FROM "{schema}".{table}')
        await admin.execute(f"UPDATE \"{decoy}\".records SET action = 'accept_all' WHERE seq = 1")
        await admin.execute(f'GRANT ALL ON SCHEMA "{decoy}" TO "{role}"')
        await admin.execute(f'GRANT ALL ON ALL TABLES IN SCHEMA "{decoy}" TO "{role}"')
        await admin.execute(f'ALTER ROLE "{role}" SET default_transaction_read_only = off')
        await admin.execute(f'ALTER ROLE "{role}" SET search_path = "{decoy}"')
        host = PG_DSN.split("://", 1)[1].split("@", 1)[-1]
        hostile = (
            f"postgresql://{role}@{host}" + ("&" if "?" in host else "?") + f"schema={schema}"
            "&default_transaction_read_only=off&options=-c%20default_transaction_read_only%3Doff"
        )
        reader = await open_log(hostile, hmac_key=None, previous_hmac_keys=[KEY], read_only=True)
        try:
            result = await reader.verify()
            assert result.ok and result.records == 5, result.message
            first = await reader.records_for("visitor-00000000000000")
            assert [r.action for r in first] == ["reject_all"]  # the log's, not the decoy's accept_all
            async with reader._pool.acquire() as conn:  # the reader's own session
                assert await conn.fetchval("SHOW default_transaction_read_only") == "on"
                with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
                    await conn.execute("DELETE FROM records")
        finally:
            await reader.close()
    finally:
        await admin.execute(f'DROP SCHEMA IF EXISTS "{decoy}" CASCADE')
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.execute(f'DROP OWNED BY "{role}"')
        await admin.execute(f'DROP ROLE "{role}"')
        await admin.close()


# --- an operator's honest mistakes with the keys ------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "refusal"),
    [
        pytest.param(
            SITE_KEY.public.line(),
            "key #2 is the log's public key (ed25519-pub:...), which {prefix}/log-key publishes",
            id="the-published-public-key",
        ),
        pytest.param(
            SITE_KEY.line(),
            "key #2 is a log signing key (ed25519:...): it belongs in CONSENT_LOG_SIGNING_KEY",
            id="the-log-signing-key",
        ),
    ],
)
def test_a_log_key_pasted_into_consent_secret_keys_is_refused(
    config: Any, monkeypatch: pytest.MonkeyPatch, line: str, refusal: str
) -> None:
    """CONSENT_SECRET_KEYS and CONSENT_LOG_PUBLIC_KEYS are both comma-separated lists of keys, and
    README's rotation says to put `ed25519-pub:...` (`log pubkey --line`) in one of them. Put in the
    other, the published public key (55 characters, past the 32-character rule) became the secret that
    signs every consent cookie and the log's HMACs: anyone reading {prefix}/log-key could forge a
    cookie. The signing key put there gave one secret two jobs. Both are refused at start, naming
    the variable and never echoing the key."""
    from consent_banner import ConsentMiddleware
    from consent_banner.errors import MissingSecretKey

    monkeypatch.setenv("CONSENT_SECRET_KEYS", f"{'k' * 40},{line}")
    with pytest.raises(MissingSecretKey) as e:
        ConsentMiddleware(Starlette(), config)
    assert str(e.value).startswith(f"CONSENT_SECRET_KEYS: {refusal}"), str(e.value)
    assert line.split(":", 1)[1] not in str(e.value)
    result = CliRunner().invoke(cli, ["keygen"])  # a command needing no key still runs
    assert result.exit_code == 0


# --- --public-key given a file that is no key ---------------------------------------------------------


def test_a_public_key_file_of_2_gb_is_refused_in_bounded_memory(export: tuple[Path, list[str]]) -> None:
    """R22: The arguments swapped, or a hostile file: `--public-key` read its whole file (2 GB of NULs here,
    sparse) into memory, a MemoryError traceback under a 1 GB address-space limit. A key file is a
    few hundred bytes: read up to 1 MB, then refused naming the option and the file."""
    path, _ = export
    big = path.parent / "big.pem"
    with open(big, "wb") as f:
        f.truncate(2 * 1024**3)
    script = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (1024**3, 1024**3))\n"
        "from consent_banner.cli import cli\n"
        "sys.exit(cli.main(sys.argv[1:], prog_name='consent-banner'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, "log", "verify", "--export", str(path), "--public-key", str(big)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert f"--public-key {big}: larger than 1048576 bytes: not a public key file" in done.stderr


@pytest.mark.parametrize("command", ["log", "receipt"])
def test_a_pem_file_of_unterminated_blocks_is_refused_in_linear_time(
    export: tuple[Path, list[str]], tmp_path: Path, command: str
) -> None:
    """R22: Half a megabyte of `-----BEGIN A-----` and no END: the PEM block pattern (lazy, with a back
    reference) searched to the end of the text from every BEGIN, quadratic: 136 KB took 20 s, this
    file would take minutes. Each block is now found once, and a BEGIN without its END is refused."""
    path, _ = export
    pem = tmp_path / "hostile.pem"
    pem.write_text("-----BEGIN A-----" * 30_000)
    args = (
        ["log", "verify", "--export", str(path)]
        if command == "log"
        else ["receipt", "verify", str(write_lines(tmp_path / "r.jws", [receipt("https://site.example")]))]
    )
    started = time.monotonic()
    result = CliRunner().invoke(cli, [*args, "--public-key", str(pem)], catch_exceptions=False)
    assert time.monotonic() - started < 5
    assert result.exit_code != 0 and "--public-key" in result.output
    assert "a PEM block without its END line" in result.output, result.output


def test_an_export_piped_in_is_verified(export: tuple[Path, list[str]]) -> None:
    """R22: An auditor who trusts nobody verifies what they download as it arrives:
    `curl .../export | consent-banner log verify --export /dev/stdin --public-key key.pem` (or
    `<(curl ...)`). The file was sniffed and then read again from its start, which a pipe cannot do:
    "not seekable". Now the sniffed bytes are read on from the same stream, NDJSON and CSV alike."""
    path, lines = export
    key = path.parent / PUBLIC_PEM
    csv_path = path.parent / "log.csv"
    rows = [record_row(line) for line in lines if line.startswith('{"seq":')]
    csv_path.write_text(csv_header() + csv_lines(rows), encoding="utf-8")
    script = "import sys\nfrom consent_banner.cli import cli\ncli.main(sys.argv[1:])\n"
    expected = "25 records, chain intact"
    for source, args in ((path, ["--public-key", str(key)]), (csv_path, [])):
        done = subprocess.run(
            [sys.executable, "-c", script, "log", "verify", "--export", "/dev/stdin", *args],
            input=source.read_text(),  # through a pipe, as from curl
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "CONSENT_SECRET_KEYS": ""},
        )
        assert done.stdout.startswith(expected), (source.name, done.stdout, done.stderr[-1000:])


async def test_two_servers_listing_the_log_keys_in_opposite_orders_keep_a_verifiable_log(
    tmp_path: Path,
) -> None:
    """R22: rotation done wrong. CONSENT_SECRET_KEYS rolls out to several servers as `<new>,<old>`
    first; done so with CONSENT_LOG_SIGNING_KEY, one server (`<old>,<new>`: the new key signs) and
    another (`<new>,<old>`: the old one signs) share a log. Each write by the other one rotates the
    key back (a checkpoint both keys sign): noisy, but every decision is recorded and the log
    verifies online and offline with both public keys. Guard: held."""
    old, new = SigningKey(bytes(range(32))), SigningKey(bytes(range(1, 33)))
    url = f"sqlite:///{tmp_path / 'log.db'}"
    first = await open_log(url, hmac_key=KEY, log_keys=LogKeys((old,)))
    await first.append(_decision(consent_id="visitor-0"))
    await first.close()
    servers = [
        await open_log(url, hmac_key=KEY, log_keys=LogKeys((old, new))),
        await open_log(url, hmac_key=KEY, log_keys=LogKeys((new, old))),
    ]
    try:
        for i in range(1, 7):
            await servers[i % 2].append(_decision(consent_id=f"visitor-{i}"))
    finally:
        for server in servers:
            await server.close()
    both = LogKeys(retired=(old.public, new.public))
    reader = await open_log(url, hmac_key=None, previous_hmac_keys=[KEY], read_only=True, log_keys=both)
    try:
        online = await reader.verify(require_public=True)
        path = tmp_path / "log.ndjson"
        lines = await export_to(reader, path)
    finally:
        await reader.close()
    assert online.ok and online.records == 7, online.message
    offline = verify_export(path, public_keys=both.public)
    assert offline.ok and offline.message == online.message, offline.message
    reasons = [json.loads(line)["reason"] for line in lines if line.startswith('{"type":"checkpoint"')]
    assert sum(r.startswith("rotation") for r in reasons) >= 6  # back and forth at every write
