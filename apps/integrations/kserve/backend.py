"""The KServe serving backend: InferenceServices through the Kubernetes API.

Talks to the API server with the official `kubernetes` client (`CustomObjectsApi`) built from
one environment's kubeconfig. It never loads the process-wide default configuration, because
the hub serves several environments, each with its own cluster and credentials.

Every call is idempotent, as the serving contract requires: `apply` creates, or on
AlreadyExists reads the object and replaces it under the resourceVersion it read (optimistic
concurrency, retried on a Conflict); `delete` of something absent is fine.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from apps.integrations.serving.base import BackendStatus, DeploymentSpec, ServingError

from .manifest import (
    ANNOTATION_OWNER,
    GROUP,
    MANAGED_BY_LABEL,
    MANAGED_BY_SELECTOR,
    MANAGED_BY_VALUE,
    PLURAL,
    VERSION,
    inference_service,
)

logger = logging.getLogger(__name__)

# Statuses that a retry cannot fix: the request itself or the credentials are wrong.
_PERMANENT_STATUSES = {400, 401, 403, 404, 405, 406, 410, 413, 415, 422}


class KServeBackend:
    """Serve deployments as KServe InferenceServices.

    Build it from one of:
    - `api_client`: a configured `kubernetes.client.ApiClient` (tests, or a caller that built one);
    - `kubeconfig`: the path of a kubeconfig file, with an optional `context`;
    - `KServeBackend.from_kubeconfig_text(text, context=…)`: kubeconfig YAML held in memory,
      e.g. an environment's decrypted kubeconfig, never written to disk by Axle;
    - nothing but `context`: the default kubeconfig (`$KUBECONFIG` or ~/.kube/config).

    `ingress_url` sends predictions to a cluster ingress (e.g. the Istio ingress gateway)
    with the InferenceService's host name in the Host header, for clusters whose
    `status.url` host names do not resolve from the hub.
    """

    # Page size when listing; a namespace can hold many InferenceServices.
    page_size = 500

    def __init__(
        self,
        api_client: client.ApiClient | None = None,
        *,
        kubeconfig: str | os.PathLike[str] | None = None,
        context: str | None = None,
        request_timeout: float = 10.0,
        predict_timeout: float = 30.0,
        ingress_url: str | None = None,
        conflict_retries: int = 5,
    ) -> None:
        if api_client is not None and (kubeconfig is not None or context is not None):
            raise ValueError("Pass either api_client or kubeconfig/context, not both.")
        if api_client is None:
            api_client = _client_from_file(kubeconfig, context)
        self._api = client.CustomObjectsApi(api_client)
        self._timeout = request_timeout
        self._predict_timeout = predict_timeout
        self._ingress_url = ingress_url.rstrip("/") if ingress_url else None
        self._conflict_retries = conflict_retries
        self._http = requests.Session()

    @classmethod
    def from_kubeconfig_text(cls, text: str, *, context: str | None = None, **options: Any) -> KServeBackend:
        """A backend for the cluster described by kubeconfig YAML in memory."""
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError:
            # The parser's message quotes the offending line, which may hold a token.
            raise ServingError("The kubeconfig is not valid YAML.", permanent=True) from None
        if not isinstance(data, dict):
            raise ServingError("The kubeconfig is not a YAML mapping.", permanent=True)
        try:
            api_client = config.new_client_from_config_dict(data, context=context, persist_config=False)
        except (ConfigException, KeyError, TypeError, ValueError) as exc:
            raise ServingError(f"The kubeconfig cannot be used: {_config_problem(exc)}", permanent=True) from None
        return cls(api_client, **options)

    def __repr__(self) -> str:
        # Never the configuration: it holds the cluster's bearer token or client key.
        return f"<KServeBackend {self._api.api_client.configuration.host}>"

    # -- the ServingBackend contract ------------------------------------------------------

    def apply(self, spec: DeploymentSpec) -> BackendStatus:
        desired = inference_service(spec)
        where = f"{spec.namespace}/{spec.name}"
        for _ in range(self._conflict_retries):
            try:
                created = self._call(
                    "create",
                    where,
                    self._api.create_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    spec.namespace,
                    PLURAL,
                    desired,
                    # Strict: a field this cluster's KServe does not know (an older CRD without
                    # canaryTrafficPercent, say) is refused instead of silently pruned, which
                    # would quietly send all traffic to the new version.
                    field_validation="Strict",
                )
                logger.info("Created InferenceService %s", where)
                return dataclasses.replace(_backend_status(created), changed=True)
            except _Conflict:
                pass  # AlreadyExists: update it below
            current = self._read(spec.name, spec.namespace)
            if current is None:
                continue  # deleted between our create and read: create again
            _refuse_foreign(current, where, spec.owner)
            if current["metadata"].get("deletionTimestamp"):
                raise ServingError(
                    f"InferenceService {where} is still being deleted; apply again once it is gone.",
                    permanent=False,
                )
            updated = _updated(current, desired)
            if updated == _without_status(current):
                return _backend_status(current)  # already as desired: no new generation
            try:
                replaced = self._call(
                    "update",
                    where,
                    self._api.replace_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    spec.namespace,
                    PLURAL,
                    spec.name,
                    updated,
                    field_validation="Strict",
                )
                logger.info("Updated InferenceService %s", where)
                return dataclasses.replace(_backend_status(replaced), changed=True)
            except (_Conflict, _NotFound):
                continue  # changed or deleted after our read: start over
        raise ServingError(f"InferenceService {where} kept changing while being applied; try again.", permanent=False)

    def status(self, name: str, namespace: str) -> BackendStatus:
        current = self._read(name, namespace)
        if current is None:
            return BackendStatus(exists=False, ready=False)
        return _backend_status(current)

    def delete(self, name: str, namespace: str) -> None:
        where = f"{namespace}/{name}"
        current = self._read(name, namespace)
        if current is None:
            return
        _refuse_foreign(current, where)
        try:
            self._call(
                "delete",
                where,
                self._api.delete_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                name,
                # The uid we checked: an object of the same name created since is not ours
                # to delete.
                body=client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=current["metadata"]["uid"])),
            )
        except _NotFound:
            return
        except _Conflict:
            raise ServingError(
                f"InferenceService {where} was replaced while being deleted; try again.", permanent=False
            ) from None
        logger.info("Deleted InferenceService %s", where)

    def list_names(self, namespace: str) -> list[str]:
        names: list[str] = []
        token: str | None = None
        while True:
            page = self._call(
                "list",
                namespace,
                self._api.list_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                label_selector=MANAGED_BY_SELECTOR,
                limit=self.page_size,
                _continue=token,
            )
            names.extend(item["metadata"]["name"] for item in page.get("items", []))
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return sorted(names)

    def predict(self, name: str, namespace: str, payload: dict) -> dict:
        """POST an Open Inference Protocol (v2) request to the model's `infer` endpoint."""
        where = f"{namespace}/{name}"
        state = self.status(name, namespace)
        if not state.exists:
            raise ServingError(f"InferenceService {where} does not exist.", permanent=True)
        if not state.url:
            raise ServingError(f"InferenceService {where} has no URL yet: {state.message or 'not ready'}.")
        url = f"{state.url.rstrip('/')}/v2/models/{name}/infer"
        headers = {"Content-Type": "application/json"}
        if self._ingress_url:
            parts = urlsplit(state.url)
            headers["Host"] = parts.netloc
            url = f"{self._ingress_url}{parts.path.rstrip('/')}/v2/models/{name}/infer"
        try:
            response = self._http.post(url, data=json.dumps(payload), headers=headers, timeout=self._predict_timeout)
        except requests.Timeout:
            waited = f"{self._predict_timeout:g}s"
            raise ServingError(f"The model server of {where} did not answer within {waited}.") from None
        except requests.RequestException as exc:
            raise ServingError(f"The model server of {where} is unreachable: {exc.__class__.__name__}.") from None
        if response.status_code >= 400:
            message = _model_server_message(response)
            permanent = 400 <= response.status_code < 500 and response.status_code not in (408, 429)
            raise ServingError(
                f"The model server of {where} refused the request (HTTP {response.status_code}): {message}",
                permanent=permanent,
            )
        try:
            return response.json()
        except ValueError:
            raise ServingError(f"The model server of {where} answered with something other than JSON.") from None

    # -- plumbing -------------------------------------------------------------------------

    def _read(self, name: str, namespace: str) -> dict[str, Any] | None:
        try:
            return self._call(
                "read",
                f"{namespace}/{name}",
                self._api.get_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                name,
            )
        except _NotFound:
            return None

    def _call(self, action: str, where: str, method: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, _request_timeout=self._timeout, **kwargs)
        except ApiException as exc:
            reason, message, details = _server_status(exc)
            if exc.status == 409:
                raise _Conflict(message) from None
            # Only a 404 naming the object means it is absent; a bare one ("the server could
            # not find the requested resource") means KServe's CRD is not installed.
            if exc.status == 404 and details.get("name") and action != "create":
                raise _NotFound(message) from None
            raise ServingError(
                f"Kubernetes refused to {action} InferenceService {where} (HTTP {exc.status}): {message}",
                permanent=exc.status in _PERMANENT_STATUSES,
            ) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            # The exception text holds the host and path, never the credentials.
            message = f"The Kubernetes API is unreachable ({action} {where}): {exc}"
            raise ServingError(message, permanent=False) from None


