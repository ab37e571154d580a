"""The VM-to-VM figure of bench/vchan.py: an echo unikernel and one that
measures round trips and throughput against it over a vchan.

bench/vchan.py --vm builds both for the vm target (two VMs, ivshmem) and
for the process target (two processes), and runs them in turn.
"""

from looming.config import console, key, main, register, time, vchan

rounds = key("rounds", int, default=200, doc="round trips of 64-byte messages")
total = key("total", int, default=8 << 20, doc="bytes streamed in 64 KiB writes")

RING = 1 << 20
register("echo", [main("echo:echo", [console(), vchan("bench", read_size=RING, write_size=RING)])])
register(
    "pinger",
    [main("pinger:pinger", [console(), time(), vchan("bench", peer="echo")], keys=[rounds, total])],
)
