"""Started by LocalBackend with the serving environment's Python (not the hub's): fetch the
model, prove it is the approved artifact, then become `mlflow models serve`.

Standalone on purpose: it runs in the environment models are served from, which has mlflow
but not Axle. The sha256 is the registry's `directory_sha256` (sorted relative paths, each
followed by NUL, its 8-byte length and its bytes) so a model whose files changed after
approval is refused instead of served. Downloading `models:/<name>/<version>` makes mlflow
write a `registered_model_meta` file (name and version) next to the model; it is not part of
the logged artifact the registry hashed, so it is left out. `os.execv` keeps the pid, so the pid the backend
recorded is the model server's.

    python launch.py MLFLOW_BIN MODEL_URI SHA256 DEST HOST PORT WORKERS
"""

import hashlib
import os
import sys
from pathlib import Path

ADDED_BY_DOWNLOAD = {"registered_model_meta"}


def directory_sha256(root):
    base = Path(root)
    files = sorted(p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file())
    files = [rel for rel in files if rel not in ADDED_BY_DOWNLOAD]
    digest = hashlib.sha256()
    for rel in files:
        digest.update(rel.encode() + b"\0")
        digest.update((base / rel).stat().st_size.to_bytes(8, "big"))
        with open(base / rel, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def main(argv):
    mlflow_bin, model_uri, sha256, dest, host, port, workers = argv
    import mlflow.artifacts

    print(f"axle: downloading {model_uri}", flush=True)
    local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=dest)
    if sha256:
        actual = directory_sha256(local)
        if actual != sha256:
            print(f"axle: refusing to serve {model_uri}: artifact sha256 is {actual}, approved {sha256}", flush=True)
            return 3
        print(f"axle: artifact sha256 {actual} matches", flush=True)
    args = [mlflow_bin, "models", "serve", "-m", local, "--env-manager", "local"]
    args += ["-h", host, "-p", port, "--workers", workers]
    os.execv(mlflow_bin, args)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
