"""kill -9 migrate at many random instants; the power-cut guarantee holds after every kill
and resuming gives the same disk as an uninterrupted run (root)."""

import os
import random
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import balena_image as bi  # noqa: E402

from migos.stage2 import journal  # noqa: E402

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root (loop devices)")]

MIN_KILLS = int(os.environ.get("MIGOS_CRASH_KILLS", "30"))
PER_ROUND = 11
# kills triggered by a log line, so the narrow windows around injection and the switch are hit
EVENT_KILLS = ["state INJECT", "injected", "state DRAIN", "state CHECK", "state SWITCH",
               "switching the MBR", "state DONE"]


@pytest.fixture(scope="module")
def k(tmp_path_factory):
    return bi.kit(tmp_path_factory.mktemp("migrate-crash"))


def test_kill_resume(k):
    src = k.compressed("gz")
    # without the verify-first pass (a second decompression before the first write, tested in
    # test_migrate_bad_inputs) the kills spread over the writes, which is what this test is for
    args = ["--image", src, "-c", k.config, "--hostname", "crashy", "--no-verify-first"]
    for p in k.nm:
        args += ["--nwmgr-cfg", p]

    # the reference: one uninterrupted run
    ref = k.fresh_disk("crash-ref.img")
    with bi.Loop(ref) as dev:
        t0 = time.monotonic()
        proc = bi.run_migrate("--device", dev, *args)
        T = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr[-2000:]
    holes = k.journal_holes()
    ref_sha = bi.file_sha_except(ref, holes)
    ref_mbr = bi.read_region(ref, 0, 512)
    new_p1 = bi.partitions(ref)[0]
    ref_p1_sha = bi.region_sha(ref, new_p1[1], new_p1[2])
    old_mbr = bi.read_region(k.old, 0, 512)
    old_p1_sha = bi.region_sha(k.old, *k.old_info["p1"])

    class FileDev(object):
        def __init__(self, path):
            self.path, self.size = path, os.path.getsize(path)

        def pread_direct(self, off, n):
            return bi.read_region(self.path, off, n)

    def progress(disk):
        rec = journal.read(FileDev(disk), holes[0][0])
        return "none" if rec is None else "%s/%s" % (rec[1]["state"], rec[1]["done"])

    def guarantee(disk):
        mbr = bi.read_region(disk, 0, 512)
        if mbr == old_mbr:
            assert bi.region_sha(disk, *k.old_info["p1"]) == old_p1_sha, "old p1 modified"
            return "old"
        assert mbr == ref_mbr, "MBR is neither the old one nor the final one"
        assert bi.region_sha(disk, new_p1[1], new_p1[2]) == ref_p1_sha, \
            "MBR switched but resin-boot is not the complete verified one"
        return "new"

    seed = int(os.environ.get("MIGOS_CRASH_SEED", str(int(time.time()))))
    rng = random.Random(seed)
    kills, outcomes, rounds = [], [], 0
    while len(kills) < MIN_KILLS or rounds < 2:
        rounds += 1
        assert rounds <= 8, "could not kill often enough (seed %d)" % seed
        disk = k.fresh_disk("crash-%d.img" % rounds)
        with bi.Loop(disk) as dev:
            plan = [("time", T * (j + rng.random()) / (PER_ROUND - 1)) for j in range(PER_ROUND)]
            if rounds == 2:
                plan = [("event", e) for e in EVENT_KILLS] + plan[:4]
            for kind, when in plan:
                p = subprocess.Popen(bi.migrate_argv("--device", dev, *args),
                                     env=bi.migrate_env(MIGOS_JOURNAL_INTERVAL="0"),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     universal_newlines=True)
                if kind == "time":
                    time.sleep(when)
                else:
                    for line in p.stderr:
                        if when in line:
                            break
                alive = p.poll() is None
                if alive:
                    p.kill()
                p.stderr.close()
                p.wait()
                if alive:
                    kills.append((rounds, kind, when, progress(disk)))
                if not alive:
                    assert p.returncode == 0, "migrate failed after resume (seed %d)" % seed
                outcomes.append(guarantee(disk))
            proc = bi.run_migrate("--device", dev, *args)
        assert proc.returncode == 0, "resume failed (seed %d): %s" % (seed, proc.stderr[-2000:])
        assert guarantee(disk) == "new"
        assert bi.file_sha_except(disk, holes) == ref_sha, \
            "resumed disk differs from the uninterrupted one (seed %d)" % seed
        os.unlink(disk)
    assert len(kills) >= MIN_KILLS
    assert "old" in outcomes and "new" in outcomes
    # kills were spread over the whole run: before the first write, while writing, after the
    # last segment, and after the switch
    seen = set(pr for *_x, pr in kills)
    nseg = int(ref_journal_done(ref))
    assert "none" in seen or "WRITE/0" in seen, seen
    assert len([s for s in seen if s.startswith("WRITE/")]) >= 4, seen
    assert ("WRITE/%d" % nseg) in seen or ("SWITCH/%d" % nseg) in seen, seen
    assert ("DONE/%d" % nseg) in seen, seen
    print("seed %d: %d kills in %d rounds, run %.2fs, journal states at kills: %s" % (
        seed, len(kills), rounds, T, sorted(seen)))


def ref_journal_done(path):
    class FileDev(object):
        size = os.path.getsize(path)

        def pread_direct(self, off, n):
            return bi.read_region(path, off, n)
    end = 4 * bi.MIB + 64 * bi.MIB
    return journal.read(FileDev(), -(-end // (4 * bi.MIB)) * 4 * bi.MIB)[1]["done"]
