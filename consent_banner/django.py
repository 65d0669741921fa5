"""Django's side of the consent: the template context processor that gives every template the
response's CSP nonce, as ``{{ csp_nonce }}``.

Add ``"consent_banner.django.context_processor"`` to ``TEMPLATES[...]["OPTIONS"]["context_processors"]``
(in place of Django's own ``csp`` processor: the nonce a page needs is the one in the gate's policy).
The nonce is drawn only when a template uses it, as Django's own is. Django is not imported here: the
request is read like any other (`access.py`).
"""

from __future__ import annotations

from .access import AnyRequest, csp_nonce


class LazyNonce:
    """The request's CSP nonce, drawn when first rendered (``str()``, or ``__html__`` in Django's
    and Jinja2's autoescaping: the nonce is URL-safe base64, nothing in it needs escaping)."""

    __slots__ = ("_request", "_value")

    def __init__(self, request: AnyRequest) -> None:
        self._request = request
        self._value: str | None = None

    def __str__(self) -> str:
        if self._value is None:
            self._value = csp_nonce(self._request)
        return self._value

    __html__ = __str__

    def __repr__(self) -> str:
        return f"<LazyNonce {'drawn' if self._value is not None else 'not drawn'}>"


def context_processor(request: AnyRequest) -> dict[str, LazyNonce]:
    """``{{ csp_nonce }}`` in every template rendered with a request (`render(request, ...)`)."""
    return {"csp_nonce": LazyNonce(request)}
