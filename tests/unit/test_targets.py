"""The target files (multistrap/*.toml), their keys and the per-target planning (no root, no network)."""

import os
import re
import subprocess
import tomllib

import pytest

from migos import boards
from stages import bootpart, fetch, fit, kernel, target
from stages.tools import BuildError

KEYS = os.path.join(target.REPO, "keys")
# keys/README.md (copied from ../shared/keys/README.md): the primary key fingerprints.
FINGERPRINTS = {
    "raspbian-archive-keyring.gpg": "A0DA38D0D76E8B5D638872819165938D90FDDD2E",
    "raspberrypi-archive-keyring.gpg": "CF8A1AF502A2AA2D763BAE7E82B129927FA3303E",
}


def raw(name):
    with open(os.path.join(target.TARGET_DIR, name + ".toml"), "rb") as f:
        return tomllib.load(f)


@pytest.mark.parametrize("name", ["debian-arm64", "debian-armhf", "raspbian-armhf"])
def test_every_target_loads(name):
    t = target.load(name)
    assert t.name == name
    assert t.boards and all(t.isa in boards.BY_KEY[b].arches for b in t.boards)


@pytest.mark.parametrize("keyring", sorted(FINGERPRINTS))
def test_raspbian_keyrings_have_the_published_fingerprints(keyring, tmp_path):
    out = subprocess.run(["gpg", "--homedir", str(tmp_path), "--batch", "--with-colons", "--show-keys",
                          os.path.join(KEYS, keyring)], capture_output=True, text=True, check=True).stdout
    lines = out.splitlines()
    primary = [lines[i + 1].split(":")[9] for i, l in enumerate(lines) if l.startswith("pub:")]
    assert primary == [FINGERPRINTS[keyring]]


def test_keys_readme_lists_the_same_fingerprints():
    text = open(os.path.join(KEYS, "README.md")).read()
    for name, fpr in FINGERPRINTS.items():
        row = [l for l in text.splitlines() if name in l and "|" in l]
        assert row and fpr in re.sub(r"\s", "", row[0])


def test_raspbian_target_uses_the_repository_keyrings():
    t = target.load("raspbian-armhf")
    assert {a.name: os.path.relpath(a.keyring_path(), target.REPO) for a in t.archives} == {
        "raspbian": "keys/raspbian-archive-keyring.gpg", "raspberrypi": "keys/raspberrypi-archive-keyring.gpg"}
    line = fetch.sources_list(t).splitlines()
    assert line[0].startswith("deb [signed-by=%s] http://raspbian.raspberrypi.org/raspbian bookworm main"
                              % os.path.join(KEYS, "raspbian-archive-keyring.gpg"))


# --- mirror overrides ------------------------------------------------------------------

def test_mirror_url_replaces_the_first_archive():
    t = target.load("raspbian-armhf", mirror="http://127.0.0.1:9/r")
    assert [a.url for a in t.archives] == ["http://127.0.0.1:9/r", "http://archive.raspberrypi.org/debian"]


def test_named_mirrors_replace_each_archive():
    t = target.load("raspbian-armhf", mirror="raspberrypi=http://h/rpi, raspbian=http://h/r")
    assert [a.url for a in t.archives] == ["http://h/r", "http://h/rpi"]
    assert [a.keyring for a in t.archives] == [a.keyring for a in target.load("raspbian-armhf").archives]


def test_named_mirror_of_an_unknown_archive_is_named():
    with pytest.raises(BuildError, match=r"has no archive 'debain'; its archives are raspbian, raspberrypi"):
        target.load("raspbian-armhf", mirror="debain=http://h/d")


def test_mirror_list_without_names_is_refused():
    with pytest.raises(BuildError, match=r"is not NAME=URL"):
        target.load("raspbian-armhf", mirror="http://a/x,http://b/y")


def test_mirror_must_be_http():
    with pytest.raises(BuildError, match=r"URL 'ftp://x' is not http"):
        target.load("debian-armhf", mirror="ftp://x")


# --- validation ------------------------------------------------------------------------

def test_armv6_boards_need_an_armv6_userland():
    r = raw("debian-armhf")
    r["boards"] = ["rpi-zero"]
    with pytest.raises(BuildError, match="board rpi-zero cannot run armhf"):
        target.parse(r, "x.toml")
    r = raw("raspbian-armhf")
    r["boards"] = ["rpi-zero", "rpi-b"]
    assert target.parse(r, "x.toml").isa == "armv6"


def test_unknown_kernel_layout_is_named():
    r = raw("raspbian-armhf")
    r["kernel_layout"] = "rpi"
    with pytest.raises(BuildError, match="kernel_layout 'rpi' is not one of debian, raspberrypi"):
        target.parse(r, "x.toml")


