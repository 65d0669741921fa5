"""The IAB Global Privacy Platform string of an opt-out visitor: the header and the `usnat` section.

What `window.__gpp` (static/src/gpp.js) answers is encoded here, on the server, so the browser
carries no codec: the visitor's state holds the string and its fields already parsed
(`/_consent/state` → `gpp`). The encoding is IAB's (GPP v1.1: the header section 3, version 1,
and `usnat`, section 7, in the version `@iabgpp/cmpapi` writes: 2), checked field by field
against that library's own decoder and byte for byte against its encoder (tests/test_gpp.py).

A string is bit fields, packed most significant bit first, then IAB's "compressed" base64url:
the bits padded with zeros to whole bytes and then to whole 6-bit characters, no `=`. The section
list is a Fibonacci-coded integer range. Segments are joined by `.`, sections by `~`.

Pure functions of three facts: whether the visitor opted out (the do-not-sell choice, or any
`gpc_denies` category not granted), whether the request carried Global Privacy Control, and the
site's MSPA settings (`[geo.gpp]`). Nothing here knows HTTP.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:  # config imports geo, which imports this module's GppSettings
    from .config import ConsentConfig
    from .consent import Consent

OPT_OUT_MODEL = "opt-out"  # geo.OPT_OUT: only its visitors get a GPP string

# GPP section ids and versions (IAB GPP "Section Information"; `HeaderV1`, `UsNat` in @iabgpp/cmpapi).
HEADER_ID = 3
HEADER_VERSION = 1
USNAT_ID = 7
USNAT_VERSION = 2
USNAT = "usnat"
# What ping's supportedAPIs names: "<section id>:<api prefix>".
SUPPORTED_APIS = (f"{USNAT_ID}:{USNAT}",)
GPP_VERSION = "1.1"

# The usnat two-bit values (GPP US National Privacy Technical Specification).
NOT_APPLICABLE = 0
PROVIDED = 1  # a notice: provided; an opt-out: opted out; MSPA: yes
NOT_PROVIDED = 2  # a notice: not provided; an opt-out: did not opt out; MSPA: no
OPTED_OUT = 1
DID_NOT_OPT_OUT = 2
YES = 1
NO = 2

_B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

# usnat v2 core segment, in order: (field name as IAB spells it, width in bits, count).
_CORE = (
    ("Version", 6, 1),
    ("SharingNotice", 2, 1),
    ("SaleOptOutNotice", 2, 1),
    ("SharingOptOutNotice", 2, 1),
    ("TargetedAdvertisingOptOutNotice", 2, 1),
    ("SensitiveDataProcessingOptOutNotice", 2, 1),
    ("SensitiveDataLimitUseNotice", 2, 1),
    ("SaleOptOut", 2, 1),
    ("SharingOptOut", 2, 1),
    ("TargetedAdvertisingOptOut", 2, 1),
    ("SensitiveDataProcessing", 2, 16),
    ("KnownChildSensitiveDataConsents", 2, 3),
    ("PersonalDataConsents", 2, 1),
    ("MspaCoveredTransaction", 2, 1),
    ("MspaOptOutOptionMode", 2, 1),
    ("MspaServiceProviderMode", 2, 1),
)
# The GPC subsection: its segment type (1), then the signal.
GPC_SEGMENT_TYPE = 1

MspaMode = Literal["opt-out", "service-provider"]


class GppSettings(BaseModel):
    """`[geo.gpp]`: what the site's GPP string says beyond the visitor's choices.

    - `mspa_covered_transaction` (default false): whether the site is a signatory of the IAB
      Multi-State Privacy Agreement and the transactions on its pages are covered by it.
    - `mspa_mode` (default none): for a covered transaction, which MSPA mode the site works in,
      "opt-out" (Opt-Out Option Mode) or "service-provider" (Service Provider Mode); required
      then, and refused without a covered transaction (the fields are "not applicable").
    - `cmp_id` (default 0): the CMP id IAB registered for the site's CMP, if any; `ping` says it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    mspa_covered_transaction: bool = False
    mspa_mode: MspaMode | None = None
    cmp_id: int = Field(default=0, ge=0, le=4095)  # 12 bits in TCF; IAB's CMP list ids

    @model_validator(mode="after")
    def _mode_with_coverage(self) -> GppSettings:
        if self.mspa_covered_transaction and self.mspa_mode is None:
            raise ValueError(
                'mspa_covered_transaction = true needs mspa_mode = "opt-out" or "service-provider"'
            )
        if not self.mspa_covered_transaction and self.mspa_mode is not None:
            raise ValueError("mspa_mode applies only with mspa_covered_transaction = true")
        return self


