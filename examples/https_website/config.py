"""The static website over HTTPS: the tls device wraps the stack in one line."""

from looming.config import (
    clock,
    console,
    default_network,
    key,
    kv_ro,
    main,
    register,
    stack,
    tls,
)

port = key("port", int, default=8443, doc="TCP port to serve HTTPS on")
secure = tls(stack(default_network()), kv_ro("tls"), alpn=("http/1.1",))
website = main(
    "unikernel:SecureWebsite", [console(), kv_ro("htdocs"), secure, clock()], keys=[port]
)
register("https_website", [website])
