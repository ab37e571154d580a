from looming.config import console, main, register

app = main("unikernel:BadImport", [console()])
register("bad_import", [app])
