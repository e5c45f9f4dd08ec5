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


# --- the build's plan against the diagnostic's answer -------------------------------------------

import tomllib  # noqa: E402

from stages import bootpart, fit, kernel, target  # noqa: E402
from stages.tools import BuildError  # noqa: E402


@pytest.mark.parametrize("name", ["debian-arm64", "debian-armhf", "raspbian-armhf"])
def test_every_fit_configuration_the_build_plans_is_the_diagnostics_answer(name, tmp_path):
    t = target.load(name)
    nodes, configs = fit.plan(t, "/dtbs")
    ctx = target.Context(target=t, build=str(tmp_path), cache=str(tmp_path), dist=str(tmp_path),
                         source_date_epoch=0, version="1.0")
    values = bootpart.template_values(ctx)
    script = bootpart.render("boot.cmd", **values)
    config_txt = bootpart.render("config.txt", **values)
    # the U-Boot files the boot partition gets, and the one the firmware is told to load (if any)
    loaders = ["migos/" + f for f in t.uboots()]
    assert tarball.boot_loaders(dict.fromkeys(loaders, b""), config_txt) == loaders if not t.kernel_line() \
        else ["migos/u-boot.bin"]
    for c in [c for c in configs if c["board"]]:
        b = boards.BY_KEY[c["board"]]
        for arch in (["arm64"] if t.arch == "arm64" else ["armhf", "armv6"] if "armv6" in b.arches and
                     t.isa == "armv6" else ["armhf"]):
            ctx_diag = types.SimpleNamespace(board=b, model=b.models[0], arch=arch, args=types.SimpleNamespace())
            d = checks.check_board(ctx_diag).data
            assert (c["name"], c["kernel_file"]) == (d["fit_config"], d["kernel_file"]), (name, b.key)
        # the firmware loads a U-Boot for this board: its own kernel file, or kernel=u-boot.bin
        served = c["kernel_file"] if not t.kernel_line() else None
        if served:
            assert served in t.uboots() and target.UBOOT_DEFCONFIGS[t.uboots()[served]] == served
        else:
            assert target.UBOOT_DEFCONFIGS[t.uboot_defconfig] == boards.firmware_kernel(b, t.bits)
        # the configuration's kernel is the flavour of the board's kernel file
        assert c["kernel"] == "kernel-rpi-" + kernel.board_flavour(b, t)
        # boot.scr picks this configuration for every ${fdtfile} U-Boot gives the board
        for fdtfile in kernel.uboot_fdtfiles(b, t.arch):
            assert 'if test "${fdtfile}" = "%s"; then setenv migos_conf "%s"; fi' % (fdtfile, c["name"]) in script
    assert [n["node"] for n in nodes] == sorted({c["kernel"] for c in configs}, key=[c["kernel"] for c in configs].index)


def test_raspbian_covers_every_32bit_board_with_three_kernels_and_three_u_boots():
    t = target.load("raspbian-armhf")
    assert sorted(t.boards) == sorted(b.key for b in boards.BOARDS if b.kernel32)
    assert t.uboots() == {"kernel.img": "rpi_defconfig", "kernel7.img": "rpi_2_defconfig",
                          "kernel7l.img": "rpi_4_32b_defconfig"}
    assert t.kernel_line() is None
    nodes, configs = fit.plan(t, "/d")
    assert [n["node"] for n in nodes] == ["kernel-rpi-v7", "kernel-rpi-v6", "kernel-rpi-v7l", "kernel-virt"]
    by = {c["name"]: c["kernel"] for c in configs}
    assert by["rpi-zero"] == by["rpi-b"] == by["rpi-cm1"] == "kernel-rpi-v6"
    assert by["rpi-3-b"] == by["rpi-zero-2-w"] == "kernel-rpi-v7"
    assert by["rpi-4-b"] == by["rpi-400"] == by["rpi-cm4"] == "kernel-rpi-v7l"
    assert kernel.needed_flavours(t) == ["v7", "v6", "v7l"]
    ctx = target.Context(target=t, build="/b", cache="/c", dist="/d", source_date_epoch=0, version="1.0")
    text = bootpart.render("config.txt", **bootpart.template_values(ctx))
    settings = [l for l in text.splitlines() if l.strip() and not l.startswith("#")]
    assert settings == ["[all]", "os_prefix=migos/", "arm_64bit=0", "enable_uart=1"]


def _raw(name):
    with open(os.path.join(target.TARGET_DIR, name + ".toml"), "rb") as f:
        return tomllib.load(f)


