"""HTTP to a model server over its Unix socket (it listens on no TCP port at all)."""

from __future__ import annotations

import http.client
import socket


class Unreachable(Exception):
    """No server behind the socket (not started, still loading, or stopped)."""


class TimedOut(Exception):
    pass


class _Connection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def request(path: str, method: str, url: str, *, body: bytes | None = None, timeout: float) -> tuple[int, bytes]:
    """(status, body) of one HTTP request to the server listening on `path`."""
    conn = _Connection(path, timeout)
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
