"""docs/status-bus.md: every JSON example in it is a valid status message (or event)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from appliance.status import Event, Phase, decode_status
from appliance.status.schema import WIRE_FIELDS

DOC = Path(__file__).resolve().parents[3] / "docs" / "status-bus.md"


def json_blocks() -> list[str]:
    return re.findall(r"```json\n(.*?)```", DOC.read_text(), flags=re.DOTALL)


def test_every_example_in_the_doc_is_valid() -> None:
    blocks = json_blocks()
    messages = [b for b in blocks if '"v"' in b]
    assert len(messages) >= 5
    services = set()
    for block in messages:
        status = decode_status(block.encode())
        services.add(status.service)
    assert services == {"node", "indexer", "supervisor"}
    events = [json.loads(b) for b in blocks if '"v"' not in b]
    assert events and all(Event(**e) for e in events)


def test_the_doc_lists_every_phase_and_field() -> None:
    text = DOC.read_text()
    for phase in Phase:
        assert f"| `{phase.value}` |" in text, phase
    for field in WIRE_FIELDS:
        assert f"| `{field}` |" in text, field
