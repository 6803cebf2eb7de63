"""A police record that uses a youth's name or BSN as a key, dead-lettered by the intake: neither its
error in the list (any operator, not audited) nor its masked view shows them, and the view is audited
under the youth the record names only by that key."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from hub.embedded import EmbeddedKafka
from hub.intake.component import register_intake
from hub.ops.masking import MASK
from hub.spine.dlq import DLQ_EXC_MESSAGE
from hub.store.tables import audit_log
from schemas.pseudonym import youth_key
from tests.conftest import TEST_SECRET, make_settings
from tests.helpers.kafka import headers_of, produce, read_topic
from tests.integration.test_intake_http import politie_variant
from tests.integration.test_ops_lag import ops_hub

pytestmark = pytest.mark.integration

BSN, NAME = "252760189", "Sanne Jansen"  # the BSN passes the elfproef


@pytest.mark.timeout(240)
async def test_a_name_or_bsn_a_record_uses_as_a_key_is_masked_in_the_list_the_view_and_its_headers(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    record = json.loads(politie_variant(1))
    del record["verdachte"]["bsn"]  # the record names its youth only by the key below
    record["verdachte"][NAME] = "x"  # a partner's bug: a name as a key
    record["jongeren"] = {BSN: {"urenverzuim": 12}}
    raw = json.dumps(record).encode()
    async with ops_hub(make_settings(kafka, db_url, unique), register_intake) as (hub, client):
        assert hub.store is not None
        topic = hub.topic("partner.politie.referral.v1")
        await produce(kafka.bootstrap, topic, [(b"pv", raw, [(f"x-bsn-{BSN}", b"1")])])
        [dead] = await read_topic(kafka.bootstrap, hub.topic("partner.politie.referral.dlq.v1"), expect=1)
        error = headers_of(dead)[DLQ_EXC_MESSAGE]
        assert f"verdachte.{MASK} (sleutel 1): onbekend veld" in error, error  # never in a header
        assert NAME not in error and BSN not in error

        [listed] = (await client.get("/ops/api/dlq", params={"topic": topic})).json()["items"]
        shown = (await client.get(f"/ops/api/dlq/{listed['id']}")).json()
        assert listed["error"] == error == shown["error"]
        for secret in ("Sanne", "Jansen", BSN):
            assert secret not in json.dumps(listed) and secret not in json.dumps(shown), secret
        # the structure stays: what an operator needs to mend the record
        assert shown["payload"]["verdachte"][f"{MASK} (sleutel 1)"] == MASK
        assert shown["payload"]["jongeren"] == {f"{MASK} (sleutel 2)": {"urenverzuim": 12}}
        assert shown["payload"]["procesVerbaalNummer"] == record["procesVerbaalNummer"]
        assert shown["headers"][f"{MASK} (sleutel 1)"] == MASK

        async with hub.store.connect() as conn:
            viewed = await conn.execute(
                select(audit_log.c.youth_key).where(audit_log.c.action == "dlq.viewed")
            )
            assert list(viewed.scalars()) == [youth_key(TEST_SECRET, BSN)]
            # the record's refusal is audited (kept for years) with the fields it named, masked too
            refused = await conn.execute(
                select(audit_log.c.objects).where(audit_log.c.action == "referral.unparseable")
            )
            [objects] = list(refused.scalars())
            assert NAME not in json.dumps(objects) and objects["fields"], objects
