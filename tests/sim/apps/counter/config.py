from looming.config import clock, console, kv_rw, main, register, time

counter = main("unikernel:BootCounter", [console(), time(), clock(), kv_rw("state")])
register("counter", [counter])
