"""The small FAT reader against real mkfs.vfat/mtools file systems (no root)."""

import json
import os
import shutil
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import balena_image  # noqa: E402

from migos.stage2 import fatread  # noqa: E402

pytestmark = pytest.mark.skipif(not shutil.which("mkfs.vfat") or not shutil.which("mcopy"),
                                reason="needs dosfstools and mtools")

FILES = {
    "config.txt": b"kernel=x\n",
    "device-type.json": json.dumps({"slug": "raspberrypi4-64"}).encode(),
    "a-rather-long-file-name with spaces.txt": b"long name\n",
    "dir/sub/deep.bin": os.urandom(70000),
    "system-connections/wifi-home": b"[connection]\nid=home\n",
    "UPPER.TXT": b"upper",
}


@pytest.mark.parametrize("size_mib,bits", [(2, 12), (16, 16), (64, 32)])
def test_read_files(tmp_path, size_mib, bits):
    img = str(tmp_path / "fat.img")
    balena_image.make_fat(img, size_mib, "resin-boot", FILES, fat_bits=bits)
    data = open(img, "rb").read()
    fat = fatread.Fat(lambda o, n: data[o:o + n])
    assert fat.kind == bits
    assert fat.volume_label().lower() == "resin-boot"
    for path, content in FILES.items():
        e = fat.lookup(path)
        assert e is not None, path
        assert fat.read_file(e) == content
    assert fat.lookup("DEVICE-TYPE.JSON") is not None
    assert fat.lookup("missing.json") is None
    assert fat.lookup("config.txt/x") is None
    assert sorted(e.name for e in fat.listdir()) == sorted(
        ["config.txt", "device-type.json", "a-rather-long-file-name with spaces.txt", "dir",
         "system-connections", "UPPER.TXT"])


def test_need_more(tmp_path):
    img = str(tmp_path / "fat.img")
    balena_image.make_fat(img, 16, "resin-boot", FILES)
    data = open(img, "rb").read()
    have = [4096]

    def rd(o, n):
        if o + n > have[0]:
            raise fatread.NeedMore(o + n)
        return data[o:o + n]
    while True:
        try:
            fat = fatread.Fat(rd)
            got = fat.read_file(fat.lookup("dir/sub/deep.bin"))
            break
        except fatread.NeedMore as e:
            assert e.end > have[0]
            have[0] = e.end
    assert got == FILES["dir/sub/deep.bin"]
    assert have[0] < len(data)


def test_not_fat():
    with pytest.raises(fatread.FatError):
        fatread.Fat(lambda o, n: bytes(n))
