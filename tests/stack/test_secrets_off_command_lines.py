"""Secrets never sit on a command line, which every user of the host can read in
/proc/PID/cmdline: the install scripts hand curl its password or token on stdin
(`curl_secret` in compose/local/lib.sh)."""

import base64
import re
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = [ROOT / "dev", *sorted((ROOT / "compose" / "local").glob("*.sh"))]


def _curl_command_lines() -> list[str]:
    lines = []
    for proc in Path("/proc").iterdir():
        try:
            if (proc / "comm").read_text().strip() == "curl":
                lines.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue
    return lines


def _curl_secret(name: str, value: str, requests: int = 1) -> list[dict]:
    """Run `curl_secret NAME VALUE` against a local server; what the server saw, per request."""
    seen: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            # curl waits for this answer: its command line is there to read now.
            seen.append({"cmdlines": _curl_command_lines(), "headers": dict(self.headers)})
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.handle_request, daemon=True)
    thread.start()
    script = f'source "{ROOT}/compose/local/lib.sh"; curl_secret "$1" "$2" -fsS -o /dev/null "$3"'
    done = subprocess.run(
        ["bash", "-c", script, "t", name, value, f"http://127.0.0.1:{server.server_port}/"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    thread.join(10)
    server.server_close()
    assert done.returncode == 0, done.stderr
    return seen


def test_a_password_reaches_the_server_but_not_curls_command_line():
    password = 'pa"ss\\word-s3cr3t'
    (request,) = _curl_secret("user", f"axle-hub:{password}")
    assert request["headers"]["Authorization"] == "Basic " + base64.b64encode(f"axle-hub:{password}".encode()).decode()
    assert request["cmdlines"], "curl was running while it waited for the answer"
    assert not any("s3cr3t" in line for line in request["cmdlines"])


def test_a_token_header_reaches_the_server_but_not_curls_command_line():
    (request,) = _curl_secret("header", "X-SLURM-USER-TOKEN: eyJ.s3cr3t.sig")
    assert request["headers"]["X-SLURM-USER-TOKEN"] == "eyJ.s3cr3t.sig"
    assert request["cmdlines"] and not any("s3cr3t" in line for line in request["cmdlines"])


def test_the_install_scripts_pass_curl_no_credentials_on_its_command_line():
    offenders = []
    for script in SCRIPTS:
        for number, line in enumerate(script.read_text().splitlines(), start=1):
            if re.search(r"\bcurl\b.*(\s-u\s|--user\b|TOKEN:|Authorization:|--oauth2-bearer)", line):
                offenders.append(f"{script.name}:{number}: {line.strip()}")
    assert offenders == [], "use curl_secret (compose/local/lib.sh):\n" + "\n".join(offenders)
