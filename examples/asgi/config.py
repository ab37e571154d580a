from looming.config import (
    clock,
    console,
    default_network,
    http_keys,
    key,
    main,
    register,
    stack,
)

port = key("port", int, default=8000, doc="TCP port to serve on")
service = main(
    "unikernel:AsgiService",
    [console(), stack(default_network()), clock()],
    keys=[port, *http_keys()],
)
register("asgi", [service])
