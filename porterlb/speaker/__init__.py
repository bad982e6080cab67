"""The node agent: answers ARP/NDP for the IPs the manager assigned to this node."""
