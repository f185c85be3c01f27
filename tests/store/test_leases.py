"""The guards' registry and the call leases (npv_guard/leases.py) on a real Redis, single server
and Cluster: one live guard per app, one owner per call, fencing tokens."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import pytest

from npv_guard.leases import Registry, pbx_of
from npv_guard.store import ConsumerHasher, Store
from tests.support.redis_servers import RedisCluster, RedisServer

pytestmark = pytest.mark.redis

Registries = Callable[..., Registry]


@pytest.fixture(params=["single", "cluster"])
async def registries(
    request: pytest.FixtureRequest, redis_server: RedisServer, redis_cluster: RedisCluster
) -> AsyncIterator[Registries]:
    cluster = request.param == "cluster"
    url = redis_cluster.url if cluster else redis_server.url
    prefix = "ha" + uuid.uuid4().hex[:8]
    stores: list[Store] = []

    def make(app: str, instance: str, pbx: str = "127.0.0.1:8088") -> Registry:
        store = Store.connect(url, ConsumerHasher("s" * 32), cluster=cluster, prefix=prefix, timeout=2.0)
        stores.append(store)
        return Registry(store, app, instance, lease_s=1.0, pbx=pbx)

    yield make
    for store in stores:
        await store.close()


async def test_a_live_guard_keeps_its_app_and_a_stopped_one_gives_it_up(registries: Registries) -> None:
    first, second = registries("npv-guard-a", "host:1:x"), registries("npv-guard-a", "host:2:y")
    assert (await first.register("connected", 0, claim=True))[0]
    ok, holder = await second.register("disconnected", 0, claim=True)
    assert not ok and holder.instance == "host:1:x" and holder.alive
    await first.register("stopped", 0, claim=False)
    assert (await second.register("disconnected", 0, claim=True))[0]
    # The first one may not come back behind the second one's back: its renewal is refused.
    ok, holder = await first.register("connected", 0, claim=False)
    assert not ok and holder.instance == "host:2:y"


async def test_the_guards_of_two_pbxes_on_one_state_may_share_an_app_name(registries: Registries) -> None:
    """Two Asterisks, one prefix (their attempts and refusals count together): each PBX's guard
    serves the default app of its own Asterisk; neither is a second guard of the other's app."""
    first = registries("npv-guard", "host:1:x", pbx_of("http://127.0.0.1:8088"))
    second = registries("npv-guard", "host:2:y", pbx_of("http://127.0.0.1:8188/"))
    assert (await first.register("connected", 0, claim=True))[0]
    assert (await second.register("connected", 0, claim=True))[0]
    assert [e.instance for e in await first.guards()] == ["host:1:x"]
    assert [e.instance for e in await second.guards()] == ["host:2:y"]
    same = registries("npv-guard", "host:3:z", pbx_of("http://127.0.0.1:8088/ari-proxy"))
    ok, holder = await same.register("disconnected", 0, claim=True)
    assert not ok and holder.instance == "host:1:x"  # the same Asterisk: still refused


def test_a_pbx_is_named_by_the_host_and_port_of_its_ari_url() -> None:
    assert pbx_of("http://PBX.example:80") == pbx_of("http://pbx.example") == "pbx.example:80"
    assert pbx_of("https://pbx.example/") == "pbx.example:443"
    assert pbx_of("http://[::1]:8088") == "[::1]:8088"


async def test_an_entry_that_is_not_renewed_stops_holding(registries: Registries) -> None:
    first, second = registries("npv-guard-a", "host:1:x"), registries("npv-guard-a", "host:2:y")
    await first.register("connected", 3, claim=True)
    await asyncio.sleep(1.2)  # one lease (1 s) without renewal
    entries = await second.guards()
    assert [(e.app, e.calls, e.alive) for e in entries] == [("npv-guard-a", 3, False)]
    assert (await second.register("disconnected", 0, claim=True))[0]


async def test_one_owner_per_call_and_the_token_moves_with_it(registries: Registries) -> None:
    a, b = registries("npv-guard-a", "host:1:x"), registries("npv-guard-b", "host:2:y")
    assert await a.acquire("call-1") == 1
    assert await a.acquire("call-1") == 1  # ours already: same token
    assert await b.acquire("call-1") is None  # held, live
    assert await a.renew("call-1", 1, offer=True)  # offered: takeable at once
    assert await b.acquire("call-1") == 2
    assert not await a.renew("call-1", 1)  # the old owner learns it lost the call
    lease = await a.lease("call-1")
    assert lease is not None and (lease.owner, lease.app, lease.token, lease.live) == (
        "host:2:y",
        "npv-guard-b",
        2,
        True,
    )
    await a.release("call-1", 1)  # not the owner: nothing happens
    assert await a.lease("call-1") is not None
    await b.release("call-1", 2)
    assert await a.lease("call-1") is None


async def test_a_lease_that_is_not_renewed_can_be_taken(registries: Registries) -> None:
    a, b = registries("npv-guard-a", "host:1:x"), registries("npv-guard-b", "host:2:y")
    assert await a.acquire("call-2") == 1
    await asyncio.sleep(1.2)
    assert await b.acquire("call-2") == 2