class _Conflict(Exception):
    pass


class _NotFound(Exception):
    pass


def _client_from_file(kubeconfig: str | os.PathLike[str] | None, context: str | None) -> client.ApiClient:
    try:
        # persist_config=False: a refreshed token is not written back into a file the hub
        # does not own.
        return config.new_client_from_config(
            config_file=os.fspath(kubeconfig) if kubeconfig is not None else None,
            context=context,
            persist_config=False,
        )
    except (ConfigException, OSError, KeyError, TypeError, ValueError) as exc:
        raise ServingError(f"The kubeconfig cannot be used: {_config_problem(exc)}", permanent=True) from None


def _config_problem(exc: Exception) -> str:
    # ConfigException messages name files, keys and contexts; other exceptions from deep in
    # the loader could echo a value, so only their type is shown.
    if isinstance(exc, ConfigException | OSError):
        return str(exc)
    return exc.__class__.__name__


def _server_status(exc: ApiException) -> tuple[str, str, dict[str, Any]]:
    """The reason, message and details of the API server's Status body (never the headers,
    which `str(exc)` would include)."""
    try:
        body = json.loads(exc.body or "")
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("kind") == "Status":
        details = body.get("details") if isinstance(body.get("details"), dict) else {}
        return str(body.get("reason") or ""), str(body.get("message") or exc.reason or ""), details
    return "", str(exc.reason or f"HTTP {exc.status}"), {}


