from looming.config import clock, console, default_network, key, kv_ro, main, register, stack

port = key("port", int, default=8080, doc="TCP port to serve on")
website = main(
    "unikernel:Website",
    [console(), kv_ro("htdocs"), stack(default_network()), clock()],
    keys=[port],
)
register("website", [website])
