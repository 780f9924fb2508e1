"""The Okta and Entra guides say what the server does (issue 14): Group PATCH answers 204, and
both start with preparing a configuration, a data folder and the tokens."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


@pytest.mark.parametrize("guide", ["okta.md", "entra.md"])
def test_the_guide_gives_the_status_group_patch_answers(api, guide):
    group = api.scim("POST", "/Groups", {"displayName": "Staff"}).get_json()
    r = api.scim(
        "PATCH",
        f"/Groups/{group['id']}",
        {"schemas": [PATCH], "Operations": [{"op": "replace", "value": {"displayName": "S"}}]},
    )
    said = re.findall(r"Group PATCH answers (\d{3})", (DOCS / guide).read_text())
    assert said and all(int(code) == r.status_code for code in said), (said, r.status_code)


@pytest.mark.parametrize("guide", ["okta.md", "entra.md"])
def test_the_guide_prepares_config_data_folder_and_tokens_before_step_1(guide):
    text = (DOCS / guide).read_text()
    prep = text.index("seat-agent init")
    assert prep < text.index("## 1.")
    assert "SEAT_AGENT_CONFIG" in text[: text.index("## 1.")]
    assert "db upgrade" in text[: text.index("## 1.")]
