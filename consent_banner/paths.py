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

from collections.abc import Mapping
from typing import Any


def root_path(scope: Mapping[str, Any]) -> str:
    """The mount point, without a trailing "/" (a root path of "/" is none: "//x" would be another host)."""
    root: str = scope.get("root_path") or ""
    return root.rstrip("/")


def route_path(scope: Mapping[str, Any]) -> str:
    """The request's path inside the app: `scope["path"]` without the root path where it holds it."""
    path: str = scope["path"]
    root = root_path(scope)
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        return path[len(root) :] or "/"
    return path


def public_path(scope: Mapping[str, Any]) -> str:
    """The request's path as the browser addressed it: the root path, then the path inside the app."""
    return root_path(scope) + route_path(scope)
