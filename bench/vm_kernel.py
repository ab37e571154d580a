"""The minimal kernel against Debian's cloud kernel: size and boot to first answer.

Builds each example (default: the static and the HTTPS website) for
x86_64 twice, with ``--kernel debian`` and ``--kernel minimal``, and boots
both, interleaved with the unix target in the same rounds (bench/image.py's
machinery: a TAP in a network namespace, ``looming run`` to the first HTTP
answer on the host side, medians). ``--trace`` adds one traced boot of each
image: the kernel's own time to /init is where the two differ. The minimal
kernel is compiled first if the cache lacks it (minutes, once). Run as root:

    .venv/bin/python bench/vm_kernel.py [--quick] [--trace] [--examples a,b]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import image as machinery  # bench/image.py

KERNELS = ("debian", "minimal")
ARCH = "x86_64"


def build(work: Path, names: list[str]) -> dict[str, dict[str, object]]:
    """The unix baseline and an image per kernel, for each example."""
    cases: dict[str, dict[str, object]] = {}
    for example in (e for e in machinery.EXAMPLES_MEASURED if e.name in names):
        for kernel in KERNELS:
            folder = work / kernel
            folder.mkdir(exist_ok=True)
            machinery.progress(f"{example.name} --kernel {kernel}: building the image (twice)")
            options = (*example.vm_options, "--kernel", kernel)
            variant = machinery.Example(
                example.name, example.manifest, example.port, example.tls, (ARCH,), options
            )
            if kernel == KERNELS[0]:
                cases.update(machinery.build_cases(folder, [variant], {ARCH}))
                cases[f"{example.name} {kernel}"] = cases.pop(f"{example.name} {ARCH}")
            else:
                built = machinery.build_vm(folder, variant, ARCH)
                cases[f"{example.name} {kernel}"] = {
                    **built, "port": example.port, "tls": example.tls,
                }  # fmt: skip
    return cases


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one boot per case (default: five)")
    parser.add_argument("--examples", default="static_website,https_website")
    parser.add_argument("--trace", action="store_true", help="also one traced boot per image")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print(
            "bench/vm_kernel.py needs root (a network namespace and a TAP device)", file=sys.stderr
        )
        return 2
    names = args.examples.split(",")
    known = {e.name for e in machinery.EXAMPLES_MEASURED}
    if not set(names) <= known:
        print(f"unknown examples; known: {', '.join(sorted(known))}", file=sys.stderr)
        return 2
    runs = 1 if args.quick else 5
    with tempfile.TemporaryDirectory(prefix="looming-bench-kernel-") as tmp:
        cases = build(Path(tmp), names)
        results = machinery.summarise(cases, machinery.measure(cases, runs))
        stages = machinery.trace_boots(cases) if args.trace else {}
    machinery.report(results, runs)
    if stages:
        machinery.report_stages(stages)
    return 0


if __name__ == "__main__":
    sys.exit(main())
