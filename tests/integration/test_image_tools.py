"""The programs the migration runs inside MIGOS work in the *pruned* image, run here under
qemu-user against the built tree: pruning must not take away what they load at run time
(shared libraries are checked at build time; this catches data files such as iconv's)."""

import os
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PRUNED = os.path.join(REPO, "build", "debian-arm64", "pruned")


@pytest.fixture
def guest():
    if not os.path.isdir(PRUNED):
        pytest.fail("build/debian-arm64/pruned is missing: run `doit build` first")

    def run(*argv, **kw):
        env = dict(os.environ, MTOOLS_SKIP_CHECK="1", LC_ALL="C")
        return subprocess.run(["qemu-aarch64-static", "-L", PRUNED, os.path.join(PRUNED, argv[0].lstrip("/"))]
                              + list(argv[1:]), env=env, capture_output=True, text=True, **kw)
    return run


def test_mtools_write_and_read_a_fat_in_the_image(guest, tmp_path):
    img = tmp_path / "fat.img"
    subprocess.run(["mkfs.vfat", "-C", str(img), "8192"], check=True, capture_output=True)
    src = tmp_path / "config.json"
    src.write_text('{"uuid": "abc"}\n')
    for argv in (["/usr/bin/mmd", "-i", "%s@@0" % img, "::system-connections"],
                 ["/usr/bin/mcopy", "-o", "-i", "%s@@0" % img, str(src), "::config.json"]):
        proc = guest(*argv)
        assert proc.returncode == 0, proc.stderr
    out = subprocess.run(["mtype", "-i", str(img), "::config.json"], capture_output=True, text=True,
                         env=dict(os.environ, MTOOLS_SKIP_CHECK="1"))
    assert out.stdout == '{"uuid": "abc"}\n'


def test_python_stdlib_the_migration_imports(guest):
    code = ("import ssl, hashlib, zlib, lzma, zipfile, json, http.client, urllib.request, mmap, "
            "zstandard; ssl.create_default_context(); print('ok')")
    proc = guest("/usr/bin/python3", "-c", code)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_migos_command_runs_in_the_image(guest):
    proc = guest("/usr/bin/python3", "-c", "import sys; sys.path.insert(0, '%s'); "
                 "from migos.cli import main; main(['--version'])"
                 % os.path.join(REPO, "build", "debian-arm64", "overlay", "usr/lib/python3/dist-packages"))
    assert proc.returncode == 0 and proc.stdout.startswith("migos "), proc.stderr
