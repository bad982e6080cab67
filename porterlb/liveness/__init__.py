"""Liveness: signed UDP heartbeats between the managers and every speaker, over plain data.

``wire`` encodes and signs the datagram, ``tracker`` is the pinger's count of missed pings,
``guard`` the speaker's choice of pings to answer and its fence, ``drain`` when a stopping
speaker may leave: all pure. ``udp`` opens the datagram endpoint both sides use, ``metrics``
counts every datagram by verdict; the roles wire them: :mod:`porterlb.manager.liveness`
pings, :mod:`porterlb.speaker.heartbeats` answers.
"""
