"""Reading what find and sha256sum print on the cluster: pure functions."""

import hashlib

import pytest

from apps.datasets import remote


def test_a_folder_listing_is_sorted_by_name_bytes():
    listing = remote.parse_listing(b"D\x00" + b"5 b\x00" + b"3 a b\x00" + b"0 A\x00" + b"7 new\nline\x00")
    assert listing.is_dir
    assert listing.files == [(b"A", 0), (b"a b", 3), (b"b", 5), (b"new\nline", 7)]
    assert listing.total_bytes == 15


def test_a_single_file_listing():
    assert remote.parse_listing(b"F\x0042 data.csv\x00").files == [(b"data.csv", 42)]


@pytest.mark.parametrize("out", [b"", b"X\x00", b"D\x00abc\x00", b"D\x0012\x00"])
def test_a_garbled_listing_is_refused(out):
    with pytest.raises(ValueError):
        remote.parse_listing(out)


def test_sha256sum_lines_are_kept_verbatim_including_escaped_names():
    h = "ab" * 32
    out = f"{h}  a.txt\n\\{h}  new\\nline\n".encode()
    lines = remote.parse_sha256sum(out, 2)
    assert lines == [f"{h}  a.txt".encode(), f"\\{h}  new\\nline".encode()]
    assert remote.manifest_checksum(lines) == hashlib.sha256(out).hexdigest()
    assert remote.manifest_names(lines) == {"a.txt": h, "new\\nline": h}


def test_a_missing_line_is_refused():
    with pytest.raises(ValueError, match="1 lines for 2 files"):
        remote.parse_sha256sum(b"ab" * 32 + b"  a\n", 2)


def test_the_scripts_take_the_path_only_as_an_argument():
    assert "$1" in remote.LIST_SCRIPT and "$1" in remote.HASH_SCRIPT
