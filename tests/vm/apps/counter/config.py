from looming.config import block, console, kv_rw, main, register

app = main("unikernel:Counter", [console(), kv_rw("state"), block("counter.img")])
register("counter", [app])
