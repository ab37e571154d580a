"""looming's own TCP/IP stack (``--net direct``).

Each layer lives in its own module and receives the layer below it as a
constructor argument: a :class:`~looming.devices.net.Network` carries frames,
:mod:`looming.net.ethernet` frames them, :mod:`looming.net.arp` resolves
addresses, :mod:`looming.net.ipv4` routes and fragments, and ICMP, UDP and TCP
sit on top.  :class:`looming.net.stack.DirectStack` assembles them.
Wire formats (parse/emit only, no state) are in :mod:`looming.net.wire`.
"""
