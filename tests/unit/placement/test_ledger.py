from __future__ import annotations

import collections

from hypothesis import given, stateful
from hypothesis import strategies as st

from porterlb.api.keys import NodeName, ServiceKey
from porterlb.placement import ledger

W1, W2, W3 = NodeName("w1"), NodeName("w2"), NodeName("w3")
A, B, C = ServiceKey("ns/a"), ServiceKey("ns/b"), ServiceKey("ns/c")


def test_services_sharing_an_ip_share_its_node():
    book = ledger.Ledger()
    book.use(A, ("198.18.0.1",))
    assert book.place("198.18.0.1", {W1, W2}) is not None
    book.use(B, ("198.18.0.1",))
    first = book.node_of("198.18.0.1")
    assert book.place("198.18.0.1", {W1, W2, W3}) == first


def test_adopt_keeps_the_oldest_record_of_an_ip():
    book = ledger.Ledger()
    book.adopt(A, ("198.18.0.1",), W2)
    book.adopt(B, ("198.18.0.1",), W1)
    assert book.node_of("198.18.0.1") == W2
    assert book.load() == {W2: 1}


def test_an_ip_nobody_uses_is_forgotten_and_its_node_unloaded():
    book = ledger.Ledger()
    book.use(A, ("198.18.0.1",))
    book.place("198.18.0.1", {W1})
    book.use(A, ())
    assert book.node_of("198.18.0.1") is None
    assert book.load() == {}


def test_ips_on_nodes_and_unplaced_ips():
    book = ledger.Ledger()
    for key, ip in ((A, "198.18.0.1"), (B, "198.18.0.2"), (C, "198.18.0.3")):
        book.use(key, (ip,))
    book.place("198.18.0.1", {W1})
    book.place("198.18.0.2", {W2})
    assert book.ips_on({W1}) == ["198.18.0.1"]
    assert sorted(book.ips_on({W1, W2})) == ["198.18.0.1", "198.18.0.2"]
    assert book.unplaced() == ["198.18.0.3"]
    assert sorted(book.ips()) == ["198.18.0.1", "198.18.0.2", "198.18.0.3"]


def test_users_of_an_ip():
    book = ledger.Ledger()
    book.use(A, ("198.18.0.1",))
    book.use(B, ("198.18.0.1",))
    assert book.users_of("198.18.0.1") == {A, B}
    book.use(A, ())
    assert book.users_of("198.18.0.1") == {B}
    assert book.users_of("198.18.0.9") == frozenset()


def test_an_ip_nobody_uses_is_not_placed():
    book = ledger.Ledger()
    assert book.place("198.18.0.1", {W1}) is None
    assert book.load() == {}


def test_new_ips_go_to_the_least_loaded_node():
    book = ledger.Ledger()
    for host in range(1, 7):
        book.use(ServiceKey(f"ns/s{host}"), (f"198.18.0.{host}",))
        book.place(f"198.18.0.{host}", {W1, W2, W3})
    assert book.load() == {W1: 2, W2: 2, W3: 2}


def test_both_ips_of_a_service_go_to_one_node():
    book = ledger.Ledger()
    book.use(A, ("198.18.0.1", "2001:db8::1"))
    node = book.place("2001:db8::1", {W1, W2, W3})
    assert node is not None
    assert book.node_of("198.18.0.1") == book.node_of("2001:db8::1") == node
    assert book.load() == {node: 2}


def test_sharing_per_family_joins_groups():
    """A (X, Y) and B (X, Z): X, Y and Z on one node, whichever is placed first."""
    book = ledger.Ledger()
    book.use(A, ("198.18.0.1", "2001:db8::1"))
    book.use(C, ("2001:db8::2",))
    book.place("198.18.0.1", {W1})
    book.place("2001:db8::2", {W2})
    book.use(B, ("198.18.0.1", "2001:db8::2"))
    assert book.group("2001:db8::2") == {"198.18.0.1", "2001:db8::1", "2001:db8::2"}
    node = book.place("2001:db8::2", {W1, W2})
    assert node == W1, "the group stays where most of its IPs are"
    assert {book.node_of(ip) for ip in book.group("198.18.0.1")} == {W1}
    book.use(B, ())
    assert book.group("2001:db8::2") == {"2001:db8::2"}


def test_a_group_moves_whole_when_its_node_is_no_longer_eligible():
    book = ledger.Ledger()
    book.use(A, ("198.18.0.1", "2001:db8::1"))
    book.place("198.18.0.1", {W1})
    assert book.place("2001:db8::1", {W2, W3}) in {W2, W3}
    assert book.node_of("198.18.0.1") == book.node_of("2001:db8::1") != W1
    assert book.place("198.18.0.1", set()) is None
    assert book.unplaced() and not book.ips_on({W1, W2, W3})


