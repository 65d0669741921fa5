"""Where a request stands under the ASGI `root_path`: its path inside the app, and as the browser has it.

An app served under a sub-path (Starlette's `Mount("/shop", ...)`, uvicorn's `--root-path /shop`)
gets the mount point in `scope["root_path"]`. Whether `scope["path"]` holds it too depends on who
made the scope: the ASGI spec (and Starlette's `Mount` since 0.33, uvicorn since 0.26) put it in,
older versions and a proxy that strips the prefix before a server that only sets `root_path` leave it
out. Both are read here as Starlette's own router reads them: a path that starts with the root path
at a segment boundary holds it. Every URL the middleware writes into a page or a redirect is the
root path followed by a path inside the app.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

# A root path as it may be written in front of our URLs as it is: "/" then path characters, none of
# them a second "/" or a "\\" right after the first (browsers read "//host" and "/\\host" as another host),
# nor ";" or "," (they would end the report-uri directive, or the policy, in Content-Security-Policy).
_PLAIN = re.compile(r"(?:/[A-Za-z0-9\-._~!$&'()*+=:@%][A-Za-z0-9\-._~!$&'()*+=:@%/]*)?")
_PATH_SAFE = "/-._~!$&'()*+=:@%"


def root_path(scope: Mapping[str, Any]) -> str:
    """The mount point, without a trailing "/" (a root path of "/" is none: "//x" would be another host),
    as a path of this origin whatever the server or a proxy put there: one leading "/", and what a path
    may not hold (CR, LF, quotes, spaces, "\\") percent-encoded, so that no URL we write leaves the site."""
    root = _raw_root(scope)
    if not root or _PLAIN.fullmatch(root):
        return root
    safe = quote(root.replace("\\", "/"), safe=_PATH_SAFE).lstrip("/")
    return "/" + safe if safe else ""


def _raw_root(scope: Mapping[str, Any]) -> str:
    root: str = scope.get("root_path") or ""
    return root.rstrip("/")


def route_path(scope: Mapping[str, Any]) -> str:
    """The request's path inside the app: `scope["path"]` without the root path where it holds it."""
    path: str = scope["path"]
    root = _raw_root(scope)
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        return path[len(root) :] or "/"
    return path


def public_path(scope: Mapping[str, Any]) -> str:
    """The request's path as the browser addressed it: the root path (as `root_path` writes it), then
    the path inside the app."""
    return root_path(scope) + route_path(scope)
