"""Network interfaces (:class:`looming.devices.net.Network`): a TAP device,
an AF_PACKET socket on an existing interface, an in-memory switch (a preset
of ``fabric``, the simulated Ethernet the simulator runs too) and a pcap
recorder that wraps any of them."""
