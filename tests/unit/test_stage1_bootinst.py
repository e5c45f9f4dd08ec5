"""init / restore-boot on fixture trees (no root): what lands on the boot partition, the
config.txt switch at every instant of a power cut, --pretend, and the exact round trip."""

import json
import os

import pytest

import os_fixtures as fx
from migos import boards
from migos.errors import MigosError
from migos.stage1 import bootcfg, bootinst, tarball
from conftest import run_migos


def tree_bytes(root):
    """{relative path: bytes} plus directories, of everything under root."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root) + "/"] = None
        for n in filenames:
            p = os.path.join(dirpath, n)
            with open(p, "rb") as f:
                out[os.path.relpath(p, root)] = f.read()
    return out


@pytest.fixture
def setup(tmp_path):
    def make(kind="buster", device_type="raspberrypi3"):
        root = fx.make_tree(str(tmp_path / kind), kind)
        disk = fx.make_disk_image(str(tmp_path / "disk.img"))
        cfg = fx.config_json(str(tmp_path / "config.json"), device_type=device_type)
        tar = tarball.make_fake(str(tmp_path / "tar"))
        return root, disk, cfg, tar
    return make


def init_args(root, disk, cfg, tar, *extra):
    return ["init", "--root", root, "-c", cfg, "-v", "2.80.3", "--migos-tarball", tar,
            "--disk", disk, "--no-api-check", "--no-vpn-check", "--log-level", "error"] + list(extra)


@pytest.mark.parametrize("kind,dt", [("buster", "raspberrypi3"), ("bullseye", "raspberrypi0-2w-64"),
                                     ("bookworm", "raspberrypi4-64"),
                                     ("debian", "raspberrypicm4-ioboard")])
def test_init_then_restore_gives_back_every_file(setup, kind, dt):
    root, disk, cfg, tar = setup(kind, dt)
    before = tree_bytes(root)
    r = run_migos(*init_args(root, disk, cfg, tar))
    assert r.returncode == 0, r.stderr
    boot = os.path.join(root, "boot/firmware" if kind in ("bookworm", "debian") else "boot")
    names = set(os.listdir(boot))
    assert {"boot.scr", "migos.itb", "migos"} <= names
    # firmware and cmdline.txt of the old OS are not replaced
    for keep in ("start.elf", "bootcode.bin", "cmdline.txt", "fixup.dat"):
        with open(os.path.join(boot, keep), "rb") as f:
            assert f.read() == before[os.path.relpath(os.path.join(boot, keep), root)]
    m = os.path.join(boot, "migos")
    for f in ("config.json", "migrate.json", "fallback.env", "u-boot.bin", "cmdline.txt",
              "backup/config.txt", "backup/manifest.json"):
        assert os.path.isfile(os.path.join(m, f)), f
    conns = os.listdir(os.path.join(m, "system-connections"))
    assert conns and all(os.stat(os.path.join(m, "system-connections", c)).st_mode & 0o777 == 0o600
                         for c in conns)
    settings = json.load(open(os.path.join(m, "migrate.json")))
    assert settings["device_type"] == dt and settings["image"]["version"] == "2.80.3"
    assert settings["hostname"] == open(os.path.join(root, "etc/hostname")).read().strip()
    with open(os.path.join(boot, "config.txt"), "rb") as f:
        cfg_txt = f.read()
    board = boards.by_model(fx.MODELS[kind])
    eff = bootcfg.effective(cfg_txt.decode(), board.key)
    assert eff["os_prefix"] == "migos/" and eff["kernel"] == "u-boot.bin" and eff["arm_64bit"] == "1"
    assert bootinst.state(boot) == "active"

    r = run_migos("restore-boot", "--root", root, "--log-level", "error")
    assert r.returncode == 0, r.stderr
    assert tree_bytes(root) == before


def test_fallback_env_records_the_old_kernel(setup):
    root, disk, cfg, tar = setup("bookworm", "raspberrypi4-64")
    boot = os.path.join(root, "boot/firmware")
    entry = bootcfg.fallback_entry(boot, boards.by_key("rpi-4-b"))
    assert entry == {"fallback_kernel": "kernel8.img", "fallback_initrd": "initramfs8",
                     "fallback_cmdline": fx.boot_files("bookworm")["cmdline.txt"].decode().strip(),
                     "fallback_dtb": "bcm2711-rpi-4-b.dtb", "fallback_arch": "arm64"}
    root2, _, _, _ = setup("buster")
    e2 = bootcfg.fallback_entry(os.path.join(root2, "boot"), boards.by_key("rpi-3-b-plus"))
    assert e2["fallback_kernel"] == "kernel7.img" and e2["fallback_arch"] == "arm"
    assert e2["fallback_initrd"] == ""
    text = bootcfg.fallback_env_text(e2)
    assert text.splitlines()[0] == "fallback_kernel=kernel7.img"
    assert all("=" in ln for ln in text.splitlines())
    # a 64-bit kernel named by kernel= is recognised by its header, not its name
    with open(os.path.join(root2, "boot/config.txt"), "a") as f:
        f.write("kernel=custom.img\n")
    with open(os.path.join(root2, "boot/custom.img"), "wb") as f:
        f.write(fx.arm64_image())
    e3 = bootcfg.fallback_entry(os.path.join(root2, "boot"), boards.by_key("rpi-3-b-plus"))
    assert e3["fallback_kernel"] == "custom.img" and e3["fallback_arch"] == "arm64"


def test_pretend_writes_nothing(setup, tmp_path):
    root, disk, cfg, tar = setup("buster")
    work = str(tmp_path / "work")
    os.makedirs(work)
    before, before_work = tree_bytes(root), tree_bytes(work)
    r = run_migos(*init_args(root, disk, cfg, tar, "--pretend", "-w", work))
    assert r.returncode == 0, r.stderr
    assert "would append config.txt" in r.stdout
    r = run_migos("takeover", "--root", root, "-c", cfg, "-v", "2.80.3", "--migos-tarball", tar,
                  "--disk", disk, "--no-api-check", "--no-vpn-check", "--pretend", "-w", work,
                  "--log-level", "error")
    assert r.returncode == 0, r.stderr
    r = run_migos("backup", "--root", root, "--out", str(tmp_path / "bk"), "--pretend",
                  "--log-level", "error")
    assert r.returncode == 0, r.stderr
    assert not os.path.exists(str(tmp_path / "bk"))
    assert tree_bytes(root) == before and tree_bytes(work) == before_work
    # and restore-boot --pretend after a real init
    assert run_migos(*init_args(root, disk, cfg, tar)).returncode == 0
    mid = tree_bytes(root)
    r = run_migos("restore-boot", "--root", root, "--pretend", "--log-level", "error")
    assert r.returncode == 0 and tree_bytes(root) == mid


def test_init_refuses_twice_and_failed_checks_write_nothing(setup):
    root, disk, cfg, tar = setup("buster")
    assert run_migos(*init_args(root, disk, cfg, tar)).returncode == 0
    r = run_migos(*init_args(root, disk, cfg, tar))
    assert r.returncode == 2 and "restore-boot" in r.stderr
    assert run_migos("restore-boot", "--root", root).returncode == 0
    before = tree_bytes(root)
    # a device type that does not match the board: exit 2, nothing written
    cfg4 = fx.config_json(cfg, device_type="raspberrypi4-64")
    r = run_migos(*init_args(root, disk, cfg4, tar))
    assert r.returncode == 2
    assert "device-type" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert tree_bytes(root) == before


def _effective_for(data, board):
    return bootcfg.effective(data.decode("utf-8", "replace"), board.key)


@pytest.mark.parametrize("kind", ["buster", "bookworm"])
def test_config_txt_boots_old_or_migos_at_every_instant(setup, kind):
    """Simulate a power cut at every byte of the append and at the switch: the firmware
    sees either exactly the old OS's settings or the MIGOS ones."""
    root, disk, cfg, tar = setup(kind, "raspberrypi4-64" if kind == "bookworm" else "raspberrypi3")
    board = boards.by_model(fx.MODELS[kind])
    boot = os.path.join(root, "boot/firmware" if kind == "bookworm" else "boot")
    with open(os.path.join(boot, "config.txt"), "rb") as f:
        old = f.read()
    t = tarball.load(tar)
    block, marker = bootinst.inert_block(old, t.migos_config)
    old_eff = _effective_for(old, board)
    # 1. the append, torn at any byte: the old settings, unchanged
    for cut in range(len(block) + 1):
        assert _effective_for(old + block[:cut], board) == old_eff, cut
    # the marker never straddles a 512-byte sector
    assert marker // 512 == (marker + 5) // 512
    assert (old + block)[marker:marker + 6] == bootinst.MARK_OFF
    # 2. the switch: one sector changes, and after it MIGOS's settings win
    new = bytearray(old + block)
    new[marker:marker + 6] = bootinst.MARK_ON
    changed = {i // 512 for i in range(len(new)) if new[i] != (old + block)[i]}
    assert len(changed) == 1
    eff = _effective_for(bytes(new), board)
    assert eff["os_prefix"] == "migos/" and eff["kernel"] == "u-boot.bin"
    assert eff["arm_64bit"] == "1"


def test_marker_is_moved_off_a_sector_boundary():
    for n in range(400, 1100):
        old = (b"x" * (n - 1)) + b"\n"
        block, marker = bootinst.inert_block(old, "os_prefix=migos/\nkernel=u-boot.bin\n")
        assert marker // 512 == (marker + 5) // 512
        assert (old + block)[marker:marker + 6] == b"[none]"


def test_restore_after_a_cut_before_the_switch(setup):
    root, disk, cfg, tar = setup("buster")
    before = tree_bytes(root)
    boot = os.path.join(root, "boot")
    t = tarball.load(tar)
    # run install but stop right before the switch
    real_flip = bootinst.flip
    bootinst.flip = lambda *a: (_ for _ in ()).throw(MigosError("power cut"))
    try:
        with pytest.raises(MigosError):
            bootinst.install(boot, t, {"migos/config.json": b"{}"})
    finally:
        bootinst.flip = real_flip
    assert bootinst.state(boot) == "installed"
    bootinst.restore(boot)
    assert tree_bytes(root) == before


def test_tarball_must_match_sha256sums(tmp_path):
    path = tarball.make_fake(str(tmp_path))
    tarball.load(path)
    with open(path, "ab") as f:
        f.write(b"x")
    with pytest.raises(MigosError) as e:
        tarball.load(path)
    assert "SHA256SUMS" in str(e.value)


def test_restore_refused_after_stage2_wrote_its_journal(setup):
    root, disk, cfg, tar = setup("buster")
    assert run_migos(*init_args(root, disk, cfg, tar)).returncode == 0
    man = json.load(open(os.path.join(root, "boot/migos/backup/manifest.json")))
    assert man["disk"] == disk
    from migos.stage2 import journal, layout
    with open(disk, "r+b") as f:          # what stage 2 does first: its journal, where stage 2 puts it
        mbr = f.read(512)
        base = layout.journal_candidates(mbr)[0]
        f.seek(journal.slot_offset(base, 1))
        f.write(journal.encode(1, {"v": journal.VERSION, "state": "WRITE"}))
    mid = tree_bytes(root)
    r = run_migos("restore-boot", "--root", root)
    assert r.returncode == 2 and "cannot be given back" in r.stderr
    assert tree_bytes(root) == mid


@pytest.mark.parametrize("content,ok", [(b"\x1f\x8b\x08rest", True), (b"\xfd7zXZ\x00rest", True),
                                        (b"(\xb5/\xfdrest", True), (b"PK\x03\x04rest", True),
                                        (b"\x00" * 510 + b"\x55\xaa", True),
                                        (b"<html>not an image</html>", False)])
def test_image_must_look_like_an_image(setup, tmp_path, content, ok):
    root, disk, cfg, tar = setup("buster")
    img = str(tmp_path / "balena.img")
    with open(img, "wb") as f:
        f.write(content)
    before = tree_bytes(root)
    r = run_migos("init", "--root", root, "-c", cfg, "-i", img, "--migos-tarball", tar, "--disk",
                  disk, "--no-api-check", "--no-vpn-check", "--pretend", "--log-level", "error")
    assert (r.returncode == 0) == ok, r.stderr
    if not ok:
        assert "is not a balenaOS image" in r.stderr and r.returncode == 2
    assert tree_bytes(root) == before
