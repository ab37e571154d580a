"""VM images: a Debian kernel and an initramfs in which the only program is
the Python interpreter running the unikernel (the ``vm`` target)."""
