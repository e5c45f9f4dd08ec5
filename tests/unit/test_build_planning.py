"""Unit tests of the build's pure planning code (no root, no network, seconds)."""

import os
import tomllib

import pytest

from stages import bootpart, fetch, fit, modules, prune, target
from stages.tools import BuildError

TARGET = target.load("debian-arm64")


# --- target configuration ------------------------------------------------------------

def test_unknown_target_names_the_choices():
    with pytest.raises(BuildError, match=r"unknown target 'nope'; choose one of: .*debian-arm64"):
        target.load("nope")


def test_typo_in_target_file_is_named():
    with open(os.path.join(target.TARGET_DIR, "debian-arm64.toml"), "rb") as f:
        raw = tomllib.load(f)
    raw["pakages"] = raw.pop("packages")
    with pytest.raises(BuildError, match=r"x.toml: unknown key pakages"):
        target.parse(raw, "x.toml")


def test_missing_keyring_is_named():
    with open(os.path.join(target.TARGET_DIR, "debian-arm64.toml"), "rb") as f:
        raw = tomllib.load(f)
    raw["archive"][0]["keyring"] = "keys/does-not-exist.gpg"
    with pytest.raises(BuildError, match="keyring keys/does-not-exist.gpg of archive debian not found"):
        target.parse(raw, "x.toml")


def test_mirror_override_replaces_first_archive_only():
    t = target.load("debian-arm64", mirror="http://127.0.0.1:9/debian")
    assert t.archives[0].url == "http://127.0.0.1:9/debian"
    assert t.archives[0].suite == TARGET.archives[0].suite


def test_unknown_board_is_refused():
    with open(os.path.join(target.TARGET_DIR, "debian-arm64.toml"), "rb") as f:
        raw = tomllib.load(f)
    raw["boards"] = ["rpi-3-b", "rpi-9"]
    with pytest.raises(BuildError, match="unknown board 'rpi-9'"):
        target.parse(raw, "x.toml")
    raw["boards"] = ["rpi-5-b"]
    with pytest.raises(BuildError, match="board rpi-5-b has no device tree in Debian's kernel"):
        target.parse(raw, "x.toml")
    raw["boards"] = ["rpi-zero"]
    with pytest.raises(BuildError, match="board rpi-zero cannot run arm64"):
        target.parse(raw, "x.toml")


# --- fetch ---------------------------------------------------------------------------

def test_sources_list_pins_each_archive_to_its_keyring():
    text = fetch.sources_list(TARGET, deb_src=True)
    lines = text.splitlines()
    assert lines[0].startswith("deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] ")
    assert lines[1].startswith("deb-src [signed-by=")
    assert lines[0].endswith(" bookworm main non-free-firmware")


def test_apt_config_never_trusts_host_keys_or_insecure_repos():
    conf = fetch.apt_config(TARGET, fetch.apt_dirs(target.context("debian-arm64")))
    assert 'Dir::Etc::Trusted "/nonexistent";' in conf
    assert 'Acquire::AllowInsecureRepositories "false";' in conf
    assert 'APT::Architecture "arm64";' in conf


def test_deb_filename_encodes_epoch():
    assert fetch.deb_filename("busybox", "1:1.35.0-4+b3", "arm64") == "busybox_1%3a1.35.0-4+b3_arm64.deb"


def test_select_extract_keeps_named_and_the_kernel_only():
    resolved = [("kmod", "30", "arm64"), ("linux-image-6.1.0-50-arm64", "6.1.176-1", "arm64"),
                ("linux-image-arm64", "6.1.176-1", "arm64"), ("raspi-firmware", "1", "all"),
                ("linux-image-6.1.0-50-rt-arm64", "6.1.176-1", "arm64")]
    got = fetch.select_extract(resolved, ["linux-image-arm64", "raspi-firmware"], "arm64")
    assert [p[0] for p in got] == ["linux-image-6.1.0-50-arm64", "linux-image-arm64", "raspi-firmware"]


def test_apt_simulation_lines_parse():
    m = fetch.INST.match("Inst libc6 (2.36-9+deb12u14 Debian:12.15/oldstable [arm64]) []")
    assert m.groups() == ("libc6", "2.36-9+deb12u14", "arm64")


# --- kernel modules ------------------------------------------------------------------

MODULES_DEP = """\
kernel/fs/ext4/ext4.ko: kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko kernel/lib/crc16.ko
kernel/fs/mbcache.ko:
kernel/fs/jbd2/jbd2.ko:
kernel/lib/crc16.ko:
kernel/drivers/mmc/host/sdhci-iproc.ko: kernel/drivers/mmc/host/sdhci-pltfm.ko kernel/drivers/mmc/host/sdhci.ko
kernel/drivers/mmc/host/sdhci-pltfm.ko: kernel/drivers/mmc/host/sdhci.ko
kernel/drivers/mmc/host/sdhci.ko:
kernel/drivers/net/virtio_net.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
"""


