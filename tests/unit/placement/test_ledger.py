from __future__ import annotations

import collections

from hypothesis import stateful
from hypothesis import strategies as st

from porterlb.api.keys import NodeName, ServiceKey
from porterlb.placement import ledger

W1, W2, W3 = NodeName("w1"), NodeName("w2"), NodeName("w3")
A, B, C = ServiceKey("ns/a"), ServiceKey("ns/b"), ServiceKey("ns/c")


def test_services_sharing_an_ip_share_its_node():
    book = ledger.Ledger()
    book.use(A, "198.18.0.1")
    assert book.place("198.18.0.1", {W1, W2}) is not None
    book.use(B, "198.18.0.1")
    first = book.node_of("198.18.0.1")
    assert book.place("198.18.0.1", {W1, W2, W3}) == first


def test_adopt_keeps_the_oldest_record_of_an_ip():
    book = ledger.Ledger()
    book.adopt(A, "198.18.0.1", W2)
    book.adopt(B, "198.18.0.1", W1)
    assert book.node_of("198.18.0.1") == W2
    assert book.load() == {W2: 1}


def test_an_ip_nobody_uses_is_forgotten_and_its_node_unloaded():
    book = ledger.Ledger()
    book.use(A, "198.18.0.1")
    book.place("198.18.0.1", {W1})
    book.use(A, None)
    assert book.node_of("198.18.0.1") is None
    assert book.load() == {}


def test_ips_on_nodes_and_unplaced_ips():
    book = ledger.Ledger()
    for key, ip in ((A, "198.18.0.1"), (B, "198.18.0.2"), (C, "198.18.0.3")):
        book.use(key, ip)
    book.place("198.18.0.1", {W1})
    book.place("198.18.0.2", {W2})
    assert book.ips_on({W1}) == ["198.18.0.1"]
    assert sorted(book.ips_on({W1, W2})) == ["198.18.0.1", "198.18.0.2"]
    assert book.unplaced() == ["198.18.0.3"]
    assert sorted(book.ips()) == ["198.18.0.1", "198.18.0.2", "198.18.0.3"]


def test_users_of_an_ip():
    book = ledger.Ledger()
    book.use(A, "198.18.0.1")
    book.use(B, "198.18.0.1")
    assert book.users_of("198.18.0.1") == {A, B}
    book.use(A, None)
    assert book.users_of("198.18.0.1") == {B}
    assert book.users_of("198.18.0.9") == frozenset()


def test_an_ip_nobody_uses_is_not_placed():
    book = ledger.Ledger()
    assert book.place("198.18.0.1", {W1}) is None
    assert book.load() == {}


def test_new_ips_go_to_the_least_loaded_node():
    book = ledger.Ledger()
    for host in range(1, 7):
        book.use(ServiceKey(f"ns/s{host}"), f"198.18.0.{host}")
        book.place(f"198.18.0.{host}", {W1, W2, W3})
    assert book.load() == {W1: 2, W2: 2, W3: 2}


IPS = st.sampled_from([f"198.18.0.{host}" for host in range(1, 6)])
KEYS = st.sampled_from([ServiceKey(f"ns/s{i}") for i in range(6)])
NODE_SETS = st.frozensets(st.sampled_from([W1, W2, W3]))


class LedgerMachine(stateful.RuleBasedStateMachine):
    """Whatever the order of events: one node per IP, and the load counts exactly that."""

    def __init__(self) -> None:
        super().__init__()
        self.book = ledger.Ledger()
        self.ip_of: dict[ServiceKey, str] = {}

    @stateful.rule(key=KEYS, ip=st.none() | IPS)
    def use(self, key, ip):
        self.book.use(key, ip)
        if ip is None:
            self.ip_of.pop(key, None)
        else:
            self.ip_of[key] = ip

    @stateful.rule(ip=IPS, eligible=NODE_SETS)
    def place(self, ip, eligible):
        before = self.book.node_of(ip)
        node = self.book.place(ip, eligible)
        if ip not in self.ip_of.values() or not eligible:
            assert node is None
            return
        assert node in eligible
        if before in eligible:
            assert node == before

    @stateful.invariant()
    def load_counts_placed_ips_in_use(self):
        in_use = set(self.ip_of.values())
        placed = {ip: self.book.node_of(ip) for ip in in_use if self.book.node_of(ip)}
        assert self.book.load() == dict(collections.Counter(placed.values()))

    @stateful.invariant()
    def every_ip_in_use_is_placed_or_unplaced_never_both(self):
        in_use = set(self.ip_of.values())
        placed = set(self.book.ips_on({W1, W2, W3}))
        assert placed | set(self.book.unplaced()) == in_use == set(self.book.ips())
        assert not placed & set(self.book.unplaced())
        for ip in in_use:
            assert self.book.users_of(ip) == {k for k, used in self.ip_of.items() if used == ip}


TestLedgerMachine = LedgerMachine.TestCase