@pytest.mark.parametrize("change,error", [
    ({"uboot_defconfigs": {"kernel9.img": "rpi_defconfig"}},
     r"uboot_defconfigs names 'kernel9.img', which is not a firmware kernel file; use kernel.img, "),
    ({"uboot_defconfigs": {"kernel.img": "rpi_defconfg", "kernel7.img": "rpi_2_defconfig",
                           "kernel7l.img": "rpi_4_32b_defconfig"}},
     r"U-Boot defconfig 'rpi_defconfg' is not a Raspberry Pi defconfig MIGOS knows; use one of "),
    ({"uboot_defconfigs": {"kernel.img": "rpi_4_32b_defconfig", "kernel7.img": "rpi_2_defconfig",
                           "kernel7l.img": "rpi_4_32b_defconfig"}},
     r"uboot_defconfigs maps kernel.img to rpi_4_32b_defconfig, which is a U-Boot for kernel7l.img"),
    ({"uboot_defconfigs": {"kernel.img": "rpi_defconfig", "kernel7.img": "rpi_2_defconfig"}},
     r"boards rpi-4-b, rpi-400, rpi-cm4 boot kernel7l.img but uboot_defconfigs has no U-Boot for it"),
    ({"uboot_defconfig": "rpi_2_defconfig"},
     r"both uboot_defconfig and uboot_defconfigs are set; keep one"),
    ({"uboot_defconfigs": {}},
     r"no uboot_defconfig or uboot_defconfigs; name the U-Boot defconfig"),
    ({"uboot_defconfigs": "rpi_defconfig"},
     r"uboot_defconfigs must be a table"),
])
def test_target_validation_errors_are_one_line(change, error):
    r = dict(_raw("raspbian-armhf"), **change)
    with pytest.raises(BuildError, match=error) as e:
        target.parse(r, "x.toml")
    assert "\n" not in str(e.value) and str(e.value).startswith("x.toml: ")


def test_a_single_u_boot_must_serve_every_board():
    r = dict(_raw("debian-armhf"), boards=["rpi-3-b", "rpi-4-b"])
    with pytest.raises(BuildError, match=r"boards rpi-4-b boot kernel7l.img, but uboot_defconfig rpi_2_defconfig "
                                         r"is a U-Boot for kernel7.img; map each kernel file"):
        target.parse(r, "x.toml")
    r = dict(_raw("debian-armhf"), uboot_defconfig="rpi_9_defconfig")
    with pytest.raises(BuildError, match=r"U-Boot defconfig 'rpi_9_defconfig' is not a Raspberry Pi defconfig"):
        target.parse(r, "x.toml")


def test_a_missing_kernel_flavour_names_the_boards(tmp_path):
    (tmp_path / "boot").mkdir()
    (tmp_path / "boot" / "kernel7.img").write_bytes(b"k7")
    (tmp_path / "lib" / "modules" / "6.1.21-v7+").mkdir(parents=True)
    assert sorted(kernel.find_kernels(str(tmp_path), "raspberrypi")) == ["v7"]
    t = target.load("raspbian-armhf")
    with pytest.raises(BuildError, match=r"no v6 /boot/kernel.img \+ modules in the extract packages \(needed by "
                                         r"rpi-b, rpi-b-plus, rpi-a, rpi-a-plus, rpi-cm1, rpi-zero, "
                                         r"rpi-zero-w\); found v7"):
        kernel.select_kernels(str(tmp_path), t)
    (tmp_path / "boot" / "kernel.img").write_bytes(b"k6")
    with pytest.raises(BuildError, match=r"no v6 /boot/kernel.img \+ modules"):   # image without modules
        kernel.select_kernels(str(tmp_path), t)
    (tmp_path / "boot" / "kernel7l.img").write_bytes(b"k7l")
    for rel in ("6.1.21+", "6.1.21-v7l+"):
        (tmp_path / "lib" / "modules" / rel).mkdir(parents=True)
    got = kernel.select_kernels(str(tmp_path), t)
    assert {f: (k["release"], k["file"]) for f, k in got.items()} == {
        "v6": ("6.1.21+", "kernel.img"), "v7": ("6.1.21-v7+", "kernel7.img"), "v7l": ("6.1.21-v7l+", "kernel7l.img")}


def test_modules_missing_in_one_flavour_are_left_out_missing_everywhere_fail():
    from stages import modules
    dep = "kernel/drivers/a.ko:\nkernel/drivers/b.ko: kernel/drivers/a.ko\n"
    missing = []
    assert modules.plan(["b", "virtio_mmio"], dep, "", missing=missing) == ["kernel/drivers/a.ko",
                                                                             "kernel/drivers/b.ko"]
    assert missing == ["virtio_mmio"]
    assert modules.absent_everywhere(["b", "virtio_mmio", "genet"], {"r1": ["virtio_mmio", "genet"],
                                                                     "r2": ["genet"]}) == ["genet"]