def test_modules_plan_adds_dependencies_and_skips_builtins():
    got = modules.plan(["ext4", "sdhci_iproc", "mmc_block"], MODULES_DEP, "kernel/drivers/mmc/core/mmc_block.ko\n")
    assert got == sorted(["kernel/fs/ext4/ext4.ko", "kernel/fs/mbcache.ko", "kernel/fs/jbd2/jbd2.ko",
                          "kernel/lib/crc16.ko", "kernel/drivers/mmc/host/sdhci-iproc.ko",
                          "kernel/drivers/mmc/host/sdhci-pltfm.ko", "kernel/drivers/mmc/host/sdhci.ko"])


def test_modules_plan_names_unknown_module():
    with pytest.raises(BuildError, match="kernel module virtio_gpu not found"):
        modules.plan(["ext4", "virtio_gpu"], MODULES_DEP, "")


def test_module_names_treat_dash_and_underscore_alike():
    assert modules.canonical("kernel/drivers/mmc/host/sdhci-iproc.ko.xz") == "sdhci_iproc"


# --- prune ---------------------------------------------------------------------------

def test_prune_plan():
    files = ["usr/share/doc/python3/copyright", "usr/bin/python3.11", "usr/lib/python3.11/json/__init__.py",
             "usr/lib/python3.11/test/test_json.py", "usr/bin/perl", "etc/ld.so.cache",
             "usr/share/locale/de/LC_MESSAGES/dpkg.mo", "usr/lib/aarch64-linux-gnu/libz.so.1",
             "usr/lib/python3.11/__pycache__/os.cpython-311.opt-1.pyc"]
    build_only = ["usr/bin/perl", "etc/ld.so.cache", "usr/lib/aarch64-linux-gnu/libz.so.1"]
    doomed = prune.plan(files, build_only, keep_owned_by_others=["usr/lib/aarch64-linux-gnu/libz.so.1"])
    assert doomed == {"usr/share/doc/python3/copyright", "usr/lib/python3.11/test/test_json.py", "usr/bin/perl",
                      "usr/share/locale/de/LC_MESSAGES/dpkg.mo",
                      "usr/lib/python3.11/__pycache__/os.cpython-311.opt-1.pyc"}


def test_elf_check_names_missing_library(tmp_path):
    root = tmp_path / "root"
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/lib").mkdir(parents=True)
    # a real host ELF (python's interpreter) in a root that lacks its libraries
    import shutil
    host = os.path.realpath("/bin/ls")
    shutil.copy(host, root / "usr/bin/ls")
    with pytest.raises(BuildError, match=r"pruned image lacks a library: usr/bin/ls needs "):
        prune.check_elves(str(root))


# --- FIT and boot partition ----------------------------------------------------------

def test_its_has_one_configuration_per_board_and_hashes():
    its = fit.render_its("1.0", TARGET, {"arm64": ("6.1.0-50-arm64", "/k/Image.gz")}, "/r/initramfs.cpio.zst", "/dtbs")
    from migos import boards
    for key in TARGET.boards:
        b = boards.BY_KEY[key]
        assert "\t\t%s {" % b.fit_config in its
        assert '/incbin/("/dtbs/%s")' % b.upstream_dtb in its
    assert "\t\tqemu-virt {" in its
    assert its.count('algo = "sha256";') == its.count("/incbin/(")
    assert 'type = "ramdisk";' in its
    assert 'default = "%s";' % boards.BY_KEY[TARGET.boards[0]].fit_config in its
    # qemu virt boots the kernel loaded into its RAM; the Pi one at 0x80000
    assert "kernel-virt" in its and "load = <0x40400000>;" in its and "load = <0x00080000>;" in its


def test_its_compiles_with_dtc(tmp_path):
    """The rendered .its is valid device-tree source (dtc parses it, with stand-in data)."""
    import shutil
    import subprocess
    if not shutil.which("dtc"):
        pytest.skip("dtc (device-tree-compiler) not installed")
    for name in ("Image.gz", "initramfs"):
        (tmp_path / name).write_bytes(b"x" * 16)
    dtbs = tmp_path / "dtbs"
    dtbs.mkdir()
    from migos import boards
    for key in TARGET.boards:
        (dtbs / boards.BY_KEY[key].upstream_dtb).parent.mkdir(exist_ok=True)
        (dtbs / boards.BY_KEY[key].upstream_dtb).write_bytes(b"d" * 8)
    its = fit.render_its("1.0", TARGET, {"arm64": ("6.1", str(tmp_path / "Image.gz"))}, str(tmp_path / "initramfs"), str(dtbs))
    (tmp_path / "m.its").write_text(its)
    subprocess.run(["dtc", "-I", "dts", "-O", "dtb", "-o", str(tmp_path / "m.dtb"), str(tmp_path / "m.its")],
                   check=True, capture_output=True)


