"""Two API replicas on one store (deploy/k8s/api.yaml: replicas 2, no session affinity): the dashboard's
polls of a replay job reach either, and a second bulk replay waits for the first, whichever replica
took it."""

from __future__ import annotations

import httpx
import pytest

from hub.embedded import EmbeddedKafka
from hub.ops.console import console_of
from schemas.envelope import Envelope
from tests.conftest import make_settings
from tests.helpers.kafka import produce, read_topic, wait_for
from tests.integration.test_ops_dlq import _depth, _is, _job_done, youth_key
from tests.integration.test_ops_lag import IN, OUT, PASSWORD, Cure, ops_hub, poisonable_echo
from tests.integration.test_ops_replay_jobs import GATED_RATE, Gate

pytestmark = pytest.mark.integration
KEY_FILTER = "open dead letters with key=(not kept)"  # what the job says it replays: no key


async def _progressed(client: httpx.AsyncClient, job_id: str) -> bool:
    return (await client.get(f"/ops/api/jobs/{job_id}")).json()["done"] == 3


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
@pytest.mark.timeout(240)
async def test_two_api_replicas_on_one_store_share_the_jobs_and_run_one_bulk_replay(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """deploy/k8s/api.yaml runs two replicas behind one Service, without session affinity: the
    dashboard's polls of a job reach either, and a "replay all" on the other replica waits its turn."""
    cure = Cure()
    settings = make_settings(kafka, db_url, unique)
    async with (
        ops_hub(settings, poisonable_echo(cure)) as (hub_a, client_a),
        ops_hub(settings, poisonable_echo(cure)) as (_, client_b),
    ):
        # adding the operator again for replica B ended the session replica A's client had
        r = await client_a.post("/ops/login", json={"username": "olga", "password": PASSWORD})
        assert r.status_code == 200, r.text
        ann, bob = youth_key("ann"), youth_key("bob")
        sent = [
            (k, Envelope(type="T", payload={"n": i, "poison": True})) for i, k in enumerate([ann, bob] * 3)
        ]
        records = [(k.encode(), s.to_bytes(), s.headers()) for k, s in sent]
        await produce(kafka.bootstrap, hub_a.topic(IN.name), records)
        await wait_for(lambda: _is(_depth(client_a, hub_a), 6), timeout_s=60)
        gate = Gate()
        replaying = console_of(hub_a).dead_letters
        replaying.rate_per_s, replaying.sleep = GATED_RATE, gate.sleep
        cure.fixed = True
        r = await client_a.post("/ops/api/dlq/replay", json={"key": ann})  # Ann's three letters
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        await wait_for(lambda: _progressed(client_a, job_id), timeout_s=30)  # its batch committed
        for client in (client_b, client_a, client_b):  # the Service sends each poll to either
            polled = await client.get(f"/ops/api/jobs/{job_id}")
            assert polled.status_code == 200, polled.text
            progress = polled.json()
            assert (progress["state"], progress["done"], progress["total"]) == ("running", 3, 3)
            assert (progress["operator"], progress["filter"]) == ("olga", KEY_FILTER)
        refused = await client_b.post("/ops/api/dlq/replay", json={"all": True})  # Bob's three, meanwhile
        assert refused.status_code == 409, refused.text
        detail = refused.json()["detail"]
        assert f"replay job {job_id} ({KEY_FILTER}), started by olga" in detail
        assert f"GET /ops/api/jobs/{job_id}" in detail and ann not in detail
        gate.opened.set()
        await wait_for(lambda: _job_done(client_b, job_id), timeout_s=30)
        r = await client_b.post("/ops/api/dlq/replay", json={"all": True})  # now it may go
        assert r.status_code == 202 and r.json()["total"] == 3, r.text
        await wait_for(lambda: _job_done(client_a, r.json()["id"]), timeout_s=30)
        out = await read_topic(kafka.bootstrap, hub_a.topic(OUT.name), expect=6, settle_s=0.3)
        assert sorted(Envelope.from_bytes(r.value).payload["n"] for r in out) == list(range(6))
