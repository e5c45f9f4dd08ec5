"""The board table: model strings from real devices map to the right row."""

import pytest

from migos import boards

REAL_MODELS = [
    ("Raspberry Pi 3 Model B Plus Rev 1.3", "rpi-3-b-plus", "bcm2710-rpi-3-b-plus.dtb",
     "broadcom/bcm2837-rpi-3-b-plus.dtb", ("raspberrypi3", "raspberrypi3-64")),
    ("Raspberry Pi 3 Model B Rev 1.2", "rpi-3-b", "bcm2710-rpi-3-b.dtb",
     "broadcom/bcm2837-rpi-3-b.dtb", ("raspberrypi3", "raspberrypi3-64")),
    ("Raspberry Pi Zero 2 W Rev 1.0", "rpi-zero-2-w", "bcm2710-rpi-zero-2-w.dtb",
     "broadcom/bcm2837-rpi-zero-2-w.dtb", ("raspberrypi0-2w-64",)),
    ("Raspberry Pi Compute Module 4 Rev 1.0", "rpi-cm4", "bcm2711-rpi-cm4.dtb",
     "broadcom/bcm2711-rpi-cm4-io.dtb", ("raspberrypicm4-ioboard",)),
    ("Raspberry Pi 4 Model B Rev 1.4", "rpi-4-b", "bcm2711-rpi-4-b.dtb",
     "broadcom/bcm2711-rpi-4-b.dtb", ("raspberrypi4-64",)),
    ("Raspberry Pi 5 Model B Rev 1.0", "rpi-5-b", "bcm2712-rpi-5-b.dtb", None, ("raspberrypi5",)),
    ("Raspberry Pi Model B Rev 2", "rpi-b", "bcm2708-rpi-b.dtb", "bcm2835-rpi-b.dtb",
     ("raspberry-pi",)),
    ("Raspberry Pi Model B Plus Rev 1.2", "rpi-b-plus", "bcm2708-rpi-b-plus.dtb",
     "bcm2835-rpi-b-plus.dtb", ("raspberry-pi",)),
    ("Raspberry Pi Zero W Rev 1.1", "rpi-zero-w", "bcm2708-rpi-zero-w.dtb",
     "bcm2835-rpi-zero-w.dtb", ("raspberry-pi",)),
    ("Raspberry Pi Zero Rev 1.3", "rpi-zero", "bcm2708-rpi-zero.dtb", "bcm2835-rpi-zero.dtb",
     ("raspberry-pi",)),
    ("Raspberry Pi 2 Model B Rev 1.1", "rpi-2-b", "bcm2709-rpi-2-b.dtb", "bcm2836-rpi-2-b.dtb",
     ("raspberry-pi2",)),
    ("Raspberry Pi Compute Module 3 Rev 1.0", "rpi-cm3", "bcm2710-rpi-cm3.dtb",
     "broadcom/bcm2837-rpi-cm3-io3.dtb", ("raspberrypi3", "raspberrypi3-64")),
    ("Raspberry Pi Compute Module 3 Plus Rev 1.0", "rpi-cm3", "bcm2710-rpi-cm3.dtb",
     "broadcom/bcm2837-rpi-cm3-io3.dtb", ("raspberrypi3", "raspberrypi3-64")),
    ("Raspberry Pi 400 Rev 1.0", "rpi-400", "bcm2711-rpi-400.dtb", "broadcom/bcm2711-rpi-400.dtb",
     ("raspberrypi400-64",)),
]


@pytest.mark.parametrize("model,key,fw,up,dts", REAL_MODELS)
def test_real_models(model, key, fw, up, dts):
    b = boards.by_model(model.encode() + b"\x00")
    assert b is not None and b.key == key
    assert b.firmware_dtb == fw and b.upstream_dtb == up
    assert boards.device_types(b) == dts


@pytest.mark.parametrize("model", ["Banana Pi", "", "Raspberry Pi", "Raspberry Pi 6 Model Z"])
def test_unknown(model):
    assert boards.by_model(model) is None


def test_table_is_consistent():
    keys = [b.key for b in boards.BOARDS]
    assert len(keys) == len(set(keys))
    fits = [b.fit_config for b in boards.BOARDS]
    assert len(fits) == len(set(fits))
    prefixes = [p for b in boards.BOARDS for p in b.models]
    assert len(prefixes) == len(set(prefixes))
    for b in boards.BOARDS:
        assert b.firmware_dtb.endswith(".dtb")
        assert set(b.arches) <= {"armv6", "armhf", "arm64"}
        assert boards.device_types(b), b.key
        if b.dt64:
            assert "arm64" in b.arches
        assert b in boards.boards_for_device_type(boards.device_types(b)[0])
    assert set(boards.fit_configs()) == set(fits)


def test_default_device_type():
    pi3 = boards.by_key("rpi-3-b")
    assert boards.default_device_type(pi3, "arm64") == "raspberrypi3-64"
    assert boards.default_device_type(pi3, "armv6") == "raspberrypi3"
    assert boards.default_device_type(boards.by_key("rpi-4-b"), "armhf") == "raspberrypi4-64"
