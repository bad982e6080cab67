from porterlb.api.keys import NodeName
from porterlb.kube import peers
from porterlb.l2 import ethernet

A = bytes.fromhex("020000000001")
B = bytes.fromhex("020000000002")


def test_data_names_each_nodes_macs_sorted_and_leaves_out_nodes_without_any():
    found = peers.data({NodeName("w2"): frozenset({B, A}), NodeName("w1"): frozenset()})
    assert found == {"w2": "02:00:00:00:00:01 02:00:00:00:00:02"}


def test_parse_reads_every_mac_back_with_its_node_and_skips_what_is_not_one():
    obj = {"data": {"w1": "02:00:00:00:00:01", "w2": "02:00:00:00:00:02 not-a-mac"}}
    assert peers.parse(obj) == {ethernet.MacAddress(A): "w1", ethernet.MacAddress(B): "w2"}


def test_parse_round_trips_data():
    macs = {NodeName("w1"): frozenset({A}), NodeName("w2"): frozenset({B})}
    assert peers.parse({"data": peers.data(macs)}) == {
        ethernet.MacAddress(A): "w1",
        ethernet.MacAddress(B): "w2",
    }


def test_a_missing_configmap_names_no_peer():
    assert peers.parse(None) == {}
    assert peers.parse({"metadata": {"name": peers.NAME}}) == {}
