from looming.config import console, main, register

app = main("unikernel:ImageLacks", [console()])
register("image_lacks", [app])
