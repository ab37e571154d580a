from looming.config import (
    block,
    console,
    default_network,
    key,
    kv_rw,
    kv_store,
    main,
    register,
    stack,
)

port = key("port", int, default=7000, doc="TCP port of the line protocol")
storage = main(
    "unikernel:Storage",
    [console(), kv_store("data.git"), kv_rw("notes"), block("disk.img"), stack(default_network())],
    keys=[port],
)
register("storage", [storage])
