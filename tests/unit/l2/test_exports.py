import porterlb.l2


def test_all_lists_every_module():
    assert sorted(porterlb.l2.__all__) == [
        "afpacket",
        "announcer",
        "arp",
        "conflicts",
        "conn",
        "ethernet",
        "interfaces",
        "metrics",
        "namespaces",
        "ndp",
        "responder",
    ]
    for name in porterlb.l2.__all__:
        assert hasattr(porterlb.l2, name)
