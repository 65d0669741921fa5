"""The GPP string (`consent_banner/gpp.py`) proved against IAB's own `@iabgpp/cmpapi` (pinned in e2e/).

Node runs the library once for all cases: it decodes each of our strings (every field of `usnat`
compared) and encodes the same field values itself, which must give our string byte for byte.
"""

from __future__ import annotations

import gzip
import itertools
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from consent_banner import gpp
from consent_banner.banner import static_dir

ROOT = Path(__file__).resolve().parent.parent
E2E = ROOT / "e2e"
CMPAPI = E2E / "node_modules" / "@iabgpp" / "cmpapi"

# Runs in e2e/ so `@iabgpp/cmpapi` resolves from its node_modules. Reads the cases on stdin.
NODE = r"""
import { GppModel } from "@iabgpp/cmpapi";
let input = "";
for await (const chunk of process.stdin) input += chunk;
const { strings, encode, headers } = JSON.parse(input);
const out = { decoded: [], encoded: [], headers: [] };
for (const s of strings) {
  const model = new GppModel(s);
  out.decoded.push({
    sectionIds: model.getSectionIds(),
    header: model.getHeader(),
    usnat: model.getSection("usnat"),
    hasUsnat: model.hasSection("usnat"),
  });
}
for (const fields of encode) {
  const model = new GppModel();
  for (const [name, value] of Object.entries(fields)) model.setFieldValue("usnat", name, value);
  out.encoded.push(model.encode());
}
const NAMES = new Map([[7, "usnat"], [8, "usca"], [9, "usva"], [10, "usco"], [11, "usut"],
                       [12, "usct"], [13, "usfl"], [14, "usmt"]]);
for (const ids of headers) {
  const model = new GppModel();
  for (const id of ids) model.setFieldValue(NAMES.get(id), "MspaCoveredTransaction", 2);
  out.headers.push(model.encode().split("~")[0]);
}
console.log(JSON.stringify(out));
"""

SETTINGS = {
    "not covered": gpp.GppSettings(),
    "opt-out mode": gpp.GppSettings(mspa_covered_transaction=True, mspa_mode="opt-out"),
    "service-provider mode": gpp.GppSettings(mspa_covered_transaction=True, mspa_mode="service-provider"),
}
CASES = [
    (label, opted_out, gpc)
    for label, opted_out, gpc in itertools.product(SETTINGS, (False, True), (False, True))
]
HEADERS = [[7], [7, 8], [7, 9], [8, 10, 11, 12, 14], [7, 8, 9, 10, 11, 12, 13, 14]]


