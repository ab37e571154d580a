from looming.config import console, key, kv_ro, main, register

name = key("file", str, default="secret.txt", doc="which file of the store to print")
printer = main("unikernel:PrintFile", [console(), kv_ro("data")], keys=[name])
register("kv_ro", [printer])
