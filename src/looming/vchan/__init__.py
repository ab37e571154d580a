"""vchan: shared-memory channels between unikernels on one host.

The shared page is laid out exactly as Xen's libxenvchan lays it out
(:mod:`looming.vchan.layout`), with the ring arithmetic as pure code
(:mod:`looming.vchan.ring`). Processes share the page through a POSIX
shared-memory segment, signal each other through eventfds (pipes where
there are none), and meet through a registry directory that stands in for
xenstore (:mod:`looming.vchan.registry`). Blocking endpoints are in
:mod:`looming.vchan.endpoint`, asyncio flows in :mod:`looming.vchan.aio`.
"""

from looming.vchan.endpoint import Endpoint
from looming.vchan.errors import VchanCorrupt, VchanError
from looming.vchan.listener import Listener, connect, listen, recover

__all__ = ["Endpoint", "Listener", "VchanCorrupt", "VchanError", "connect", "listen", "recover"]
