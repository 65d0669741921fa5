"""Parsing what the browser reports (consent_banner/scan/model.py): Set-Cookie headers, origins."""

from __future__ import annotations

import pytest

from consent_banner.scan.model import default_path, origin_of, parse_set_cookie

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://example.com/a?b#c", "https://example.com"),
        ("https://example.com:443/", "https://example.com"),
        ("http://127.0.0.1:8000/x", "http://127.0.0.1:8000"),
        ("http://[::1]:8000/", "http://[::1]:8000"),
        ("data:image/gif;base64,R0lG", None),
        ("about:blank", None),
        ("blob:https://example.com/1234", None),
    ],
)
def test_origin_of(url: str, origin: str | None) -> None:
    """Requests are grouped by origin; URLs that reach no host are not requests to a host."""
    assert origin_of(url) == origin


def test_default_path_is_the_directory_of_the_request() -> None:
    """A cookie set without Path lives on the request's directory (RFC 6265 5.1.4)."""
    assert default_path("https://e.com/") == "/"
    assert default_path("https://e.com/page") == "/"
    assert default_path("https://e.com/shop/cart") == "/shop"
    assert default_path("https://e.com/shop/cart/") == "/shop/cart"


def test_set_cookie_attributes_and_expiries() -> None:
    """The scanner tells a cookie being stored from an expiry, with the path and domain it
    applies to, so an expiry that misses the cookie can be shown as evidence."""
    url = "https://shop.example.com/deals/today"
    stored = parse_set_cookie("_ads=1; Max-Age=7776000; Domain=.Example.com; Secure", url, now=NOW)
    assert stored is not None
    assert (stored.name, stored.path, stored.domain, stored.deletes) == (
        "_ads",
        "/deals",
        "example.com",
        False,
    )
    assert stored.response == "GET " + url
    assert stored.may_have_set("_ads", ".example.com", "/deals")
    assert not stored.may_have_set("_ads", ".example.com", "/")

    expiry = parse_set_cookie(
        '_ads=""; expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; Path=/', url, now=NOW
    )
    assert expiry is not None and expiry.deletes and expiry.path == "/"
    old = parse_set_cookie("_ads=; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Path=/", url, now=NOW)
    assert old is not None and old.deletes
    later = parse_set_cookie("_ads=x; Expires=Wed, 01 Jan 2042 00:00:00 GMT", url, now=NOW)
    assert later is not None and not later.deletes
    host_only = parse_set_cookie("sid=abc; HttpOnly", url, "POST", now=NOW)
    assert host_only is not None and host_only.domain is None and host_only.response.startswith("POST ")
    assert host_only.may_have_set("sid", "shop.example.com", "/deals")
    assert not host_only.may_have_set("sid", "other.example.com", "/deals")
    assert parse_set_cookie("garbage", url) is None
    assert parse_set_cookie("=value", url) is None