def test_adopting_consistent_records_moves_nothing():
    book = ledger.Ledger()
    book.adopt(A, ("198.18.0.1", "2001:db8::1"), W2)
    book.adopt(B, ("198.18.0.1", "2001:db8::2"), W2)
    book.adopt(C, ("198.18.0.3",), W1)
    for ip in book.ips():
        book.place(ip, {W1, W2, W3})
    assert {ip: book.node_of(ip) for ip in book.ips()} == {
        "198.18.0.1": W2,
        "2001:db8::1": W2,
        "2001:db8::2": W2,
        "198.18.0.3": W1,
    }


IPS = st.sampled_from([f"198.18.0.{host}" for host in range(1, 4)] + ["2001:db8::1", "2001:db8::2"])
IP_SETS = st.lists(IPS, max_size=2, unique=True).map(tuple)
KEYS = st.sampled_from([ServiceKey(f"ns/s{i}") for i in range(6)])
NODES = [W1, W2, W3]
NODE_SETS = st.frozensets(st.sampled_from(NODES))


def groups(ips_of: dict[ServiceKey, tuple[str, ...]]) -> list[set[str]]:
    """The groups as the definition says: IPs joined by a Service using both, transitively."""
    found: list[set[str]] = []
    for ips in ips_of.values():
        joined = [group for group in found if group & set(ips)]
        merged = set(ips).union(*joined)
        found = [group for group in found if group not in joined] + [merged]
    return found


class LedgerMachine(stateful.RuleBasedStateMachine):
    """Whatever the order of events, as the manager drives it (a Service's IPs change, then
    its group is placed; eligibility changes, then groups are placed again): every IP of a
    group on one node, one node per IP, and the load counts exactly that."""

    def __init__(self) -> None:
        super().__init__()
        self.book = ledger.Ledger()
        self.ips_of: dict[ServiceKey, tuple[str, ...]] = {}

    @stateful.rule(key=KEYS, ips=IP_SETS, eligible=NODE_SETS)
    def use_and_place(self, key, ips, eligible):
        self.book.use(key, ips)
        if ips:
            self.ips_of[key] = ips
        else:
            self.ips_of.pop(key, None)
        if ips:
            self.place(ips[0], eligible)

    @stateful.rule(ip=IPS, eligible=NODE_SETS)
    def place(self, ip, eligible):
        group = self.book.group(ip)
        before = {self.book.node_of(member) for member in group}
        node = self.book.place(ip, eligible)
        if not group or not eligible:
            assert node is None
            return
        assert node in eligible
        if len(before) == 1 and before <= eligible:
            assert node in before, "a group whose node stays eligible stays"

    @stateful.invariant()
    def every_ip_of_a_group_on_one_node(self):
        for group in groups(self.ips_of):
            assert self.book.group(next(iter(group))) == group
            assert len({self.book.node_of(ip) for ip in group}) == 1

    @stateful.invariant()
    def load_counts_placed_ips_in_use(self):
        in_use = {ip for ips in self.ips_of.values() for ip in ips}
        placed = {ip: self.book.node_of(ip) for ip in in_use if self.book.node_of(ip)}
        assert self.book.load() == dict(collections.Counter(placed.values()))

    @stateful.invariant()
    def every_ip_in_use_is_placed_or_unplaced_never_both(self):
        in_use = {ip for ips in self.ips_of.values() for ip in ips}
        placed = set(self.book.ips_on(set(NODES)))
        assert placed | set(self.book.unplaced()) == in_use == set(self.book.ips())
        assert not placed & set(self.book.unplaced())
        for ip in in_use:
            users = {k for k, used in self.ips_of.items() if ip in used}
            assert self.book.users_of(ip) == users


TestLedgerMachine = LedgerMachine.TestCase


@given(
    services=st.dictionaries(
        KEYS, st.lists(IPS, min_size=1, max_size=2, unique=True).map(tuple), max_size=6
    ),
    eligible=st.lists(st.frozensets(st.sampled_from(NODES), min_size=1), min_size=1, max_size=4),
    order=st.randoms(use_true_random=False),
)
def test_adoption_after_a_restart_moves_nothing(services, eligible, order):
    """Placements made by one leader, recorded per Service and adopted by the next in any
    order: placing again with every node eligible keeps every IP where it is."""
    first = ledger.Ledger()
    for index, (key, ips) in enumerate(services.items()):
        first.use(key, ips)
        first.place(ips[0], eligible[index % len(eligible)])
    records = [(key, ips, first.node_of(ips[0])) for key, ips in services.items()]
    order.shuffle(records)
    second = ledger.Ledger()
    for key, ips, node in records:
        second.adopt(key, ips, node)
    for ip in second.ips():
        second.place(ip, set(NODES))
    assert {ip: second.node_of(ip) for ip in second.ips()} == {
        ip: first.node_of(ip) for ip in first.ips()
    }