def test_bootpart_plan_renames_dtbs_to_firmware_names():
    files = bootpart.plan(TARGET, ["/fw/bootcode.bin", "/fw/start.elf"], "/dtbs")
    assert files["bootcode.bin"] == "/fw/bootcode.bin"
    assert files["migos/bcm2710-rpi-3-b.dtb"] == "/dtbs/broadcom/bcm2837-rpi-3-b.dtb"
    assert not any(k.startswith("migos/") and "virt" in k for k in files)


def test_boot_script_selects_board_and_falls_back():
    ctx = target.context("debian-arm64")
    text = bootpart.render("boot.cmd", **bootpart.template_values(ctx))
    assert 'if test "${fdtfile}" = "broadcom/bcm2837-rpi-3-b.dtb"; then setenv migos_conf "rpi-3-b"; fi' in text
    assert "iminfo ${migos_addr}" in text
    assert text.index("iminfo") < text.index("bootm")
    assert "migos/fallback.env" in text
    config = bootpart.render("config.txt", **bootpart.template_values(ctx))
    assert "os_prefix=migos/" in config and "arm_64bit=1" in config


# --- one-line errors and atomic publishing -------------------------------------------

def test_missing_host_tool_names_the_package():
    from stages import tools
    with pytest.raises(BuildError, match=r"missing host tools? no-such-tool-x, mkimage-nope; install with: "
                                         r"apt-get install mkimage-nope no-such-tool-x"):
        tools.require("no-such-tool-x", "mkimage-nope")
    with pytest.raises(BuildError, match="install with: apt-get install u-boot-tools"):
        old = tools.SEARCH_PATH
        try:
            tools.SEARCH_PATH = "/nonexistent"
            tools.require("mkimage")
        finally:
            tools.SEARCH_PATH = old


def test_a_failed_publish_leaves_the_previous_dist_untouched(tmp_path, monkeypatch):
    """dist/NAME is renamed into place only when complete: a failure midway changes nothing."""
    from stages import dist as distmod
    ctx = target.context("debian-arm64", root=str(tmp_path))
    os.makedirs(ctx.dist)
    (tmp_path / "dist" / "debian-arm64" / "SHA256SUMS").write_text("previous build\n")
    os.makedirs(ctx.path("boot"))
    (tmp_path / "build" / "debian-arm64" / "boot" / "config.txt").write_text("x")

    def boom(*a, **kw):
        raise BuildError("disk full")
    monkeypatch.setattr(distmod, "write_tarball", boom)
    with pytest.raises(BuildError):
        distmod.build_dist(ctx)
    assert os.listdir(ctx.dist) == ["SHA256SUMS"]
    assert sorted(os.listdir(tmp_path / "dist")) == ["debian-arm64"]      # no half-built copy left
    assert (tmp_path / "dist" / "debian-arm64" / "SHA256SUMS").read_text() == "previous build\n"


def test_dpkg_paths_map_onto_the_merged_usr_root():
    from stages import prune
    assert prune.merged_usr("lib/aarch64-linux-gnu/security/pam_unix.so") == \
        "usr/lib/aarch64-linux-gnu/security/pam_unix.so"
    assert prune.merged_usr("sbin/unix_chkpwd") == "usr/sbin/unix_chkpwd"
    assert prune.merged_usr("usr/lib/x") == "usr/lib/x"
    assert prune.merged_usr("etc/pam.d/other") == "etc/pam.d/other"
    assert prune.merged_usr("library/x") == "library/x"


def test_firmware_globs_pick_blobs_and_a_glob_without_a_match_fails(tmp_path):
    from stages import modules
    from stages.tools import BuildError
    fw = tmp_path / "lib" / "firmware" / "brcm"
    fw.mkdir(parents=True)
    for n in ("brcmfmac43455-sdio.bin", "brcmfmac43455-sdio.raspberrypi,4-model-b.txt",
              "brcmfmac43455-sdio.pine64,quartz64-b.txt"):
        (fw / n).write_bytes(b"x")
    got = modules.firmware_files(str(tmp_path), ["brcm/brcmfmac43455-sdio.bin",
                                                 "brcm/brcmfmac43455-sdio.raspberrypi,*.txt"])
    assert [r for r, _ in got] == ["brcm/brcmfmac43455-sdio.bin",
                                   "brcm/brcmfmac43455-sdio.raspberrypi,4-model-b.txt"]
    with pytest.raises(BuildError, match="brcmfmac43430"):
        modules.firmware_files(str(tmp_path), ["brcm/brcmfmac43430-sdio.bin"])
