"""Where the portal's URL and the token are kept: $XDG_CONFIG_HOME/axle/config.toml (by
default ~/.config/axle/config.toml, %APPDATA%\\axle on Windows), readable by its owner only.
AXLE_URL and AXLE_TOKEN override the file; AXLE_CONFIG names another file."""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 on a laptop
    import tomli as tomllib

from .errors import AuthError, UsageError

DEFAULT_URL = "http://127.0.0.1:8000"


def config_path() -> Path:
    if os.environ.get("AXLE_CONFIG"):
        return Path(os.environ["AXLE_CONFIG"]).expanduser()
    if os.environ.get("XDG_CONFIG_HOME"):
        base = Path(os.environ["XDG_CONFIG_HOME"])
    elif sys.platform == "win32" and os.environ.get("APPDATA"):
        base = Path(os.environ["APPDATA"])
    else:
        base = Path.home() / ".config"
    return base / "axle" / "config.toml"


@dataclass
class Config:
    url: str = ""
    token: str = ""
    username: str = ""
    source: str = ""  # where the token came from, for `axle whoami`


def load() -> Config:
    """The file's settings, with AXLE_URL / AXLE_TOKEN over them."""
    path = config_path()
    data: dict = {}
    if path.exists():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise UsageError(f"{path} cannot be read ({exc}); fix it or run `axle login` again.") from None
    cfg = Config(
        url=str(data.get("url", "")),
        token=str(data.get("token", "")),
        username=str(data.get("username", "")),
        source=str(path) if data.get("token") else "",
    )
    if os.environ.get("AXLE_URL"):
        cfg.url = os.environ["AXLE_URL"]
    if os.environ.get("AXLE_TOKEN"):
        cfg.token, cfg.source, cfg.username = os.environ["AXLE_TOKEN"], "AXLE_TOKEN", ""
    cfg.url = (cfg.url or DEFAULT_URL).rstrip("/")
    return cfg


def require_token(cfg: Config) -> Config:
    if not cfg.token:
        raise AuthError(f"Not logged in: run `axle login` (or set AXLE_TOKEN). Portal: {cfg.url}")
    return cfg


def _quote(value: str) -> str:
    # TOML basic string: backslash and quote escaped, no control characters (tokens and URLs have none).
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise UsageError("A URL or token cannot hold control characters.")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def save(*, url: str, token: str, username: str) -> Path:
    """Write the file readable by its owner only (0600, its folder 0700), replacing it whole
    so a crash never leaves half a token, and never a moment when others could read it."""
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    text = (
        "# Written by `axle login`. Keep it private: the token acts as you on the portal.\n"
        f"url = {_quote(url)}\n"
        f"username = {_quote(username)}\n"
        f"token = {_quote(token)}\n"
    )
    fd, tmp = tempfile.mkstemp(prefix=".config-", suffix=".toml", dir=path.parent)  # created 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            os.chmod(tmp, 0o600)
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def forget() -> Path | None:
    path = config_path()
    if path.exists():
        path.unlink()
        return path
    return None
