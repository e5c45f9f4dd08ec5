"""The board matrix: board -> FIT configuration -> firmware kernel file -> U-Boot, as the build
plans it and as ``migos diagnostic`` reports it (both read migos.boards, so they must agree);
an old ``kernel=`` line; the target files' kernel-file -> U-Boot mapping and its errors."""

import os
import types

import pytest

import os_fixtures as fx
from conftest import run_migos
from migos import boards
from migos.stage1 import bootinst, checks, tarball

# the SoC a board's upstream device tree names -> the firmware's 32-bit kernel file
SOC_KERNEL = {"bcm2835": "kernel.img", "bcm2836": "kernel7.img", "bcm2837": "kernel7.img",
              "bcm2711": "kernel7l.img"}


@pytest.mark.parametrize("board", [b for b in boards.BOARDS], ids=lambda b: b.key)
def test_every_board_has_its_kernel_file(board):
    if board.upstream_dtb is None:          # Pi 5: no 32-bit boot, no Debian 6.1 device tree
        assert board.kernel32 is None and board.arches == ("arm64",)
        return
    soc = os.path.basename(board.upstream_dtb).split("-")[0]
    assert board.kernel32 == SOC_KERNEL[soc]
    assert boards.firmware_kernel(board) == board.kernel32
    assert boards.firmware_kernel(board, 64) == "kernel8.img"
    # U-Boot's ${fdtfile} names of the board are of the same SoC (boot.scr matches on them)
    assert board.uboot_dtbs and all(n.startswith(soc + "-rpi-") for n in board.uboot_dtbs)
    # ARMv6-only boards are exactly the kernel.img ones
    assert (board.kernel32 == "kernel.img") == (board.arches == ("armv6",))


def test_group_by_kernel_keeps_order_and_covers_every_32bit_board():
    keys = [b.key for b in boards.BOARDS if b.kernel32]
    groups = boards.group_by_kernel(keys)
    assert list(groups) == ["kernel.img", "kernel7.img", "kernel7l.img"]
    assert groups["kernel.img"][:2] == ["rpi-b", "rpi-b-plus"]
    assert sorted(k for ks in groups.values() for k in ks) == sorted(keys)
    assert boards.group_by_kernel(["rpi-3-b", "rpi-4-b"], bits=64) == {"kernel8.img": ["rpi-3-b", "rpi-4-b"]}


@pytest.mark.parametrize("board", [b for b in boards.BOARDS if b.kernel32], ids=lambda b: b.key)
@pytest.mark.parametrize("arch", ["armv6", "armhf", "arm64"])
def test_diagnostic_reports_the_fit_configuration_and_kernel_file(board, arch):
    model = board.models[0] + " 1.0"
    assert boards.by_model(model) is board
    ctx = types.SimpleNamespace(board=board, model=model, arch=arch, args=types.SimpleNamespace())
    c = checks.check_board(ctx)
    bits = 64 if arch == "arm64" else 32
    assert c.status == checks.OK
    assert (c.data["fit_config"], c.data["kernel_file"]) == boards.boot_plan(board, bits)
    assert c.data["kernel32"] == board.kernel32
    assert "FIT configuration %s, firmware kernel file %s" % boards.boot_plan(board, bits) in c.msg


# --- an old kernel= line --------------------------------------------------------------------

def test_kernel_lines_are_found_in_any_section():
    text = "# kernel=commented\n[pi4]\nkernel = zImage-4 \n[all]\narm_64bit=0\nkernel=zImage # mine\n"
    assert checks.kernel_lines(text) == [(3, "zImage-4"), (6, "zImage")]
    assert checks.kernel_lines("kernel_address=0x8000\n") == []


def _fake_32bit_tarball(out_dir):
    """A 32-bit MIGOS tarball: no kernel= in its config.txt, one U-Boot per kernel file."""
    return tarball.make_fake(out_dir, extra={
        "config.txt": b"# MIGOS\nos_prefix=migos/\narm_64bit=0\nenable_uart=1\n",
        "migos/kernel.img": b"u-boot v6", "migos/kernel7.img": b"u-boot v7",
        "migos/kernel7l.img": b"u-boot v7l"})


def test_tarball_needs_the_u_boot_its_config_names(tmp_path):
    t = tarball.load(_fake_32bit_tarball(str(tmp_path / "a")))
    assert tarball.boot_loaders(t.files, t.migos_config) == [
        "migos/kernel.img", "migos/kernel7.img", "migos/kernel7l.img"]
    assert "migos/u-boot.bin" in t.install_files()     # make_fake's; unused without kernel=
    files = {"migos/u-boot.bin": b"u"}
    assert tarball.boot_loaders(files, "os_prefix=migos/\nkernel=u-boot.bin\n") == ["migos/u-boot.bin"]
    assert tarball.boot_loaders(files, "os_prefix=migos/\n") == []
    path = tarball.make_fake(str(tmp_path / "b"), extra={
        "config.txt": b"os_prefix=migos/\nkernel=uboot-missing.bin\n"})
    with pytest.raises(Exception, match="lacks migos/uboot-missing.bin"):
        tarball.load(path)


@pytest.fixture
def old_os(tmp_path):
    root = fx.make_tree(str(tmp_path / "root"), "buster")
    disk = fx.make_disk_image(str(tmp_path / "disk.img"))
    cfg = fx.config_json(str(tmp_path / "config.json"))
    with open(os.path.join(root, "boot", "config.txt"), "a") as f:
        f.write("kernel=zImage-custom\n")
    with open(os.path.join(root, "boot", "zImage-custom"), "wb") as f:
        f.write(fx.zimage())
    return root, disk, cfg


def test_diagnostic_warns_about_an_old_kernel_line(old_os):
    import json
    root, disk, cfg = old_os
    r = run_migos("diagnostic", "--root", root, "-c", cfg, "--disk", disk, "--no-api-check",
                  "--no-vpn-check", "--json", "--log-level", "error")
    data = json.loads(r.stdout)
    (c,) = [c for c in data["checks"] if c["check"] == "boot-kernel"]
    assert c["status"] == "warn" and "sets kernel=zImage-custom" in c["msg"]
    assert r.returncode == 0           # a warning: 64-bit MIGOS sets its own kernel=
    (b,) = [c for c in data["checks"] if c["check"] == "board"]
    assert (b["data"]["fit_config"], b["data"]["kernel_file"]) == ("rpi-3-b-plus", "kernel7.img")


def test_init_of_a_32bit_migos_refuses_an_old_kernel_line(old_os, tmp_path):
    root, disk, cfg = old_os
    before = open(os.path.join(root, "boot", "config.txt"), "rb").read()
    tar = _fake_32bit_tarball(str(tmp_path / "tar"))
    r = run_migos("init", "--root", root, "-c", cfg, "-v", "2.80.3", "--migos-tarball", tar,
                  "--disk", disk, "--no-api-check", "--no-vpn-check", "--log-level", "error")
    assert r.returncode == 2, r.stderr
    assert "sets kernel=zImage-custom" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert open(os.path.join(root, "boot", "config.txt"), "rb").read() == before
    assert not os.path.exists(os.path.join(root, "boot", "migos"))
    assert bootinst.state(os.path.join(root, "boot")) == "clean"
