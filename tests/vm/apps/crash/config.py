from looming.config import console, main, register

crash = main("unikernel:Crash", [console()])
register("crash", [crash])
