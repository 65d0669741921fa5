"""The proxy's upstream connections: several small httpcore pools behind one httpx transport."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

POOL_SIZE = 8  # connections per httpcore pool (see _pools)


@functools.cache
def pools() -> Callable[[int, int], httpx.AsyncBaseTransport]:
    """A transport over several small httpcore pools, each request to the least busy one.

    httpcore's pool does work in proportion to its connections on every request (each connection
    is asked whether it is idle, and each idle one's socket is polled to see if it expired): with 32
    requests in flight to one pool of 32, two thirds of the proxy's CPU went there (py-spy, bench
    `bench_proxy.py`), and in pools of 8 a request costs a third as much. Made on first use: httpx is
    imported only then.
    """
    import httpx

    class Pools(httpx.AsyncBaseTransport):
        def __init__(self, connections: int, keepalive: int) -> None:
            n = max(1, -(-connections // POOL_SIZE))
            self._pools = [
                httpx.AsyncHTTPTransport(
                    limits=httpx.Limits(
                        max_connections=-(-connections // n), max_keepalive_connections=-(-keepalive // n)
                    )
                )
                for _ in range(n)
            ]
            self._busy = [0] * n  # requests in flight per pool, until their response is closed

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            i = min(range(len(self._pools)), key=self._busy.__getitem__)
            self._busy[i] += 1
            try:
                response = await self._pools[i].handle_async_request(request)
            except BaseException:
                self._busy[i] -= 1
                raise
            assert isinstance(response.stream, httpx.AsyncByteStream)
            return httpx.Response(
                response.status_code,
                headers=response.headers,
                stream=_Counted(response.stream, self._busy, i),
                extensions=response.extensions,
            )

        async def aclose(self) -> None:
            for pool in self._pools:
                await pool.aclose()

    class _Counted(httpx.AsyncByteStream):
        """A response body that gives its pool's place back when it is closed (once)."""

        def __init__(self, stream: httpx.AsyncByteStream, busy: list[int], i: int) -> None:
            self._stream, self._busy, self._i, self._open = stream, busy, i, True

        async def __aiter__(self) -> AsyncIterator[bytes]:
            async for chunk in self._stream:
                yield chunk

        async def aclose(self) -> None:
            if self._open:
                self._open = False
                self._busy[self._i] -= 1
                _no_reuse_after_excess(self._stream)
            await self._stream.aclose()

    return Pools


def _no_reuse_after_excess(stream: Any) -> None:
    """A connection whose response was followed by more bytes (a Content-Length shorter than the body,
    a response split by the upstream) is not used again: httpcore would keep it, and h11 would read
    those bytes as the answer to the next request, another visitor's (response smuggling across the
    pool). nginx closes such a connection too. httpcore offers no hook: its objects are reached by
    their attributes, and tests/reliability/test_redteam_issue16.py fails if an upgrade renames them."""
    connection = getattr(
        getattr(getattr(stream, "_httpcore_stream", None), "_stream", None), "_connection", None
    )
    state = getattr(connection, "_h11_state", None)
    if state is not None and state.trailing_data[0]:
        state.send_failed()  # h11's own way to mark it unusable: httpcore then closes it, not pools it
