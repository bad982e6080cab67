"""Layer 2: answering ARP and NDP for the IPs a node announces, and announcing them.

Pure codecs (``ethernet``, ``arp``, ``ndp``) and the pure per-frame decision (``responder``)
sit under the I/O edge: ``conn`` is the one socket seam, ``afpacket`` the only module that
opens AF_PACKET, ``namespaces`` makes sockets inside a network namespace, ``announcer`` owns
the announced set and its loops, ``conflicts`` decides what a foreign claim is, ``interfaces``
picks the link for a pool, ``metrics`` counts it all. Import the modules you use and call them
qualified (``arp.decode``, ``announcer.Announcer``); the package imports none of them itself,
so the codecs load without pyroute2.
"""