def _refuse_foreign(current: dict[str, Any], where: str, owner: str = "") -> None:
    labels = current["metadata"].get("labels") or {}
    if labels.get(MANAGED_BY_LABEL) != MANAGED_BY_VALUE:
        raise ServingError(
            f"InferenceService {where} exists but is not managed by Axle; refusing to change it.", permanent=True
        )
    # Another environment's or model's service under the same name: never take it over.
    current_owner = (current["metadata"].get("annotations") or {}).get(ANNOTATION_OWNER, "")
    if current_owner and owner and current_owner != owner:
        raise ServingError(
            f"InferenceService {where} serves another deployment ({current_owner}); refusing to replace it.",
            permanent=True,
        )


def _updated(current: dict[str, Any], desired: dict[str, Any]) -> dict[str, Any]:
    """`current` with Axle's part replaced by `desired`: the whole spec (so a field Axle no
    longer sets, such as a finished canary's canaryTrafficPercent, goes away), Axle's labels
    and annotations on top of everyone else's. The resourceVersion, uid and finalizers of
    `current` stay, so the replace fails with a Conflict if the object changed since read."""
    # status is the controller's; the API ignores it on this path anyway.
    updated = copy.deepcopy(_without_status(current))
    meta = updated["metadata"]
    for key in ("labels", "annotations"):
        meta[key] = {**(meta.get(key) or {}), **desired["metadata"][key]}
    updated["spec"] = copy.deepcopy(desired["spec"])
    return updated


def _without_status(obj: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in obj.items() if key != "status"}


def _backend_status(obj: dict[str, Any]) -> BackendStatus:
    status = obj.get("status") or {}
    conditions = status.get("conditions") or []
    ready_condition = next((c for c in conditions if c.get("type") == "Ready"), None)
    generation = obj.get("metadata", {}).get("generation")
    observed = status.get("observedGeneration")
    url = status.get("url") or ""
    if observed is not None and generation is not None and observed < generation:
        # A Ready=True left from the previous spec says nothing about the new one.
        return BackendStatus(True, False, url, f"KServe has not yet reconciled generation {generation}.")
    if ready_condition is None:
        return BackendStatus(True, False, url, "Waiting for KServe to report readiness.")
    if ready_condition.get("status") == "True":
        return BackendStatus(True, True, url, "")
    message = ready_condition.get("message") or ready_condition.get("reason") or "Not ready."
    failing = next(
        (c for c in conditions if c.get("type") != "Ready" and c.get("status") == "False" and c.get("message")), None
    )
    if failing is not None and not ready_condition.get("message"):
        message = f"{failing['type']}: {failing['message']}"
    return BackendStatus(True, False, url, message)


def _model_server_message(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500] or response.reason
    if isinstance(body, dict):
        # MLServer answers {"error": "..."}; KServe's own servers {"detail": ...}.
        for key in ("error", "detail", "message"):
            if body.get(key):
                return str(body[key])[:500]
    return json.dumps(body)[:500]
