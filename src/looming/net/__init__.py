"""looming's own TCP/IP stack (``--net direct``).

Each layer lives in its own module and receives the layer below it as a
constructor argument: a :class:`~looming.devices.net.Network` carries frames,
:mod:`looming.net.ethernet` frames them, :mod:`looming.net.arp` resolves
addresses, :mod:`looming.net.ipv4` routes, fragments and reassembles, and
:mod:`~looming.net.icmp`, :mod:`~looming.net.udp` and :mod:`looming.net.tcp`
sit on top, with the DHCP client (:mod:`looming.net.dhcp`) and the DNS stub
resolver (:mod:`looming.net.dns`) over UDP.  Wire formats (parse/emit only,
no state) are in :mod:`looming.net.wire`; network interfaces (TAP,
AF_PACKET, an in-memory switch, a pcap recorder) in :mod:`looming.net.netif`.

:class:`looming.net.stack.DirectStack` assembles everything::

    network = await TapNetwork.connect("tap0")            # or offload=True
    stack = await DirectStack.connect(
        network, time=time, clock=clock, random=random,
        address=IPv4Interface("10.0.0.2/24"), gateway=IPv4Address("10.0.0.1"),
    )                                                     # or dhcp=True
    await stack.ping("10.0.0.1")
    listener = await stack.udp.bind(53, handler)
    flow = await stack.tcp.connect("10.0.0.1", 80)
    stack.counters()                                      # every drop, by layer and reason
"""
