from porterlb.api import node as node_api


def test_every_ip_address_of_a_node_counts_and_host_names_do_not():
    status = {
        "addresses": [
            {"type": "InternalIP", "address": "198.18.0.11"},
            {"type": "InternalIP", "address": "2001:DB8:0:0::11"},
            {"type": "ExternalIP", "address": "192.0.2.11"},
            {"type": "Hostname", "address": "w1"},
            {"type": "InternalDNS", "address": "w1.example.invalid"},
        ]
    }
    assert node_api.ip_addresses({"status": status}) == {
        "198.18.0.11",
        "2001:db8::11",
        "192.0.2.11",
    }


def test_a_node_without_status_has_no_address():
    assert node_api.ip_addresses({"metadata": {"name": "w1"}}) == frozenset()
