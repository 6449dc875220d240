"""The manifest of a version and its checksum: pure functions over sha256sum's lines."""

import hashlib

import pytest

from apps.datasets import remote
from apps.integrations.slurm.sshfiles import sha256sum_lines


def test_sha256sum_lines_are_kept_verbatim_including_escaped_names():
    h = "ab" * 32
    out = f"{h}  a.txt\n\\{h}  new\\nline\n".encode()
    lines = sha256sum_lines(out, 2)
    assert lines == [f"{h}  a.txt".encode(), f"\\{h}  new\\nline".encode()]
    assert remote.manifest_checksum(lines) == hashlib.sha256(out).hexdigest()
    assert remote.manifest_names(lines) == {"a.txt": h, "new\\nline": h}


def test_a_missing_line_is_refused():
    with pytest.raises(ValueError, match="1 lines for 2 files"):
        sha256sum_lines(b"ab" * 32 + b"  a\n", 2)


@pytest.mark.parametrize("out", [b"not a digest  a\n", b"ab" * 32 + b" a\n", b"AB" * 32 + b"  a\n"])
def test_a_garbled_line_is_refused(out):
    with pytest.raises(ValueError, match="unexpected sha256sum line"):
        sha256sum_lines(out, 1)