# --- where the kernel's files are -------------------------------------------------------

def test_dtb_paths_per_layout_and_arch():
    pi3 = boards.BY_KEY["rpi-3-b"]
    assert kernel.dtb_relpath(pi3, target.load("debian-arm64")) == "broadcom/bcm2837-rpi-3-b.dtb"
    assert kernel.dtb_relpath(pi3, target.load("debian-armhf")) == "bcm2837-rpi-3-b.dtb"
    assert kernel.dtb_relpath(pi3, target.load("raspbian-armhf")) == "bcm2710-rpi-3-b.dtb"
    assert kernel.uboot_fdtfile(pi3, "armhf") == "bcm2837-rpi-3-b.dtb"


def test_armhf_fit_and_boot_script(tmp_path):
    t = target.load("debian-armhf")
    its = fit.render_its("1.0", t, {"armmp": ("6.1.0-1-armmp", "/k/z.gz")}, "/r/i", "/dtbs")
    assert 'arch = "arm";' in its and "load = <0x00008000>" in its and "load = <0x40008000>" in its
    assert '/incbin/("/dtbs/bcm2836-rpi-2-b.dtb")' in its
    files = bootpart.plan(t, ["/fw/start.elf"], "/dtbs")
    assert files["migos/bcm2709-rpi-2-b.dtb"] == "/dtbs/bcm2836-rpi-2-b.dtb"
    ctx = target.Context(target=t, build=str(tmp_path), cache=str(tmp_path), dist=str(tmp_path),
                         source_date_epoch=0, version="1.0")
    values = bootpart.template_values(ctx)
    assert "arm_64bit=0" in bootpart.render("config.txt", **values)
    assert 'if test "${fdtfile}" = "bcm2836-rpi-2-b.dtb"; then setenv migos_conf "rpi-2-b"; fi' in \
        bootpart.render("boot.cmd", **values)


def test_raspberrypi_kernel_tree_is_found(tmp_path):
    (tmp_path / "boot").mkdir()
    (tmp_path / "boot" / "kernel7.img").write_bytes(b"k7")
    (tmp_path / "boot" / "kernel.img").write_bytes(b"k6")
    for rel in ("6.1.21+", "6.1.21-v7+", "6.1.21-v7l+", "6.1.21-v8+"):
        (tmp_path / "lib" / "modules" / rel).mkdir(parents=True)
    assert kernel.find_rpi_kernel(str(tmp_path), "v7") == ("6.1.21-v7+", str(tmp_path / "boot" / "kernel7.img"))
    assert kernel.find_rpi_kernel(str(tmp_path), "v6") == ("6.1.21+", str(tmp_path / "boot" / "kernel.img"))
    with pytest.raises(BuildError, match="expected /boot/kernel7l.img"):
        kernel.find_rpi_kernel(str(tmp_path), "v7l")


# --- which archive apt blames ------------------------------------------------------------

def test_blame_names_the_archive_and_prefers_the_gpg_reason():
    t = target.load("raspbian-armhf", mirror="raspbian=http://h:1/r,raspberrypi=http://h:1/rpi")
    out = ("Get:1 http://h:1/r bookworm InRelease\n"
           "W: GPG error: http://h:1/rpi bookworm InRelease: The following signatures were invalid: EXPSIG 1\n"
           "E: The repository 'http://h:1/rpi bookworm InRelease' is not signed.\n")
    archive, line = fetch.blame(out, t.archives)
    assert archive.name == "raspberrypi" and "EXPSIG" in line
    archive, line = fetch.blame("E: Failed to fetch http://h:1/r/pool/main/b/busybox/busybox_1_armhf.deb  "
                                "Hash Sum mismatch\n", t.archives)
    assert archive.name == "raspbian" and line.endswith("Hash Sum mismatch")
    assert fetch.blame("E: something else\n", t.archives) == (None, "E: something else")


def test_keyrings_are_copied_readable_for_apt(tmp_path):
    """apt verifies as _apt: a keyring in a private directory would read as NO_PUBKEY."""
    t = target.load("raspbian-armhf")
    got = fetch.install_keyrings(t, str(tmp_path))
    assert sorted(got) == ["raspberrypi", "raspbian"]
    for a in t.archives:
        assert open(got[a.name], "rb").read() == open(a.keyring_path(), "rb").read()
        assert os.stat(got[a.name]).st_mode & 0o777 == 0o644
    assert "[signed-by=%s]" % got["raspbian"] in fetch.sources_list(t, keyrings=got)
