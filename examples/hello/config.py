from looming.config import console, key, main, register, time

greetings = key("greetings", int, default=4, doc="how many greetings to print")
hello = main("unikernel:Hello", [console(), time()], keys=[greetings])
register("hello", [hello])
