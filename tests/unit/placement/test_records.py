from __future__ import annotations

from hypothesis import given, stateful
from hypothesis import strategies as st

from porterlb.api.keys import NodeName, PoolName, ServiceKey
from porterlb.placement import records

NODES = [NodeName(f"w{i}") for i in range(3)]
IPS = [f"198.18.0.{i}" for i in range(1, 6)] + ["2001:db8::1"]
SERVICES = [ServiceKey(f"ns/s{i}") for i in range(4)]

entries = st.builds(
    records.Entry,
    st.sampled_from([PoolName("lan"), PoolName("v6")]),
    st.lists(st.sampled_from(SERVICES), unique=True).map(lambda keys: tuple(sorted(keys))),
    probe=st.booleans(),
)


@given(st.dictionaries(st.sampled_from(IPS), entries))
def test_a_record_reads_back_as_written(record):
    obj = {"metadata": {"name": "w0"}, "spec": records.spec(record)}
    assert records.parse(obj) == record


def test_the_spec_lists_ips_sorted_and_says_probe_only_when_set():
    spec = records.spec(
        {
            "198.18.0.2": records.Entry(PoolName("lan"), (ServiceKey("ns/b"),)),
            "198.18.0.1": records.Entry(PoolName("lan"), (ServiceKey("ns/a"),), probe=True),
        }
    )
    assert spec == {
        "ips": [
            {"ip": "198.18.0.1", "pool": "lan", "services": ["ns/a"], "probe": True},
            {"ip": "198.18.0.2", "pool": "lan", "services": ["ns/b"]},
        ]
    }


def test_adopting_keeps_an_ip_in_the_first_record_that_holds_it():
    book = records.Book()
    entry = records.Entry(PoolName("lan"), (ServiceKey("ns/a"),))
    assert book.adopt(NODES[0], {"198.18.0.1": entry}) == []
    assert book.adopt(NODES[1], {"198.18.0.1": entry, "198.18.0.2": entry}) == ["198.18.0.1"]
    assert book.node_of("198.18.0.1") == NODES[0]
    assert book.node_of("198.18.0.2") == NODES[1]
    assert book.record(NODES[1]) == {"198.18.0.2": entry}
    assert book.generation[NODES[0]] == 0  # as in the API
    assert book.generation[NODES[1]] > 0  # to be written without the IP


class BookMachine(stateful.RuleBasedStateMachine):
    """Whatever is put and dropped, an IP is in one record at most, the index of each
    Service's IPs agrees with the records, and every change of a record counts."""

    def __init__(self) -> None:
        super().__init__()
        self.book = records.Book()
        self.model: dict[str, tuple[NodeName, records.Entry]] = {}

    @stateful.rule(ip=st.sampled_from(IPS), node=st.sampled_from(NODES), entry=entries)
    def put(self, ip, node, entry):
        before = {n: self.book.generation[n] for n in NODES}
        changed = self.model.get(ip) != (node, entry)
        self.book.put(ip, node, entry)
        self.model[ip] = (node, entry)
        assert (self.book.generation[node] > before[node]) == changed

    @stateful.rule(ip=st.sampled_from(IPS))
    def drop(self, ip):
        was = self.model.pop(ip, (None, None))[0]
        assert self.book.drop(ip) == was

    @stateful.invariant()
    def agrees(self):
        for node in NODES:
            assert self.book.record(node) == {
                ip: entry for ip, (n, entry) in self.model.items() if n == node
            }
        for ip in IPS:
            assert self.book.node_of(ip) == self.model.get(ip, (None, None))[0]
        for key in SERVICES:
            assert self.book.ips_of(key) == {
                ip for ip, (_, entry) in self.model.items() if key in entry.services
            }


TestBook = BookMachine.TestCase
