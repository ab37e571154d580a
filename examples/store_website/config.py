"""A website published with ``git push``: its files are a branch of a Git store.

looming configure -t unix && looming build && looming run
git clone http://127.0.0.1:8418/ site && cd site
echo '<h1>hello</h1>' > index.html && git add . && git commit -m hello
git push origin HEAD:main        # the next request serves it
"""

from looming.config import console, default_network, key, kv_store, main, register, stack

port = key("port", int, default=8080, doc="TCP port the website is served on")
push_port = key("push_port", int, default=8418, doc="TCP port git pushes the site to (smart HTTP)")
website = main(
    "unikernel:StoreWebsite",
    [console(), kv_store("site.git", branch="main"), stack(default_network())],
    keys=[port, push_port],
)
register("store-website", [website])