@dataclass(frozen=True, slots=True)
class Gpp:
    """One visitor's GPP answer: the string and its sections' fields, as `__gpp` hands them out."""

    string: str
    usnat: dict[str, Any]

    def state(self, settings: GppSettings, *, shown: bool = False) -> dict[str, Any]:
        """The `gpp` member of `/_consent/state`: what gpp.js needs to answer every command;
        `shown`: the banner (the notice at collection) is on the page."""
        return {
            "gppString": self.string,
            "cmpId": settings.cmp_id,
            "cmpDisplayStatus": "visible" if shown else "hidden",
            "sectionList": [USNAT_ID],
            "applicableSections": [USNAT_ID],
            "supportedAPIs": list(SUPPORTED_APIS),
            # A copy: `for_visitor` answers are shared between visitors.
            "parsedSections": {
                USNAT: {k: list(v) if isinstance(v, list) else v for k, v in self.usnat.items()}
            },
        }


def usnat_fields(*, opted_out: bool, gpc: bool, settings: GppSettings) -> dict[str, Any]:
    """The usnat v2 fields, by IAB's names, for a visitor who opted out (or not) with GPC (or not).

    The same object IAB's `getSection("usnat")` gives for the string (`encode`), so `__gpp` can
    answer `getSection` and `getField` from it without decoding.

    Notices of sale, sharing and targeted advertising are given (the banner and its "Do Not Sell or
    Share" link); the three opt-outs follow the visitor; sensitive data and known-child consents are
    "not applicable" (the banner collects neither); MSPA as configured.
    """
    opt_out = OPTED_OUT if opted_out or gpc else DID_NOT_OPT_OUT
    if not settings.mspa_covered_transaction:
        covered, opt_out_mode, provider_mode = NO, NOT_APPLICABLE, NOT_APPLICABLE
    elif settings.mspa_mode == "opt-out":
        covered, opt_out_mode, provider_mode = YES, YES, NO
    else:
        covered, opt_out_mode, provider_mode = YES, NO, YES
    return {
        "Version": USNAT_VERSION,
        "SharingNotice": PROVIDED,
        "SaleOptOutNotice": PROVIDED,
        "SharingOptOutNotice": PROVIDED,
        "TargetedAdvertisingOptOutNotice": PROVIDED,
        "SensitiveDataProcessingOptOutNotice": NOT_APPLICABLE,
        "SensitiveDataLimitUseNotice": NOT_APPLICABLE,
        "SaleOptOut": opt_out,
        "SharingOptOut": opt_out,
        "TargetedAdvertisingOptOut": opt_out,
        "SensitiveDataProcessing": [NOT_APPLICABLE] * 16,
        "KnownChildSensitiveDataConsents": [NOT_APPLICABLE] * 3,
        "PersonalDataConsents": NOT_APPLICABLE,
        "MspaCoveredTransaction": covered,
        "MspaOptOutOptionMode": opt_out_mode,
        "MspaServiceProviderMode": provider_mode,
        "GpcSegmentType": GPC_SEGMENT_TYPE,
        "Gpc": gpc,
    }


