"""Real identity providers on loopback for the sign-in tests: OpenLDAP's slapd (Debian's
package) with a small directory, and panva's oidc-provider (compose/local/oidc, run by Node).
Both are started by these fixtures in a temporary folder and stopped after the session."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.conf import settings

ROOT = Path(settings.BASE_DIR)
SLAPD = shutil.which("slapd") or "/usr/sbin/slapd"
SUFFIX = "dc=axle,dc=test"
READER_DN = f"cn=reader,{SUFFIX}"
READER_PASSWORD = "reader-secret-1"
ADMIN_DN = f"cn=admin,{SUFFIX}"
ADMIN_PASSWORD = "admin-secret-1"


def _missing(what: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is missing; ./dev test installs it")
    pytest.skip(f"{what} is missing (./dev test installs it)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(check, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not start within {timeout:.0f}s")


@dataclass
class Directory:
    uri: str
    folder: Path

    def ldap(self, tool: str, ldif: str) -> None:
        """Change the directory as its administrator (ldapadd, ldapmodify, ldapdelete)."""
        result = subprocess.run(
            [tool, "-x", "-H", self.uri, "-D", ADMIN_DN, "-w", ADMIN_PASSWORD],
            input=ldif,
            text=True,
            capture_output=True,
        )
        assert result.returncode == 0, result.stderr

    def add_person(self, uid: str, password: str, *, mail: str = "") -> None:
        hashed = subprocess.run(["slappasswd", "-s", password], capture_output=True, text=True, check=True).stdout
        self.ldap(
            "ldapadd",
            f"dn: uid={uid},ou=people,{SUFFIX}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid.title()}\n"
            f"sn: {uid.title()}\nmail: {mail or uid + '@example.org'}\nuserPassword: {hashed.strip()}\n",
        )

    def set_groups(self, uid: str, groups: list[str]) -> None:
        """Make `uid` a member of exactly `groups` (groupOfNames under ou=groups)."""
        dn = f"uid={uid},ou=people,{SUFFIX}"
        for group in ALL_GROUPS:
            change = "add" if group in groups else "delete"
            result = subprocess.run(
                ["ldapmodify", "-x", "-c", "-H", self.uri, "-D", ADMIN_DN, "-w", ADMIN_PASSWORD],
                input=f"dn: cn={group},ou=groups,{SUFFIX}\nchangetype: modify\n{change}: member\nmember: {dn}\n",
                text=True,
                capture_output=True,
            )
            # 20: already a member; 16: was not one. Either way the wanted state holds.
            assert result.returncode in (0, 16, 20), result.stderr

    def remove_person(self, uid: str) -> None:
        self.set_groups(uid, [])
        subprocess.run(
            ["ldapdelete", "-x", "-H", self.uri, "-D", ADMIN_DN, "-w", ADMIN_PASSWORD, f"uid={uid},ou=people,{SUFFIX}"],
            check=True,
            capture_output=True,
        )


ALL_GROUPS = ["vision-members", "vision-approvers", "physics-members"]

SLAPD_CONF = """\
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile {folder}/slapd.pid
database mdb
maxsize 10485760
suffix "{suffix}"
rootdn "{admin}"
rootpw {admin_password}
directory {folder}/db
access to attrs=userPassword by self write by anonymous auth by * none
access to * by dn.exact="{reader}" read by self read by * none
"""


@pytest.fixture(scope="session")
def ldap_directory():
    if not os.path.exists(SLAPD) or not shutil.which("ldapadd"):
        _missing("OpenLDAP (Debian's slapd and ldap-utils)")
    folder = Path(tempfile.mkdtemp(prefix="axle-slapd-"))
    (folder / "db").mkdir()
    (folder / "slapd.conf").write_text(
        SLAPD_CONF.format(folder=folder, suffix=SUFFIX, admin=ADMIN_DN, admin_password=ADMIN_PASSWORD, reader=READER_DN)
    )
    port = free_port()
    uri = f"ldap://127.0.0.1:{port}"
    # -d 0: stay in the foreground (so the fixture owns the process) and print nothing.
    process = subprocess.Popen(
        [SLAPD, "-f", str(folder / "slapd.conf"), "-h", f"{uri}/", "-d", "0"],
        stdout=subprocess.DEVNULL,
        stderr=open(folder / "slapd.log", "w"),  # noqa: SIM115
    )
    directory = Directory(uri=uri, folder=folder)
    try:
        _wait(lambda: _listening(port), "slapd")
        reader = subprocess.run(["slappasswd", "-s", READER_PASSWORD], capture_output=True, text=True).stdout.strip()
        groups = "".join(
            f"dn: cn={g},ou=groups,{SUFFIX}\nobjectClass: groupOfNames\ncn: {g}\nmember: {ADMIN_DN}\n\n"
            for g in ALL_GROUPS
        )
        directory.ldap(
            "ldapadd",
            f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\no: Axle test\ndc: axle\n\n"
            f"dn: ou=people,{SUFFIX}\nobjectClass: organizationalUnit\nou: people\n\n"
            f"dn: ou=groups,{SUFFIX}\nobjectClass: organizationalUnit\nou: groups\n\n"
            f"dn: {READER_DN}\nobjectClass: simpleSecurityObject\nobjectClass: organizationalRole\ncn: reader\n"
            f"userPassword: {reader}\n\n{groups}",
        )
        yield directory
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def ldap_settings(settings, ldap_directory):
    """The hub configured as the README says, against the test directory."""
    settings.AXLE_LDAP_URI = settings.AUTH_LDAP_SERVER_URI = ldap_directory.uri
    settings.AUTH_LDAP_BIND_DN = READER_DN
    settings.AUTH_LDAP_BIND_PASSWORD = READER_PASSWORD
    settings.AXLE_LDAP_USER_BASE = f"ou=people,{SUFFIX}"
    settings.AXLE_LDAP_GROUP_BASE = f"ou=groups,{SUFFIX}"
    settings.AXLE_SSO_GROUP_MAP = GROUP_MAP
    settings.AUTHENTICATION_BACKENDS = [
        "axes.backends.AxesStandaloneBackend",
        "apps.identity.ldap.DirectoryLDAPBackend",
        "apps.identity.backends.LocalPasswordBackend",
    ]
    return settings


GROUP_MAP = {
    "vision-members": "vision:member",
    "vision-approvers": "vision:approver",
    f"cn=physics-members,ou=groups,{SUFFIX}": "physics:member",  # a DN works as well as a name
}


@dataclass
class Provider:
    issuer: str
    accounts_file: Path
    client_id: str
    client_secret: str
    process: subprocess.Popen

    def set_account(self, username: str, password: str, groups: list[str], *, disabled: bool = False) -> None:
        accounts = json.loads(self.accounts_file.read_text())
        accounts[username] = {"password": password, "groups": groups, "disabled": disabled}
        self.accounts_file.write_text(json.dumps(accounts))


def start_provider(redirect_uri: str, *, id_token_ttl: int = 600) -> Provider:
    node = shutil.which("node")
    provider_dir = ROOT / "compose" / "local" / "oidc"
    if node is None or not (provider_dir / "node_modules" / "oidc-provider").is_dir():
        _missing("The OpenID provider (Node.js and compose/local/oidc's npm packages)")
    folder = Path(tempfile.mkdtemp(prefix="axle-oidc-"))
    accounts = folder / "accounts.json"
    accounts.write_text("{}")
    secret = folder / "client-secret"
    secret.write_text("client-secret-" + os.urandom(8).hex())
    secret.chmod(0o600)
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "OIDC_PORT": str(port),
        "OIDC_CLIENT_ID": "axle-hub",
        "OIDC_CLIENT_SECRET_FILE": str(secret),
        "OIDC_REDIRECT_URIS": redirect_uri,
        "OIDC_ACCOUNTS_FILE": str(accounts),
        "OIDC_ID_TOKEN_TTL": str(id_token_ttl),
    }
    process = subprocess.Popen(
        [node, str(provider_dir / "provider.mjs")],
        env=env,
        cwd=provider_dir,
        stdout=open(folder / "provider.log", "w"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
    )
    issuer = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            with urllib.request.urlopen(f"{issuer}/.well-known/openid-configuration", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    _wait(up, "the OpenID provider")
    return Provider(issuer, accounts, "axle-hub", secret.read_text(), process)


def oidc_configure(settings, provider: Provider) -> None:
    from apps.identity import oidc

    oidc._discovered.clear()
    settings.AXLE_OIDC_ISSUER = provider.issuer
    settings.AXLE_OIDC_NAME = "Test directory"
    settings.OIDC_RP_CLIENT_ID = provider.client_id
    settings.OIDC_RP_CLIENT_SECRET = provider.client_secret
    settings.AXLE_SSO_GROUP_MAP = GROUP_MAP
    settings.AUTHENTICATION_BACKENDS = [
        "axes.backends.AxesStandaloneBackend",
        "apps.identity.oidc.DirectoryOIDCBackend",
        "apps.identity.backends.LocalPasswordBackend",
    ]
