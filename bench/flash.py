#!/usr/bin/env python3
"""Benchmark: migrate vs ``zstd -dc | dd`` (and ``gzip -dc | dd``) on the same loop device.

    sudo /work/main/.venv/bin/python bench/flash.py [--size-mib 1024] [--work DIR] [--keep]

Builds a ~1 GiB synthetic balenaOS image (half random, half compressible content in the
file systems), compresses it as .zst and .gz, builds an old-OS disk, attaches ONE loop device
(direct I/O to its backing file when the kernel allows) and, for each format, times

* the pipe: ``DEC -dc IMG | dd of=LOOP bs=4M oflag=direct conv=fsync``
* ``migos migrate --device LOOP --image IMG`` on the old disk (restored before each run),
  reporting its own phase timings (write phase = streaming + hashing + O_DIRECT writes;
  verify = O_DIRECT read-back; inject) and its peak RSS (``wait4``).

Prints the ratios; targets: write phase <= 1.1x the pipe, whole run <= 1.5x, RSS < 64 MiB.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
import balena_image as bi  # noqa: E402

MIB = 1 << 20


def sh(cmd):
    subprocess.run(cmd, shell=True, check=True)


def timed_pipe(dec, img, dev):
    t = time.monotonic()
    sh("%s -dc %s | dd of=%s bs=4M oflag=direct conv=fsync status=none" % (dec, img, dev))
    return time.monotonic() - t


def restore_old(template, dev, upto):
    """Put the old disk's first ``upto`` bytes back (MBR, old p1, journal area) via the loop."""
    sh("dd if=%s of=%s bs=4M count=%d oflag=direct conv=fsync status=none" % (
        template, dev, -(-upto // (4 * MIB))))


def run_migrate(dev, img, cfg):
    argv = bi.migrate_argv("--device", dev, "--image", img, "-c", cfg)
    t = time.monotonic()
    p = subprocess.Popen(argv, env=bi.migrate_env(), stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, universal_newlines=True)
    err = p.stderr.read()
    _pid, status, ru = os.wait4(p.pid, 0)
    wall = time.monotonic() - t
    p.returncode = os.waitstatus_to_exitcode(status) if hasattr(os, "waitstatus_to_exitcode") \
        else status >> 8
    if p.returncode != 0:
        raise SystemExit("migrate failed:\n" + err[-3000:])
    last = [json.loads(l) for l in err.splitlines() if l.startswith("{")][-1]
    return wall, ru.ru_maxrss * 1024, last.get("timings", {})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--work", default="/var/tmp/migos-bench")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--formats", default="zst,gz")
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (loop device)")
    os.makedirs(a.work, exist_ok=True)
    raw = os.path.join(a.work, "balena-bench.img")
    boot, state = 40, 20
    root = (a.size_mib - 4 - boot - state - 8) * 2 // 5
    data = a.size_mib - 4 - boot - 2 * root - state - 8
    t = time.monotonic()
    if not os.path.exists(raw):
        bi.make_balena_image(raw, "raspberrypi3", boot_mib=boot, root_mib=root,
                             state_mib=state, data_mib=data, fill=0.7, random_fraction=0.4,
                             kernel_mib=8)
    imgs = {}
    for fmt in a.formats.split(","):
        dst = raw + "." + fmt
        if not os.path.exists(dst):
            if fmt == "zst":
                sh("zstd -q -f -T2 -10 %s -o %s" % (raw, dst))
            elif fmt == "gz":
                sh("pigz -p 2 -6 -c %s > %s" % (raw, dst))
        imgs[fmt] = dst
    img_size = os.path.getsize(raw)
    old = os.path.join(a.work, "old-template.img")
    disk_mib = 260 + 8 + img_size // MIB + 64
    if not os.path.exists(old):
        bi.make_old_os_disk(old, disk_mib, 4, 256)
    disk = os.path.join(a.work, "disk.img")
    shutil.copyfile(old, disk)
    cfg = os.path.join(a.work, "config.json")
    with open(cfg, "w") as f:
        json.dump(bi.CONFIG, f)
    print("setup %.0fs: image %d MiB; %s" % (time.monotonic() - t, img_size // MIB, ", ".join(
        "%s %d MiB" % (k, os.path.getsize(v) // MIB) for k, v in sorted(imgs.items()))))
    dev = subprocess.run(["losetup", "-f", "--show", "--direct-io=on", disk], check=True,
                         stdout=subprocess.PIPE).stdout.decode().strip()
    results = {}
    try:
        dio = open("/sys/block/%s/loop/dio" % os.path.basename(dev)).read().strip()
        print("loop device %s (direct I/O to backing file: %s)" % (dev, dio))
        restore_upto = (4 + 256 + 8) * MIB
        for fmt, img in sorted(imgs.items(), reverse=True):
            dec = {"zst": "zstd -q", "gz": "gzip"}[fmt]
            pipes, runs = [], []
            for _rep in range(a.reps):  # interleaved, so load changes hit both sides alike
                pipes.append(timed_pipe(dec, img, dev))
                restore_old(old, dev, restore_upto)
                runs.append(run_migrate(dev, img, cfg))
            pipe_t = min(pipes)
            wall_b, _rss, tm_b = min(runs, key=lambda x: x[0])
            write_b = min(r[2].get("write_phase_s", 0) for r in runs)
            rss = max(r[1] for r in runs)
            results[fmt] = dict(pipe_s=[round(x, 2) for x in pipes],
                                migrate_s=[round(r[0], 2) for r in runs],
                                write_phase_s=[r[2].get("write_phase_s") for r in runs],
                                verify_wait_s=[r[2].get("verify_s") for r in runs],
                                whole_ratio=round(wall_b / pipe_t, 2),
                                write_ratio=round(write_b / pipe_t, 2),
                                peak_rss_mib=round(rss / MIB, 1))
            print("%s (best of %d): pipe %.2fs | migrate %.2fs (write phase %.2fs incl. "
                  "overlapped read-back, waiting for verify %.2fs, inject %.2fs) | write ratio "
                  "%.2fx (target <= 1.1), whole ratio %.2fx (target <= 1.5) | peak RSS %.1f MiB "
                  "(target < 64)" % (
                      fmt, a.reps, pipe_t, wall_b, write_b, tm_b.get("verify_s", 0),
                      tm_b.get("inject_s", 0), results[fmt]["write_ratio"],
                      results[fmt]["whole_ratio"], results[fmt]["peak_rss_mib"]))
    finally:
        subprocess.run(["losetup", "-d", dev])
        if not a.keep:
            shutil.rmtree(a.work, ignore_errors=True)
    print(json.dumps(results, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