def encode(fields: dict[str, Any]) -> str:
    """The whole GPP string (header, then usnat core and GPC segments) for `usnat_fields`' output."""
    core = "".join(
        _fixed(value, width)
        for name, width, count in _CORE
        for value in (fields[name] if count > 1 else [fields[name]])
    )
    gpc = _fixed(fields["GpcSegmentType"], 2) + ("1" if fields["Gpc"] else "0")
    # The GPC subsection is always present: it is how a reader tells "no GPC" from "not said".
    return f"{header([USNAT_ID])}~{_base64url(core)}.{_base64url(gpc)}"


@lru_cache(maxsize=64)  # two choices, two signals, one settings per configuration
def for_visitor(*, opted_out: bool, gpc: bool, settings: GppSettings) -> Gpp:
    """What `__gpp` answers this visitor: the string and its parsed usnat section (shared: read only)."""
    fields = usnat_fields(opted_out=opted_out, gpc=gpc, settings=settings)
    return Gpp(string=encode(fields), usnat=fields)


def state_for(consent: Consent, config: ConsentConfig) -> dict[str, Any] | None:
    """The `gpp` member of the visitor's state: None unless the visitor is under the opt-out model.

    Opted out of sale, sharing and targeted advertising when any category GPC denies (`gpc_denies`)
    is not allowed now: after "Do Not Sell or Share", a choice that switched it off, or the GPC
    signal itself (which `Consent.allows` applies).
    """
    if consent.model != OPT_OUT_MODEL or config.geo is None:
        return None
    opted_out = consent.opted_out or not all(consent.allows(c) for c in config.gpc_denied)
    settings = config.geo.gpp
    answer = for_visitor(opted_out=opted_out, gpc=consent.gpc, settings=settings)
    return answer.state(settings, shown=not consent.decided and not consent.dismissed)


def header(section_ids: Iterable[int]) -> str:
    """The GPP header section: type 3, version 1, the section ids as a Fibonacci-coded range."""
    bits = _fixed(HEADER_ID, 6) + _fixed(HEADER_VERSION, 6) + _fibonacci_range(sorted(set(section_ids)))
    return _base64url(bits)


def _fixed(value: int, width: int) -> str:
    if not 0 <= value < 1 << width:
        raise ValueError(f"{value} does not fit in {width} bits")
    return format(value, f"0{width}b")


def _fibonacci(value: int) -> str:
    """Fibonacci coding (Zeckendorf, least significant first), ended by the extra 1 of "11"."""
    if value < 1:
        raise ValueError(f"Fibonacci coding needs a positive integer, not {value}")
    fib = [1, 2]
    while fib[-1] + fib[-2] <= value:
        fib.append(fib[-1] + fib[-2])
    bits = []
    for f in reversed(fib):
        if f <= value:
            bits.append("1")
            value -= f
        else:
            bits.append("0")
    code = "".join(reversed(bits)).rstrip("0")
    return code + "1"


def _fibonacci_range(ids: Sequence[int]) -> str:
    """A 12-bit group count, then per group of consecutive ids a flag and offsets from the last id."""
    groups: list[list[int]] = []
    for value in ids:
        if groups and groups[-1][-1] + 1 == value:
            groups[-1].append(value)
        else:
            groups.append([value])
    bits = _fixed(len(groups), 12)
    offset = 0
    for group in groups:
        if len(group) == 1:
            bits += "0" + _fibonacci(group[0] - offset)
        else:
            bits += "1" + _fibonacci(group[0] - offset) + _fibonacci(group[-1] - group[0])
        offset = group[-1]
    return bits


def _base64url(bits: str) -> str:
    """IAB's compressed base64url: zeros to a whole byte, then to a whole character; no padding."""
    bits += "0" * (-len(bits) % 8)
    bits += "0" * (-len(bits) % 6)
    return "".join(_B64URL[int(bits[i : i + 6], 2)] for i in range(0, len(bits), 6))
