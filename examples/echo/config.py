from looming.config import console, default_network, key, main, register, stack

port = key("port", int, default=7777, doc="TCP port to echo on")
echo = main("unikernel:Echo", [console(), stack(default_network())], keys=[port])
register("echo", [echo])
