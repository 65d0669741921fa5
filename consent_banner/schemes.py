"""The URL schemes that reach a host over the network, each with the port it means when none is written.

One table for the two places that compare origins: the gate's CSP source matching (`gate/csp.py`)
and the scanner's origin of a URL it saw (`scan/model.py`).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

DEFAULT_PORTS: Mapping[str, int] = MappingProxyType({"http": 80, "https": 443, "ws": 80, "wss": 443})
