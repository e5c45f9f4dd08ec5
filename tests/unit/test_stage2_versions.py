"""--version resolution (pure, no root)."""

import pytest

from migos.stage2 import versions as V

AVAIL = ["2.50.1+rev1", "2.48.0+rev3", "2.48.0+rev1", "2.48.2", "2.51.0+rev2", "3.0.1",
         "2.47.9", "2.49.0-beta1", "3.1.0-rc1", "0.9.1", "0.10.2", "garbage", "5.1.20+rev1"]


@pytest.mark.parametrize("spec,want", [
    (None, "5.1.20+rev1"), ("", "5.1.20+rev1"), ("latest", "5.1.20+rev1"),
    ("2.50.1+rev1", "2.50.1+rev1"),
    ("2.50.1+rev1.dev", "2.50.1+rev1.dev"),
    ("2.50.1+rev1.prod", "2.50.1+rev1.prod"),
    ("2.50.1", "2.50.1+rev1"),           # single match: +rev optional
    ("~2.48", "2.48.2"), ("~2.48.0", "2.48.2"), ("^2.48", "2.51.0+rev2"), ("^2.48.1", "2.51.0+rev2"),
    ("~2", "2.51.0+rev2"), ("^3", "3.0.1"), ("~3.0", "3.0.1"),
    ("^0.9", "0.9.1"), ("~0.10", "0.10.2"), ("^5.1", "5.1.20+rev1"),
    ("2.48.0+rev1", "2.48.0+rev1"),
])
def test_resolve(spec, want):
    assert V.resolve(spec, AVAIL) == want


@pytest.mark.parametrize("spec", ["2.48.0", "9.9.9", "~4.0", "^6", "2.50.1+rev2", "nonsense!"])
def test_resolve_fails(spec):
    with pytest.raises(V.VersionError):
        V.resolve(spec, AVAIL)


def test_ranges_skip_prereleases_and_empty_list():
    assert V.resolve("^3", ["3.1.0-rc1", "3.0.0"]) == "3.0.0"
    with pytest.raises(V.VersionError):
        V.resolve(None, [])


def test_ordering():
    order = ["2.48.0", "2.48.0+rev1", "2.48.0+rev3", "2.48.2", "2.49.0-beta1", "2.49.0"]
    keys = [V.parse(v).key() for v in order]
    assert keys == sorted(keys)
