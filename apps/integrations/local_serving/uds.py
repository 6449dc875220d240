"""HTTP to a model server over its Unix socket (it listens on no TCP port at all).

Before a request is sent, the process at the other end is checked with SO_PEERCRED: it must
be the recorded server (its pid) running as its slot's user (its uid). A socket path alone
proves nothing: whoever could replace the file would otherwise get the hub's requests."""

from __future__ import annotations

import http.client
import socket
import struct
from collections.abc import Callable

PeerCheck = Callable[[int, int], bool]  # (pid, uid) of the listening process -> acceptable?


class Unreachable(Exception):
    """No server behind the socket (not started, still loading, or stopped)."""


class TimedOut(Exception):
    pass


class WrongPeer(Exception):
    """Something other than the recorded server listens on the socket."""


def peer_of(sock: socket.socket) -> tuple[int, int]:
    """(pid, uid) of the process that listens at the other end of a connected Unix socket."""
    pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    return pid, uid


class _Connection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float, peer: PeerCheck | None) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path
        self._peer = peer

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
            if self._peer is not None:
                pid, uid = peer_of(sock)
                if not self._peer(pid, uid):
                    raise WrongPeer(f"{self._path} is answered by pid {pid} (uid {uid}), not by the model server")
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def request(
    path: str,
    method: str,
    url: str,
    *,
    body: bytes | None = None,
    timeout: float,
    peer: PeerCheck | None,
) -> tuple[int, bytes]:
    """(status, body) of one HTTP request to the server listening on `path`. `peer(pid, uid)`
    says whether the listening process is the expected one; WrongPeer, with nothing sent,
    when it is not. None skips the check (only for a caller with no server to expect)."""
    conn = _Connection(path, timeout, peer)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        try:
            conn.request(method, url, body=body, headers=headers)
        except (FileNotFoundError, ConnectionRefusedError, PermissionError) as exc:
            raise Unreachable(type(exc).__name__) from None
        resp = conn.getresponse()
        return resp.status, resp.read()
    except TimeoutError:
        raise TimedOut() from None
    except (http.client.HTTPException, OSError) as exc:
        raise Unreachable(type(exc).__name__) from None
    finally:
        conn.close()
