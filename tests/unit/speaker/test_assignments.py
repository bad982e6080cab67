from __future__ import annotations

import ipaddress

import msgspec

from porterlb.api.keys import PoolName, ServiceKey
from porterlb.placement import records
from porterlb.speaker import assignments


def read(obj):
    """What the speaker reads of record `obj`: its watch cache keeps it slim."""
    return assignments.kept(None if obj is None else assignments.slim(obj))


def record(*items):
    return {"metadata": {"name": "w1", "resourceVersion": "4"}, "spec": {"ips": list(items)}}


def test_every_ip_of_the_record_with_its_pool_and_services():
    found = read(
        record(
            {"ip": "198.18.2.200", "pool": "lan", "services": ["shop/web", "shop/api"]},
            {"ip": "2001:db8:1:1::200", "pool": "v6", "services": ["shop/web"], "probe": True},
        )
    )
    assert found == {
        ipaddress.ip_address("198.18.2.200"): records.Entry(
            PoolName("lan"), (ServiceKey("shop/web"), ServiceKey("shop/api"))
        ),
        ipaddress.ip_address("2001:db8:1:1::200"): records.Entry(
            PoolName("v6"), (ServiceKey("shop/web"),), probe=True
        ),
    }


def test_no_record_or_an_empty_one_assigns_nothing():
    assert read(None) == {}
    assert read(record()) == {}
    assert read({"metadata": {"name": "w1"}}) == {}


def test_items_that_do_not_parse_are_skipped():
    found = read(
        record(
            {"ip": "198.18.2.300", "pool": "lan"},
            {"ip": "198.18.2.201"},
            {"pool": "lan"},
            "198.18.2.202",
            {"ip": "198.18.2.203", "pool": "lan"},
        )
    )
    assert list(map(str, found)) == ["198.18.2.203"]


def test_an_eip_says_which_of_its_addresses_services_use():
    eip = {"metadata": {"name": "lan"}, "status": {"used": {"198.18.2.200": "shop/web"}}}
    assert assignments.used(eip, ipaddress.ip_address("198.18.2.200"))
    assert not assignments.used(eip, ipaddress.ip_address("198.18.2.201"))
    assert not assignments.used({"metadata": {"name": "new"}}, ipaddress.ip_address("198.18.2.200"))


def test_the_watch_cache_keeps_the_record_parsed_and_its_metadata_without_managed_fields():
    def raw():
        obj = record(
            {"ip": "198.18.2.200", "pool": "lan", "services": ["shop/web"]},
            {"ip": "198.18.2.300", "pool": "lan"},
            {"ip": "2001:db8:1:1::200", "pool": "v6", "services": ["shop/web"], "probe": True},
            {"ip": "198.18.2.1", "pool": "lan", "services": ["shop/api"]},
        )
        obj["metadata"]["managedFields"] = [{"manager": "porterlb"}]
        return obj

    decoded = raw()
    kept = assignments.slim(decoded)
    assert kept == {
        "metadata": {"name": "w1", "resourceVersion": "4"},
        "assigned": read(raw()),
    }
    assert list(map(str, assignments.kept(kept))) == [
        "198.18.2.200",
        "2001:db8:1:1::200",
        "198.18.2.1",
    ]
    assert decoded["spec"]["ips"] == []  # parsed as it was emptied: never both in memory
    assert assignments.kept(None) == {}
    assert assignments.kept(assignments.slim({"metadata": {"name": "w1"}})) == {}
    assert assignments.kept(assignments.slim({"spec": {"ips": "198.18.2.200"}})) == {}


def test_every_entry_of_one_pool_shares_the_pool_name():
    found = read(
        msgspec.json.decode(
            msgspec.json.encode(
                record(
                    {"ip": "198.18.2.200", "pool": "lan-a", "services": []},
                    {"ip": "198.18.2.201", "pool": "lan-a", "services": []},
                )
            )
        )
    )
    first, second = found.values()
    assert first.pool is second.pool
