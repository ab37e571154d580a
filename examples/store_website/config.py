"""A website published with ``git push``: its files are a branch of a Git store.

looming configure -t unix && looming build
python -c 'import secrets; print(secrets.token_urlsafe(32))' > push.token
looming run --push-token-file push.token
git clone http://user:$(cat push.token)@127.0.0.1:8418/ site && cd site
echo '<h1>hello</h1>' > index.html && git add . && git commit -m hello
git push origin HEAD:main        # the next request serves it
"""

from looming.config import clock, console, default_network, key, kv_store, main, register, stack

port = key("port", int, default=8080, doc="TCP port the website is served on")
push_port = key("push_port", int, default=8418, doc="TCP port git pushes the site to (smart HTTP)")
listen = key(
    "listen",
    str,
    default="127.0.0.1",
    doc="address both ports listen on (0.0.0.0: every address; on --net direct "
    "and VMs the loopback default means the stack's own address)",
)
push_token_file = key(
    "push_token_file",
    str,
    default="",
    doc="file holding the token pushes must send as HTTP Basic password "
    "(else LOOMING_STORE_TOKEN; without either the push port refuses writes)",
)
push_access = key(
    "push_access", str, default="", doc="access file: per-branch rules (see looming.store.auth)"
)
push_anonymous_read = key(
    "push_anonymous_read",
    bool,
    default=False,
    doc="let anyone clone and fetch the site's repository",
)
website = main(
    "unikernel:StoreWebsite",
    # The repository is state, kept out of the application's sources; point
    # --site-git-repo at a lasting folder for a real deployment.
    [console(), kv_store("_build/site.git", branch="main"), stack(default_network()), clock()],
    keys=[port, push_port, listen, push_token_file, push_access, push_anonymous_read],
)
register("store-website", [website])
