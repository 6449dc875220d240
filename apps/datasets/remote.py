"""Measuring a dataset on its cluster: list it, then hash it chunk by chunk through the
grant's `ClusterFiles`, as the grant's own account, reporting progress between chunks.

The checksum of a version is the sha256 of its manifest (sha256sum's line for each file,
sorted by name bytes), which is exactly what

    cd DIR && find . -type f -printf '%P\\0' | LC_ALL=C sort -z | xargs -0 sha256sum -- | sha256sum

prints on the cluster, so anyone can check a version by hand without Axle."""

from __future__ import annotations

import hashlib
import logging
import posixpath
import time
from collections.abc import Callable
from dataclasses import dataclass

from apps.clusters.models import ClusterGrant
from apps.clusters.transport import slurm_client
from apps.integrations.slurm.base import (
    ClusterFiles,
    FileEntry,
    RemoteCommandFailed,
    RemoteFileMissing,
    SlurmError,
    UnsupportedOperation,
)

log = logging.getLogger(__name__)

# Each hashing call aims to take about this long, so progress moves about once a second
# whatever the file sizes, and tiny files do not cost one SSH round trip each.
CHUNK_SECONDS = 1.0
FIRST_CHUNK_FILES, MIN_CHUNK_FILES, MAX_CHUNK_FILES = 256, 16, 20_000
FIRST_CHUNK_BYTES, MIN_CHUNK_BYTES, MAX_CHUNK_BYTES = 64 << 20, 4 << 20, 16 << 30
SLOWEST_HASH_RATE = 20 << 20  # bytes/s we still wait for before calling a hashing call lost


class MeasureFailed(Exception):
    def __init__(self, message: str, *, transient: bool = False):
        super().__init__(message)
        self.message = message
        self.transient = transient


@dataclass
class Measurement:
    size_bytes: int
    file_count: int
    checksum: str
    lines: list[bytes]


def _clamp(value: float, low: int, high: int) -> int:
    return int(max(low, min(high, value)))


def _listing(files: ClusterFiles, path: str, cluster: str, account: str) -> tuple[str, list[FileEntry]]:
    """The folder to hash from and the files to hash, for a folder or a single file."""
    unreadable = MeasureFailed(f"{path} does not exist on {cluster} or is not readable by {account}.")
    try:
        stat = files.stat(path)
        if stat.kind == "dir":
            return path, files.list(path)
    except RemoteFileMissing:
        raise unreadable from None
    except RemoteCommandFailed as exc:
        # find goes on past an unreadable subfolder, says so and fails.
        raise MeasureFailed(f"Part of {path} on {cluster} cannot be read by {account}: {exc.detail}") from None
    if stat.kind != "file":
        raise MeasureFailed(f"{path} on {cluster} is neither a folder nor a regular file.")
    return posixpath.dirname(path), [FileEntry(posixpath.basename(path), stat.size)]


def measure(
    grant: ClusterGrant,
    path: str,
    *,
    on_listing: Callable[[int, int], None] = lambda files, size: None,
    on_progress: Callable[[int, int], None] = lambda files, size: None,
) -> Measurement:
    """List, then hash ``path`` on the grant's cluster as the grant's account, chunk by chunk."""
    cluster, account = grant.cluster.name, grant.cluster_username
    try:
        with slurm_client(grant) as client:
            files = client.files
            base, listing = _listing(files, path, cluster, account)
            if not listing:
                raise MeasureFailed(f"{path} on {cluster} holds no files.")
            total_files, total_bytes = len(listing), sum(entry.size for entry in listing)
            on_listing(total_files, total_bytes)

            lines: list[bytes] = []
            files_done = bytes_done = 0
            max_files, max_bytes = FIRST_CHUNK_FILES, FIRST_CHUNK_BYTES
            while files_done < total_files:
                chunk, chunk_bytes = [], 0
                for entry in listing[files_done:]:
                    if chunk and (len(chunk) >= max_files or chunk_bytes + entry.size > max_bytes):
                        break
                    chunk.append(entry.name)
                    chunk_bytes += entry.size
                started = time.monotonic()
                try:
                    lines.extend(files.sha256_many(base, chunk, timeout=max(120.0, chunk_bytes / SLOWEST_HASH_RATE)))
                except RemoteFileMissing:
                    raise MeasureFailed(f"{path} disappeared from {cluster} while it was being checksummed.") from None
                except RemoteCommandFailed as exc:
                    if base != path:  # a single file: the one file cannot be read
                        raise MeasureFailed(
                            f"{path} does not exist on {cluster} or is not readable by {account}."
                        ) from None
                    raise MeasureFailed(f"Checksumming {path} on {cluster} as {account} failed: {exc.detail}") from None
                files_done += len(chunk)
                bytes_done += chunk_bytes
                on_progress(files_done, bytes_done)
                scale = CHUNK_SECONDS / max(time.monotonic() - started, 0.01)
                scale = max(0.5, min(4.0, scale))
                max_files = _clamp(max_files * scale, MIN_CHUNK_FILES, MAX_CHUNK_FILES)
                max_bytes = _clamp(max_bytes * scale, MIN_CHUNK_BYTES, MAX_CHUNK_BYTES)
    except MeasureFailed:
        raise
    except UnsupportedOperation as exc:  # a grant whose transport has no way to the files
        raise MeasureFailed(exc.message) from None
    except SlurmError as exc:
        raise MeasureFailed(f"Could not reach {cluster}: {exc}", transient=not exc.permanent) from None
    except Exception as exc:  # the SSH connection broke mid-command, or something we did not foresee
        log.exception("checksumming %s on %s failed", path, cluster)
        raise MeasureFailed(f"Checksumming {path} on {cluster} stopped: {exc}", transient=True) from None
    return Measurement(size_bytes=total_bytes, file_count=total_files, checksum=manifest_checksum(lines), lines=lines)


def manifest_checksum(lines: list[bytes]) -> str:
    digest = hashlib.sha256()
    for line in lines:
        digest.update(line + b"\n")
    return digest.hexdigest()


def manifest_names(lines: list[bytes]) -> dict[str, str]:
    """{relative name: sha256} from manifest lines (names as they appear in the manifest)."""
    result = {}
    for line in lines:
        plain = line.removeprefix(b"\\")
        result[plain[66:].decode("utf-8", "replace")] = plain[:64].decode()
    return result
