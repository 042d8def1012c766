"""incident.io-only contract: the official PyPI client (``incident-io``, generated from the spec)
works against the simulator unchanged. The contract every simulator shares (responses against
the spec, auth, paging, rate-limit answer, control surface) is tests/vendors/test_contract.py
with this vendor's kit, ii_kit.py."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from syncd.simulators.incidentio import (
    DEFAULT_API_KEY,
    IncidentIOSimulator,
)

# --------------------------------------------------------------------------- official client


@pytest.fixture
def official() -> Any:
    return pytest.importorskip("incident_io")


async def test_official_client_works_unchanged(official: Any) -> None:
    from incident_io import AuthenticatedClient
    from incident_io.api.escalations_v2 import (
        escalations_v2_list,
        escalations_v2_respond_escalation,
    )
    from incident_io.api.incidents_v2 import incidents_v2_edit, incidents_v2_list, incidents_v2_show
    from incident_io.api.severities_v1 import severities_v1_list
    from incident_io.models.error_response import ErrorResponse
    from incident_io.models.escalations_respond_escalation_payload_v2 import (
        EscalationsRespondEscalationPayloadV2,
    )
    from incident_io.models.escalations_respond_escalation_payload_v2_response import (
        EscalationsRespondEscalationPayloadV2Response,
    )
    from incident_io.models.incident_edit_payload_v2 import IncidentEditPayloadV2
    from incident_io.models.incidents_edit_payload_v2 import IncidentsEditPayloadV2
    from incident_io.models.incidents_v2_list_status_category import (
        IncidentsV2ListStatusCategory,
    )

    sim = IncidentIOSimulator(seed=4)
    for n in range(5):
        sim.alert(dedup=f"k{n}", title=f"alert {n}", severity="sev2")
    base = "http://sim.localhost"
    api = AuthenticatedClient(base_url=base, token=DEFAULT_API_KEY)
    api.set_async_httpx_client(httpx.AsyncClient(
        transport=sim.transport(), base_url=base,
        headers={"Authorization": f"Bearer {DEFAULT_API_KEY}"}))
    async with api:
        ids, after = [], None
        category = IncidentsV2ListStatusCategory()
        category.additional_properties = {"one_of": ["triage"]}
        while True:
            kw: dict[str, Any] = {"client": api, "page_size": 2, "status_category": category}
            if after:
                kw["after"] = after
            page = await incidents_v2_list.asyncio(**kw)
            assert not isinstance(page, ErrorResponse), page
            ids += [i.id for i in page.incidents]
            after = page.pagination_meta.after if page.pagination_meta else None
            if not isinstance(after, str):
                break
        assert len(ids) == 5 and len(set(ids)) == 5
        shown = await incidents_v2_show.asyncio(ids[0], client=api)
        assert shown.incident.id == ids[0]
        sevs = await severities_v1_list.asyncio(client=api)
        assert [s.name for s in sevs.severities] == ["Minor", "Major", "Critical"]
        edited = await incidents_v2_edit.asyncio(ids[0], client=api, body=IncidentsEditPayloadV2(
            incident=IncidentEditPayloadV2(severity_id=sevs.severities[2].id),
            notify_incident_channel=False))
        assert edited.incident.severity.name == "Critical"
        escs = await escalations_v2_list.asyncio(client=api, page_size=50)
        assert len(escs.escalations) == 5
        answer = await escalations_v2_respond_escalation.asyncio_detailed(
            escs.escalations[0].id, client=api,
            body=EscalationsRespondEscalationPayloadV2(
                response=EscalationsRespondEscalationPayloadV2Response("ack")))
        assert answer.status_code == 200
        assert sim.escalations[escs.escalations[0].id].status == "acked"
        missing = await incidents_v2_show.asyncio("01HNOTFOUND000000000000000", client=api)
        assert isinstance(missing, ErrorResponse) and missing.status == 404
        assert missing.type_.value == "not_found" and missing.errors[0].code == "not_found"
