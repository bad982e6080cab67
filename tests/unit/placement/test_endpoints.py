from __future__ import annotations

from hypothesis import stateful
from hypothesis import strategies as st

from porterlb.api.endpoints import Slice
from porterlb.api.keys import NodeName, ServiceKey
from porterlb.placement import endpoints

WEB, API = ServiceKey("shop/web"), ServiceKey("shop/api")
W1, W2 = NodeName("w1"), NodeName("w2")


def ready(service, *nodes):
    return Slice(service=service, ready=True, ready_nodes=frozenset(nodes))


def test_a_service_without_slices_has_no_ready_endpoint():
    assert endpoints.Index().of(WEB) == endpoints.Endpoints(ready=False)


def test_slices_of_one_service_are_folded():
    index = endpoints.Index()
    assert index.update("shop/web-v4", ready(WEB, W1)) == {WEB}
    assert index.update("shop/web-v6", ready(WEB, W2)) == {WEB}
    assert index.of(WEB) == endpoints.Endpoints(ready=True, ready_nodes=frozenset({W1, W2}))


def test_an_update_that_changes_no_summary_names_nobody():
    index = endpoints.Index()
    index.update("shop/web-v4", ready(WEB, W1))
    assert index.update("shop/web-v4", ready(WEB, W1)) == set()
    index.update("shop/web-v6", ready(WEB, W1))
    assert index.update("shop/web-v6", None) == set()  # w1 is still ready through v4


def test_a_deleted_slice_counts_no_more():
    index = endpoints.Index()
    index.update("shop/web-v4", ready(WEB, W1))
    assert index.update("shop/web-v4", None) == {WEB}
    assert index.of(WEB) == endpoints.NONE


def test_a_slice_relabelled_to_another_service_moves():
    index = endpoints.Index()
    index.update("shop/s", ready(WEB, W1))
    assert index.update("shop/s", ready(API, W1)) == {WEB, API}
    assert index.of(WEB) == endpoints.NONE
    assert index.of(API).ready_nodes == {W1}


SLICE_KEYS = st.sampled_from(["shop/a", "shop/b", "shop/c"])
SLICES = st.none() | st.builds(
    Slice,
    service=st.sampled_from([WEB, API, None]),
    ready=st.booleans(),
    ready_nodes=st.frozensets(st.sampled_from([W1, W2])),
)


class IndexMachine(stateful.RuleBasedStateMachine):
    """Whatever the order of updates, each Service's summary is the fold of its slices now."""

    def __init__(self) -> None:
        super().__init__()
        self.index = endpoints.Index()
        self.slices: dict[str, Slice] = {}

    @stateful.rule(key=SLICE_KEYS, parsed=SLICES)
    def update(self, key, parsed):
        before = {s: self.index.of(s) for s in (WEB, API)}
        changed = self.index.update(key, parsed)
        if parsed is None:
            self.slices.pop(key, None)
        else:
            self.slices[key] = parsed
        assert changed == {s for s in (WEB, API) if self.index.of(s) != before[s]}

    @stateful.invariant()
    def summary_is_the_fold(self):
        for service in (WEB, API):
            mine = [s for s in self.slices.values() if s.service == service]
            assert self.index.of(service) == endpoints.Endpoints(
                ready=any(s.ready for s in mine),
                ready_nodes=frozenset().union(*(s.ready_nodes for s in mine)),
            )


TestIndexMachine = IndexMachine.TestCase
