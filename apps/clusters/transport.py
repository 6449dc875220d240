"""Build the Slurm client for a grant: the one place secrets are decrypted for use.

Callers use it as a context manager and never inside a database transaction."""

import base64
from collections.abc import Iterator
from contextlib import contextmanager

from apps.core import crypto
from apps.integrations.slurm.base import HostKeyError, SlurmClient, TransportError
from apps.integrations.slurm.rest import RestClient
from apps.integrations.slurm.ssh import SSHClient

from .models import Cluster, ClusterGrant


def _ssh(grant: ClusterGrant) -> SSHClient:
    cluster = grant.cluster
    if not cluster.login_host:
        raise TransportError(f"Cluster {cluster.name} has no login host configured.", permanent=True)
    if not cluster.host_key.strip():
        raise HostKeyError(
            f"Cluster {cluster.name} has no confirmed host key; an administrator must confirm it before Axle connects."
        )
    if not grant.ssh_private_key_encrypted:
        raise TransportError(
            f"The grant for {grant.cluster_username} on {cluster.name} has no SSH key yet; an administrator adds one.",
            permanent=True,
        )
    try:
        key = crypto.decrypt(grant.ssh_private_key_encrypted)
    except crypto.SecretUnreadable as exc:
        raise TransportError(str(exc), permanent=True) from None
    return SSHClient(
        cluster.login_host, cluster.login_port, grant.cluster_username, key, cluster.host_key.strip().splitlines()
    )


def _rest(grant: ClusterGrant) -> RestClient:
    cluster = grant.cluster
    if not cluster.rest_url:
        raise TransportError(f"Cluster {cluster.name} has no slurmrestd URL configured.", permanent=True)
    token = jwt_key = None
    try:
        if grant.rest_token_encrypted:
            token = crypto.decrypt(grant.rest_token_encrypted)
        elif cluster.jwt_key_encrypted:
            # Stored base64-encoded: signing keys are raw bytes.
            jwt_key = base64.b64decode(crypto.decrypt(cluster.jwt_key_encrypted))
    except crypto.SecretUnreadable as exc:
        raise TransportError(str(exc), permanent=True) from None
    if token is None and jwt_key is None:
        raise TransportError(
            f"Neither the grant for {grant.cluster_username} nor cluster {cluster.name} has a slurmrestd credential.",
            permanent=True,
        )
    # slurmrestd has no file API: job logs are read over the login node when the grant
    # also holds an SSH key.
    files = _ssh(grant) if grant.ssh_private_key_encrypted and cluster.login_host and cluster.host_key else None
    return RestClient(
        cluster.rest_url, grant.cluster_username, token=token, jwt_key=jwt_key,
        api_version=cluster.rest_api_version, file_reader=files,
    )


@contextmanager
def slurm_client(grant: ClusterGrant) -> Iterator[SlurmClient]:
    client = _rest(grant) if grant.cluster.transport == Cluster.Transport.REST else _ssh(grant)
    try:
        yield client
    finally:
        client.close()


def ssh_for_files(client: SlurmClient) -> SSHClient | None:
    """The SSH connection behind a client, for creating folders and reading files."""
    if isinstance(client, SSHClient):
        return client
    reader = getattr(client, "file_reader", None)
    return reader if isinstance(reader, SSHClient) else None
