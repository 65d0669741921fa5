"""`consent-banner proxy`: the whole gate in front of any site, as a streaming reverse proxy.

``ConsentMiddleware(ProxyApp(upstream, site_origins=config.site_origins), config=config)``; what the
proxy does and why is `app.py`'s docstring. httpx and websockets come with the `proxy` extra.
"""

from .app import MISSING_EXTRA, ProxyApp, UpstreamBroken

__all__ = ["MISSING_EXTRA", "ProxyApp", "UpstreamBroken"]