def iab(strings: list[str], encode: list[dict[str, Any]], headers: list[list[int]]) -> dict[str, Any]:
    node = shutil.which("node")
    assert node, "Node.js is needed to run IAB's @iabgpp/cmpapi (Debian: apt-get install nodejs)"
    assert CMPAPI.is_dir(), f"{CMPAPI} is missing: run `npm ci` in e2e/ (./run test does)"
    done = subprocess.run(
        [node, "--input-type=module", "-e", NODE],
        input=json.dumps({"strings": strings, "encode": encode, "headers": headers}),
        cwd=E2E,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@pytest.fixture(scope="module")
def answers() -> dict[str, Any]:
    visitors = [
        gpp.for_visitor(opted_out=opted_out, gpc=gpc, settings=SETTINGS[label])
        for label, opted_out, gpc in CASES
    ]
    # What IAB's encoder is given: the fields it lets a CMP set (Version is the section's own).
    settable = [
        {**{k: v for k, v in visitor.usnat.items() if k != "Version"}, "GpcSegmentIncluded": True}
        for visitor in visitors
    ]
    out = iab([visitor.string for visitor in visitors], settable, HEADERS)
    out["ours"] = visitors
    return out


@pytest.mark.parametrize(
    "index", range(len(CASES)), ids=[f"{c[0]}, opted out {c[1]}, gpc {c[2]}" for c in CASES]
)
def test_iab_decodes_every_usnat_field_of_our_string_as_we_meant_it(
    answers: dict[str, Any], index: int
) -> None:
    """R38: IAB's decoder reads each usnat field of our string as the state says (issue 17)."""
    label, opted_out, gpc = CASES[index]
    ours: gpp.Gpp = answers["ours"][index]
    decoded = answers["decoded"][index]
    assert decoded["sectionIds"] == [gpp.USNAT_ID]
    assert decoded["header"]["SectionIds"] == [gpp.USNAT_ID]
    assert decoded["hasUsnat"] is True
    assert decoded["usnat"] == ours.usnat
    # And what the fields mean, spelled out, so a wrong table in gpp.py cannot agree with itself.
    usnat = decoded["usnat"]
    assert usnat["Version"] == 2
    for notice in (
        "SharingNotice",
        "SaleOptOutNotice",
        "SharingOptOutNotice",
        "TargetedAdvertisingOptOutNotice",
    ):
        assert usnat[notice] == 1, notice
    expected_opt_out = 1 if opted_out or gpc else 2
    for choice in ("SaleOptOut", "SharingOptOut", "TargetedAdvertisingOptOut"):
        assert usnat[choice] == expected_opt_out, choice
    assert usnat["SensitiveDataProcessingOptOutNotice"] == usnat["SensitiveDataLimitUseNotice"] == 0
    assert usnat["SensitiveDataProcessing"] == [0] * 16
    assert usnat["KnownChildSensitiveDataConsents"] == [0] * 3
    assert usnat["PersonalDataConsents"] == 0
    mspa = {
        "not covered": (2, 0, 0),
        "opt-out mode": (1, 1, 2),
        "service-provider mode": (1, 2, 1),
    }[label]
    assert (
        usnat["MspaCoveredTransaction"],
        usnat["MspaOptOutOptionMode"],
        usnat["MspaServiceProviderMode"],
    ) == mspa
    assert usnat["Gpc"] is gpc
    assert ours.string.count(".") == 1  # the GPC subsection is there, whatever the signal


@pytest.mark.parametrize(
    "index", range(len(CASES)), ids=[f"{c[0]}, opted out {c[1]}, gpc {c[2]}" for c in CASES]
)
def test_iab_encodes_the_same_fields_to_our_exact_string(answers: dict[str, Any], index: int) -> None:
    """R38: For the same field values IAB's encoder writes our string byte for byte (issue 17)."""
    assert answers["encoded"][index] == answers["ours"][index].string


def test_the_header_codes_section_ranges_as_iab_does(answers: dict[str, Any]) -> None:
    """The Fibonacci-coded section list: single ids, neighbours and runs, as IAB writes them."""
    assert answers["headers"] == [gpp.header(ids) for ids in HEADERS]


def test_the_state_member_holds_what_every_gpp_command_answers() -> None:
    settings = gpp.GppSettings(cmp_id=300)
    state = gpp.for_visitor(opted_out=True, gpc=False, settings=settings).state(settings)
    assert state["gppString"].startswith("DBABLA~")
    assert state["cmpId"] == 300
    assert state["sectionList"] == state["applicableSections"] == [7]
    assert state["supportedAPIs"] == ["7:usnat"]
    assert state["parsedSections"]["usnat"]["SaleOptOut"] == 1
    json.dumps(state)  # it goes into a JSON answer and a data- attribute as is


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"mspa_covered_transaction": True}, "needs mspa_mode"),
        ({"mspa_mode": "opt-out"}, "only with mspa_covered_transaction"),
        ({"mspa_covered_transaction": True, "mspa_mode": "both"}, "mspa_mode"),
        ({"cmp_id": -1}, "cmp_id"),
        ({"cmp_id": 5000}, "cmp_id"),
        ({"msp_mode": "opt-out"}, "msp_mode"),
    ],
)
def test_mspa_settings_that_contradict_themselves_are_refused_naming_the_key(
    keys: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        gpp.GppSettings(**keys)


GPP_BUDGET = 2 * 1024  # bytes: static/js/gpp.js as shipped, gzipped as served


def test_the_gpp_script_fits_its_own_budget(record_property: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """Budget: window.__gpp as shipped, at most 2 KB gzipped, apart from the core script's 4 KB (issue 17)."""
    size = len(gzip.compress((static_dir() / "gpp.js").read_bytes(), 9))
    record_property("gzipped_bytes", size)
    with capsys.disabled():
        print(f"\ngpp.js gzipped: {size} bytes (budget {GPP_BUDGET})")
    assert size <= GPP_BUDGET
