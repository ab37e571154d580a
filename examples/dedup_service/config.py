from looming.config import console, default_network, key, kv_rw, main, register, stack, time

port = key("port", int, default=7000, doc="TCP port to serve on")
recover_table = key(
    "recover_table",
    bool,
    default=True,
    doc="rebuild the duplicate-request table from the ledger at boot "
    "(false: keep it in memory only, so a retry after a crash applies twice)",
)
sync_ms = key(
    "sync_ms",
    int,
    default=10,
    doc="milliseconds a ledger append takes to be flushed before it is acknowledged",
)
dedup = main(
    "unikernel:Ledger",
    # The ledger is state, kept out of the application's sources (and the
    # checkout); point --ledger-dir at a lasting folder for a real deployment.
    [console(), time(), kv_rw("_build/ledger"), stack(default_network())],
    keys=[port, recover_table, sync_ms],
)
register("dedup", [dedup])
