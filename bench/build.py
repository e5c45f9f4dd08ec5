#!/usr/bin/env python3
"""Build benchmark: cold, no-op and warm builds of one target in a fresh clone, one run.

    .venv/bin/python bench/build.py [--target debian-arm64] [--keep DIR]

cold   = empty build/ (downloads included); no-op = `doit build` again;
warm   = `doit clean` then `doit build` (download cache kept).
Also prints the initramfs size (compressed, unpacked) and whether the cold and the warm
build produced byte-identical artefacts (SHA256SUMS compared). Targets on 2 cores:
warm < 240 s, no-op < 2 s, initramfs < 30 MB compressed and < 110 MB unpacked.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def doit(clone, *args):
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "doit"] + list(args), cwd=clone, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    took = time.monotonic() - start
    if proc.returncode != 0:
        sys.exit("doit %s failed:\n%s" % (" ".join(args), proc.stdout[-3000:]))
    return took, proc.stdout


def steps(output):
    """{step: seconds} from the reporter's '   step: 12.3 s' lines."""
    out = {}
    for line in output.splitlines():
        if line.startswith("   ") and line.rstrip().endswith(" s") and ":" in line:
            name, secs = line.strip().rsplit(":", 1)
            out[name] = float(secs.strip()[:-2])
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="debian-arm64")
    ap.add_argument("--keep", help="clone into DIR and keep it")
    args = ap.parse_args()
    clone = args.keep or tempfile.mkdtemp(prefix="migos-bench-")
    if os.path.exists(clone):
        shutil.rmtree(clone)
    subprocess.run(["git", "clone", "-q", REPO, clone], check=True)
    var = "target=" + args.target
    dist = os.path.join(clone, "dist", args.target)
    try:
        cold, out_cold = doit(clone, "build", var)
        sums_cold = open(os.path.join(dist, "SHA256SUMS")).read()
        noop, _ = doit(clone, "build", var)
        doit(clone, "clean", var)
        warm, out_warm = doit(clone, "build", var)
        sums_warm = open(os.path.join(dist, "SHA256SUMS")).read()
        packed = os.path.getsize(os.path.join(dist, "initramfs.cpio.zst"))
        unpacked = int(open(os.path.join(clone, "build", args.target, "initramfs.size")).read())
    finally:
        if not args.keep:
            shutil.rmtree(clone, ignore_errors=True)
    differing = sorted({l.split("  ", 1)[1] for l in set(sums_cold.splitlines()) ^ set(sums_warm.splitlines())})
    print("target                      %s" % args.target)
    print("cold build (empty cache)    %7.1f s" % cold)
    print("warm build (doit clean)     %7.1f s   target < 240 s   %s" % (warm, "ok" if warm < 240 else "OVER"))
    print("no-op build                 %7.2f s   target < 2 s     %s" % (noop, "ok" if noop < 2 else "OVER"))
    print("initramfs compressed        %7.1f MB  target < 30 MB   %s" % (packed / 1e6, "ok" if packed < 30e6 else "OVER"))
    print("initramfs unpacked          %7.1f MB  target < 110 MB  %s" % (unpacked / 1e6, "ok" if unpacked < 110e6 else "OVER"))
    print("cold vs warm artefacts      %s" % ("byte-identical" if not differing else "DIFFER: " + ", ".join(differing)))
    print("warm build by step          %s" % ", ".join("%s %.0f s" % kv for kv in steps(out_warm).items()))
    return 0 if not differing else 1


if __name__ == "__main__":
    sys.exit(main())
