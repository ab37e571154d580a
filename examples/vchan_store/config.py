"""Two unikernels on one host: an HTTP front end and a key-value store,
connected by a vchan (shared memory, no network between them).

    looming configure -t process --unikernel front
    looming build
    looming run --port 8080     # starts the store and the front end together

Then: curl -X PUT --data-binary hello http://127.0.0.1:8080/kv/greeting
      curl http://127.0.0.1:8080/kv/greeting
"""

from looming.config import clock, console, key, main, register, stack, vchan

port = key("port", int, default=8080, doc="TCP port of the HTTP front end")

register("store", [main("store:Store", [console(), vchan("kv")])])
register(
    "front",
    [main("front:Front", [console(), stack(), vchan("kv", peer="store"), clock()], keys=[port])],
)
