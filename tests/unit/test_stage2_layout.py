"""Layout planning on many geometries (pure code, no root)."""

import pytest
from hypothesis import given, settings, strategies as st

from migos.stage2 import layout, mbr
from migos.stage2.layout import MIB, GIB, LayoutError

S = 512


def old_mbr(p1_start, p1_size, disk):
    return mbr.build([mbr.Entry(1, 0x80, 0x0c, p1_start // S, p1_size // S),
                      mbr.Entry(2, 0, 0x83, (p1_start + p1_size) // S,
                                min((disk - p1_start - p1_size) // S,
                                    0xffffffff - (p1_start + p1_size) // S))], disk_signature=0xdeadbeef)


def image_mbr(boot_start=4 * MIB, boot=40 * MIB, root=320 * MIB, state=20 * MIB, data=16 * MIB,
              gap=4 * MIB):
    p1 = (boot_start, boot)
    p2 = (p1[0] + p1[1], root)
    p3 = (p2[0] + p2[1], root)
    ext_start = p3[0] + p3[1]
    ext_size = gap + state + gap + data
    ents = [mbr.Entry(1, 0x80, 0x0c, p1[0] // S, p1[1] // S),
            mbr.Entry(2, 0, 0x83, p2[0] // S, p2[1] // S),
            mbr.Entry(3, 0, 0x83, p3[0] // S, p3[1] // S),
            mbr.Entry(4, 0, 0x0f, ext_start // S, ext_size // S)]
    return mbr.build(ents, disk_signature=0x12345678, boot_code=b"\xfa" * 440), ext_start + ext_size


def check_plan(p, disk, p1_start, p1_size, img, img_end):
    old_end = p1_start + p1_size
    # journal: outside old p1, outside the MBR's 4 MiB block, before the new partitions
    for slot in p.journal_slots:
        assert slot >= 4 * MIB
        assert slot >= old_end
        assert slot + layout.JOURNAL_RECORD <= p.new_boot_start
    assert p.journal_slots[1] - p.journal_slots[0] == MIB
    # every written byte after the old p1 and inside the disk
    assert p.target(p.copy_start) >= old_end + layout.JOURNAL_RESERVE
    assert p.target(p.copy_end) <= disk
    assert p.shift % (4 * MIB) == 0
    # the final MBR: the image's, shifted; same boot code, signature, types and sizes
    new = mbr.parse_table(p.new_mbr)
    orig = mbr.parse_table(img)
    assert p.new_mbr[:440] == img[:440]
    assert p.new_mbr[440:446] == img[440:446]
    for a, b in zip(new, orig):
        assert (a.type, a.count, a.status) == (b.type, b.count, b.status)
        assert a.start * S == b.start * S + p.shift
    assert new[0].start * S == p.new_boot_start
    assert [e.type for e in new] == [0x0c, 0x83, 0x83, 0x0f]
    # the journal can be found again from the switched MBR and from the old one
    assert p.journal in layout.journal_candidates(p.new_mbr)
    assert p.journal in layout.journal_candidates(old_mbr(p1_start, p1_size, disk))
    # segments tile the copy range; segment 0 is exactly resin-boot
    assert p.segments[0].name == "resin-boot"
    assert (p.segments[0].start, p.segments[0].end) == (p.boot_start, p.boot_end)
    pos = p.copy_start
    for s in p.segments:
        assert s.start == pos and s.end > s.start
        assert s.size <= layout.MAX_SEGMENT or s.name == "resin-boot"
        pos = s.end
    assert pos == img_end


@pytest.mark.parametrize("p1_start", [1 * MIB, 4 * MIB])
@pytest.mark.parametrize("p1_size", [256 * MIB, 512 * MIB])
@pytest.mark.parametrize("disk", [2 * GIB, 4 * GIB, 8 * GIB, 32 * GIB, 128 * GIB])
def test_fits(p1_start, p1_size, disk):
    img, img_end = image_mbr()
    p = layout.plan(disk, old_mbr(p1_start, p1_size, disk), img)
    check_plan(p, disk, p1_start, p1_size, img, img_end)


def test_example_numbers():
    img, _ = image_mbr()
    p = layout.plan(8 * GIB, old_mbr(1 * MIB, 256 * MIB, 8 * GIB), img)
    assert p.journal == 260 * MIB            # align_up(257 MiB, 4 MiB)
    assert p.journal_slots == (260 * MIB, 261 * MIB)
    assert p.new_boot_start == 264 * MIB
    assert p.shift == 260 * MIB


@pytest.mark.parametrize("p1_start,p1_size", [(1 * MIB, 256 * MIB), (4 * MIB, 512 * MIB)])
def test_too_small(p1_start, p1_size):
    img, img_end = image_mbr()
    need = p1_start + p1_size
    for disk in (64 * MIB, need, need + 512 * MIB):
        with pytest.raises(LayoutError) as e:
            layout.plan(disk, old_mbr(p1_start, min(p1_size, disk - p1_start - MIB), disk)
                        if disk <= need else old_mbr(p1_start, p1_size, disk), img)
        assert "too small" in e.value.problem or "beyond" in e.value.problem


def test_exact_fit_boundary():
    img, img_end = image_mbr()
    base = layout.plan(8 * GIB, old_mbr(4 * MIB, 256 * MIB, 8 * GIB), img)
    need = base.need
    p = layout.plan(need, old_mbr(4 * MIB, 256 * MIB, need), img)
    check_plan(p, need, 4 * MIB, 256 * MIB, img, img_end)
    with pytest.raises(LayoutError):
        layout.plan(need - S, old_mbr(4 * MIB, 256 * MIB, need - S), img)


def test_refuses_non_fat_p1_and_gpt():
    img, _ = image_mbr()
    bad = mbr.build([mbr.Entry(1, 0, 0x83, 2048, 100000)])
    with pytest.raises(LayoutError, match="not a FAT"):
        layout.plan(8 * GIB, bad, img)
    gpt = mbr.build([mbr.Entry(1, 0, 0xee, 1, 0xffffffff)])
    with pytest.raises(LayoutError, match="GPT"):
        layout.plan(8 * GIB, gpt, img)
    with pytest.raises(LayoutError, match="no usable MBR"):
        layout.plan(8 * GIB, bytes(512), img)


def test_refuses_non_balena_image():
    old = old_mbr(4 * MIB, 256 * MIB, 8 * GIB)
    two = mbr.build([mbr.Entry(1, 0, 0x0c, 8192, 100000), mbr.Entry(2, 0, 0x83, 108192, 100000)])
    with pytest.raises(LayoutError, match="not balenaOS-shaped"):
        layout.plan(8 * GIB, old, two)
    with pytest.raises(LayoutError, match="no valid MBR"):
        layout.plan(8 * GIB, old, bytes(512))
    img, _ = image_mbr()
    swapped = bytearray(img)
    swapped[446 + 16 + 4] = 0x0c  # p2 type FAT
    with pytest.raises(LayoutError):
        layout.plan(8 * GIB, old, bytes(swapped))


def test_mbr_limit():
    img, _ = image_mbr()
    disk = 2050 * GIB
    with pytest.raises(LayoutError, match="2 TiB"):
        layout.plan(disk, old_mbr(4 * MIB, 2048 * GIB - 8 * MIB, disk), img)


@settings(max_examples=300, deadline=None)
@given(p1_start_mib=st.integers(1, 64), p1_size_mib=st.integers(16, 2048),
       disk_mib=st.integers(64, 128 * 1024), boot_start_mib=st.sampled_from([1, 4, 8, 16]),
       boot_mib=st.integers(8, 256), root_mib=st.integers(16, 2048),
       state_mib=st.integers(4, 64), data_mib=st.integers(4, 2048),
       gap_mib=st.sampled_from([1, 4]), extra_sectors=st.integers(0, 7))
def test_random_geometries(p1_start_mib, p1_size_mib, disk_mib, boot_start_mib, boot_mib,
                           root_mib, state_mib, data_mib, gap_mib, extra_sectors):
    p1_start, p1_size = p1_start_mib * MIB, p1_size_mib * MIB + extra_sectors * S
    disk = disk_mib * MIB + extra_sectors * S
    img, img_end = image_mbr(boot_start_mib * MIB, boot_mib * MIB, root_mib * MIB,
                             state_mib * MIB, data_mib * MIB, gap_mib * MIB)
    if p1_start + p1_size > disk:
        with pytest.raises(LayoutError):
            layout.plan(disk, old_mbr(p1_start, p1_size, max(disk, p1_start + p1_size)), img)
        return
    om = old_mbr(p1_start, p1_size, disk)
    try:
        p = layout.plan(disk, om, img)
    except LayoutError as e:
        need = layout.align_up(p1_start + p1_size, 4 * MIB) + 4 * MIB + (img_end - boot_start_mib * MIB)
        assert "too small" in e.problem
        assert need > disk
        return
    check_plan(p, disk, p1_start, p1_size, img, img_end)


def test_logical_chain_relative_addresses_survive_shift():
    # an EBR chain as balenaOS writes it: relative to the extended partition
    ext_start, ext_count = 1000, 10000
    ebr1 = mbr.build([mbr.Entry(1, 0, 0x83, 8, 2000), mbr.Entry(2, 0, 0x05, 3000, 5000)])
    ebr2 = mbr.build([mbr.Entry(1, 0, 0x83, 8, 4000)])
    for shift in (0, 123456):
        sectors = {ext_start + shift: ebr1, ext_start + 3000 + shift: ebr2}
        chain = mbr.logical_chain(sectors.__getitem__, ext_start + shift, ext_count)
        assert [(e.index, e.start, e.count) for _l, e in chain] == [
            (5, ext_start + shift + 8, 2000), (6, ext_start + shift + 3008, 4000)]


def test_logical_chain_loop_and_outside():
    loop = mbr.build([mbr.Entry(1, 0, 0x83, 8, 100), mbr.Entry(2, 0, 0x05, 0, 200)])
    with pytest.raises(mbr.MbrError, match="loops"):
        mbr.logical_chain(lambda lba: loop, 1000, 10000)
    outside = mbr.build([mbr.Entry(1, 0, 0x83, 8, 100000)])
    with pytest.raises(mbr.MbrError, match="outside"):
        mbr.logical_chain(lambda lba: outside, 1000, 10000)
