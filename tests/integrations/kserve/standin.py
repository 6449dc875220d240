"""A Kubernetes API stand-in for KServe InferenceServices, because Kubernetes cannot run on
these machines.

A real HTTP server on 127.0.0.1 (stdlib `http.server`, one thread per request) that speaks
the part of the Kubernetes REST API the `kubernetes` client uses for
`serving.kserve.io/v1beta1` `inferenceservices`: create, get, list (labelSelector, limit and
continue), replace, merge-patch and delete, with the API server's semantics where the backend
depends on them:

- namespaces must exist to create in (404 otherwise); names are unique per namespace (409
  AlreadyExists); uid, creationTimestamp and generation are the server's;
- resourceVersion: every change gets a new one; a replace must carry the current one (422
  without, 409 Conflict when stale); a no-op update keeps it; delete preconditions (uid,
  resourceVersion) give 409 when they do not match;
- status is a subresource: create and replace ignore a status in the body;
- every created or updated object is checked like the API server does: ObjectMeta (name as
  a DNS-1123 subdomain, label and annotation syntax), then the CRD's openAPIV3Schema with
  `jsonschema` (422 Invalid with a Status body and causes), then unknown fields: refused
  with 400 under `fieldValidation=Strict`, else pruned with a Warning header;
- bearer-token authentication (401) and per-namespace denial (403) when a test asks for it.

It also serves the CRD itself at
`/apis/apiextensions.k8s.io/v1/customresourcedefinitions/inferenceservices.serving.kserve.io`,
lets a test play the KServe controller (`mark_ready`, `mark_not_ready`, `add_finalizer`),
and answers `POST /v2/models/<name>/infer` for Ready services like MLServer would.

What it does not do: admission webhooks (KServe's defaulting and validation), any
reconciliation, watches, server-side apply, JSON patch, or OpenAPI `format` checks.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jsonschema

GROUP = "serving.kserve.io"
VERSION = "v1beta1"
PLURAL = "inferenceservices"
KIND = "InferenceService"
CRD_NAME = f"{PLURAL}.{GROUP}"
_API_PREFIX = f"/apis/{GROUP}/{VERSION}"
_NAMESPACED = re.compile(rf"^{_API_PREFIX}/namespaces/([^/]+)/{PLURAL}(?:/([^/]+))?(/status)?$")
_INFER = re.compile(r"^/v2/models/([^/]+)/infer$")

_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")

ModelHandler = Callable[[str, dict[str, Any]], tuple[int, dict[str, Any]]]


class ApiError(Exception):
    """Answered as a `Status` object, like every API server error."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def body(self) -> dict[str, Any]:
        status = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            status["details"] = self.details
        return status


class KubernetesStandIn:
    """Start with `with KubernetesStandIn(crd) as api:`; `api.url` is the server to point a
    `kubernetes.client.Configuration(host=…)` or a kubeconfig at."""

    def __init__(
        self, crd: dict[str, Any], *, token: str | None = None, namespaces: tuple[str, ...] = ("default",)
    ) -> None:
        self.crd = crd
        version = next(v for v in crd["spec"]["versions"] if v["name"] == VERSION)
        self.schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
        # OpenAPI 3.0 schemas are JSON Schema draft 4 in spirit (boolean exclusiveMinimum);
        # the x-kubernetes-* extensions are ignored by jsonschema, int-or-string is an anyOf.
        self._validator = jsonschema.Draft4Validator(self.schema)
        self.token = token
        self.namespaces: set[str] = set(namespaces)
        self.forbidden_namespaces: set[str] = set()
        self.crd_installed = True  # False: a cluster without KServe, where the API path is unknown
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path with query), in order
        self.model_handler: ModelHandler = default_model
        # Called with (method, path) before each API request is handled: a test plays a
        # concurrent writer here, e.g. to make a resourceVersion stale.
        self.on_request: Callable[[str, str], None] | None = None
        self._failures: list[int] = []
        self._versions = itertools.count(1000)
        self._last_version = 999
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> KubernetesStandIn:
        handler = type("Handler", (_Handler,), {"standin": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="k8s-standin", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> KubernetesStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -- what a test does instead of a controller -----------------------------------------

    def get(self, name: str, namespace: str = "default") -> dict[str, Any] | None:
        with self._lock:
            obj = self.objects.get((namespace, name))
            return copy.deepcopy(obj) if obj else None

    def mark_ready(self, name: str, namespace: str = "default", url: str | None = None) -> None:
        """What KServe's controller reports once the predictor serves: Ready=True, the URL,
        and the generation it observed."""
        self._set_status(
            name,
            namespace,
            ready="True",
            url=url if url is not None else f"http://{name}.{namespace}.example.com",
        )

    def mark_not_ready(self, name: str, namespace: str = "default", reason: str = "", message: str = "") -> None:
        self._set_status(name, namespace, ready="False", reason=reason, message=message)

    def add_finalizer(
        self, name: str, namespace: str = "default", finalizer: str = "inferenceservice.finalizers"
    ) -> None:
        with self._lock:
            obj = self.objects[(namespace, name)]
            obj["metadata"].setdefault("finalizers", []).append(finalizer)
            obj["metadata"]["resourceVersion"] = self._next_version()

    def touch(self, name: str, namespace: str = "default", **labels: str) -> None:
        """Another writer changes the object (adds labels): its resourceVersion moves on."""
        with self._lock:
            obj = self.objects[(namespace, name)]
            obj["metadata"].setdefault("labels", {}).update(labels)
            obj["metadata"]["resourceVersion"] = self._next_version()

    def fail_next(self, code: int = 503, times: int = 1) -> None:
        """Answer the next `times` API requests with `code`, as an overloaded server does."""
        with self._lock:
            self._failures.extend([code] * times)

    def _set_status(
        self, name: str, namespace: str, *, ready: str, url: str = "", reason: str = "", message: str = ""
    ) -> None:
        with self._lock:
            obj = self.objects[(namespace, name)]
            now = _now()
            condition = {"type": "Ready", "status": ready, "lastTransitionTime": now}
            if reason:
                condition["reason"] = reason
            if message:
                condition["message"] = message
            status: dict[str, Any] = {
                "observedGeneration": obj["metadata"]["generation"],
                "conditions": [
                    {"type": "PredictorReady", "status": ready, "lastTransitionTime": now},
                    condition,
                ],
            }
            if url:
                status["url"] = url
            obj["status"] = status
            errors = self._schema_errors(obj)
            assert not errors, errors  # the stand-in's own status must fit the CRD too
            obj["metadata"]["resourceVersion"] = self._next_version()

    # -- the API --------------------------------------------------------------------------

    def handle(
        self, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        """(status code, JSON body, extra headers) for one request."""
        with self._lock:
            self.requests.append((method, path + (f"?{_query_text(query)}" if query else "")))
        infer = _INFER.match(path)
        if infer and method == "POST":
            return self._infer(infer.group(1), headers.get("host", ""), body)
        if self.on_request is not None:
            self.on_request(method, path)
        try:
            self._authenticate(headers)
            with self._lock:
                if self._failures:
                    code = self._failures.pop(0)
                    raise ApiError(
                        code,
                        HTTPStatus(code).phrase.replace(" ", ""),
                        "the server is currently unable to handle the request",
                    )
            return self._route(method, path, query, headers, body)
        except ApiError as error:
            return error.code, error.body(), {}

    def _authenticate(self, headers: dict[str, str]) -> None:
        if self.token is not None and headers.get("authorization") != f"Bearer {self.token}":
            raise ApiError(401, "Unauthorized", "Unauthorized")

    def _route(
        self, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        if path == f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{CRD_NAME}" and method == "GET":
            return 200, self.crd, {}
        if path == f"{_API_PREFIX}/{PLURAL}" and method == "GET":
            return 200, self._list(None, query), {}
        match = _NAMESPACED.match(path) if self.crd_installed else None
        if not match:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        namespace, name, subresource = match.groups()
        if subresource:
            raise ApiError(
                405, "MethodNotAllowed", "the stand-in does not serve the status subresource; use mark_ready"
            )
        self._authorize(namespace, method)
        with self._lock:
            if name is None and method == "GET":
                return 200, self._list(namespace, query), {}
            if name is None and method == "POST":
                return self._create(namespace, query, _json_body(body))
            if name is not None and method == "GET":
                return 200, copy.deepcopy(self._existing(namespace, name)), {}
            if name is not None and method == "PUT":
                return self._replace(namespace, name, query, _json_body(body))
            if name is not None and method == "PATCH":
                return self._patch(namespace, name, query, headers.get("content-type", ""), _json_body(body))
            if name is not None and method == "DELETE":
                return self._delete(namespace, name, _json_body(body) if body else {})
        raise ApiError(405, "MethodNotAllowed", f"{method} is not supported on {path}")

    def _authorize(self, namespace: str, method: str) -> None:
        if namespace in self.forbidden_namespaces:
            verb = {"GET": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}[method]
            raise ApiError(
                403,
                "Forbidden",
                f'{CRD_NAME} is forbidden: User "system:serviceaccount:axle:axle" cannot {verb} resource '
                f'"{PLURAL}" in API group "{GROUP}" in the namespace "{namespace}"',
                {"group": GROUP, "kind": PLURAL},
            )

    def _existing(self, namespace: str, name: str) -> dict[str, Any]:
        obj = self.objects.get((namespace, name))
        if obj is None:
            raise ApiError(
                404, "NotFound", f'{CRD_NAME} "{name}" not found', {"name": name, "group": GROUP, "kind": PLURAL}
            )
        return obj

    def _list(self, namespace: str | None, query: dict[str, str]) -> dict[str, Any]:
        selector = _parse_selector(query.get("labelSelector", ""))
        items = [
            copy.deepcopy(obj)
            for (ns, _), obj in sorted(self.objects.items())
            if (namespace is None or ns == namespace) and _selected(obj["metadata"].get("labels") or {}, selector)
        ]
        start = int(query.get("continue") or 0)
        limit = int(query.get("limit") or 0)
        page = items[start : start + limit] if limit else items[start:]
        metadata: dict[str, Any] = {"resourceVersion": str(self._current_version())}
        if limit and start + limit < len(items):
            metadata["continue"] = str(start + limit)
        return {"apiVersion": f"{GROUP}/{VERSION}", "kind": f"{KIND}List", "metadata": metadata, "items": page}

    def _create(self, namespace: str, query: dict[str, str], obj: Any) -> tuple[int, Any, dict[str, str]]:
        obj = self._check_kind(obj)
        meta = obj.setdefault("metadata", {})
        if meta.get("namespace", namespace) != namespace:
            raise ApiError(
                400,
                "BadRequest",
                "the namespace of the provided object does not match the namespace sent on the request",
            )
        if namespace not in self.namespaces:
            raise ApiError(
                404, "NotFound", f'namespaces "{namespace}" not found', {"name": namespace, "kind": "namespaces"}
            )
        name = meta.get("name") or ""
        obj.pop("status", None)  # status subresource: not settable on create
        for server_owned in ("uid", "resourceVersion", "generation", "creationTimestamp", "deletionTimestamp"):
            meta.pop(server_owned, None)
        meta["namespace"] = namespace
        warnings = self._admit(obj, name, query)
        if (namespace, name) in self.objects:
            raise ApiError(
                409,
                "AlreadyExists",
                f'{CRD_NAME} "{name}" already exists',
                {"name": name, "group": GROUP, "kind": PLURAL},
            )
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1, resourceVersion=self._next_version())
        self.objects[(namespace, name)] = obj
        return 201, copy.deepcopy(obj), warnings

    def _replace(self, namespace: str, name: str, query: dict[str, str], obj: Any) -> tuple[int, Any, dict[str, str]]:
        obj = self._check_kind(obj)
        meta = obj.setdefault("metadata", {})
        if meta.get("name") != name:
            raise ApiError(
                400,
                "BadRequest",
                f"the name of the object ({meta.get('name')}) does not match the name on the URL ({name})",
            )
        if meta.get("namespace", namespace) != namespace:
            raise ApiError(
                400,
                "BadRequest",
                "the namespace of the provided object does not match the namespace sent on the request",
            )
        current = self._existing(namespace, name)
        if not meta.get("resourceVersion"):
            raise ApiError(
                *_invalid(
                    name,
                    [
                        (
                            "metadata.resourceVersion",
                            "FieldValueInvalid",
                            "Invalid value: 0x0: must be specified for an update",
                        )
                    ],
                )
            )
        if meta["resourceVersion"] != current["metadata"]["resourceVersion"]:
            raise _conflict(name)
        return self._store_update(current, obj, query)

    def _patch(
        self, namespace: str, name: str, query: dict[str, str], content_type: str, patch: Any
    ) -> tuple[int, Any, dict[str, str]]:
        current = self._existing(namespace, name)
        if content_type.split(";")[0].strip() != "application/merge-patch+json":
            raise ApiError(
                415,
                "UnsupportedMediaType",
                f"the stand-in accepts application/merge-patch+json only, not {content_type!r}",
            )
        if not isinstance(patch, dict):
            raise ApiError(400, "BadRequest", "a merge patch must be a JSON object")
        wanted_version = (patch.get("metadata") or {}).get("resourceVersion")
        if wanted_version and wanted_version != current["metadata"]["resourceVersion"]:
            raise _conflict(name)
        merged = _merge_patch(_without(current, "status"), patch)
        merged.setdefault("metadata", {})["resourceVersion"] = current["metadata"]["resourceVersion"]
        return self._store_update(current, merged, query)

    def _store_update(
        self, current: dict[str, Any], obj: dict[str, Any], query: dict[str, str]
    ) -> tuple[int, Any, dict[str, str]]:
        meta = obj["metadata"]
        name = current["metadata"]["name"]
        for server_owned in ("uid", "creationTimestamp", "generation", "namespace", "deletionTimestamp"):
            if server_owned in current["metadata"]:
                meta[server_owned] = current["metadata"][server_owned]
            else:
                meta.pop(server_owned, None)
        obj.pop("status", None)
        if "status" in current:
            obj["status"] = copy.deepcopy(current["status"])  # status subresource: kept
        warnings = self._admit(obj, name, query)
        meta["resourceVersion"] = current["metadata"]["resourceVersion"]
        if obj == current:
            return 200, copy.deepcopy(current), warnings  # a no-op update changes nothing
        if obj.get("spec") != current.get("spec"):
            meta["generation"] = current["metadata"]["generation"] + 1
        meta["resourceVersion"] = self._next_version()
        key = (meta["namespace"], name)
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            del self.objects[key]  # the last finalizer is gone: now it really is deleted
        else:
            self.objects[key] = obj
        return 200, copy.deepcopy(obj), warnings

    def _delete(self, namespace: str, name: str, options: Any) -> tuple[int, Any, dict[str, str]]:
        current = self._existing(namespace, name)
        preconditions = (options or {}).get("preconditions") or {}
        if preconditions.get("uid") and preconditions["uid"] != current["metadata"]["uid"]:
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {CRD_NAME} "{name}": Precondition failed: UID in precondition: '
                f"{preconditions['uid']}, UID in object meta: {current['metadata']['uid']}",
            )
        if (
            preconditions.get("resourceVersion")
            and preconditions["resourceVersion"] != current["metadata"]["resourceVersion"]
        ):
            raise _conflict(name)
        if current["metadata"].get("finalizers"):
            # Like the API server: a finalizer holds the object until its controller lets go.
            current["metadata"].setdefault("deletionTimestamp", _now())
            current["metadata"]["resourceVersion"] = self._next_version()
            return 200, copy.deepcopy(current), {}
        del self.objects[(namespace, name)]
        return 200, copy.deepcopy(current), {}

    # -- admission: what the API server checks before storing ------------------------------

    def _check_kind(self, obj: Any) -> dict[str, Any]:
        if not isinstance(obj, dict):
            raise ApiError(400, "BadRequest", "the body is not a JSON object")
        if obj.get("apiVersion") != f"{GROUP}/{VERSION}":
            raise ApiError(
                400,
                "BadRequest",
                f"the API version in the data ({obj.get('apiVersion')}) does not match "
                f"the expected API version ({GROUP}/{VERSION})",
            )
        if obj.get("kind") != KIND:
            raise ApiError(
                400, "BadRequest", f"the kind in the data ({obj.get('kind')}) does not match the expected kind ({KIND})"
            )
        return obj

    def _admit(self, obj: dict[str, Any], name: str, query: dict[str, str]) -> dict[str, str]:
        """Validate `obj` in place (pruning unknown fields unless Strict); return the
        Warning header to send, if any."""
        unknown = _unknown_fields(obj, self.schema)
        strictness = query.get("fieldValidation", "Warn")
        if unknown and strictness == "Strict":
            fields = ", ".join(f'unknown field "{path}"' for path in unknown)
            raise ApiError(
                400,
                "BadRequest",
                f'{KIND} in version "{VERSION}" cannot be handled as a {KIND}: strict decoding error: {fields}',
            )
        _prune(obj, self.schema, top=True)
        causes = _metadata_errors(obj.get("metadata") or {}) + self._schema_errors(obj)
        if causes:
            raise ApiError(*_invalid(name, causes))
        if unknown and strictness != "Ignore":
            return {"Warning": ", ".join(f'299 - "unknown field \\"{path}\\""' for path in unknown)}
        return {}

    def _schema_errors(self, obj: dict[str, Any]) -> list[tuple[str, str, str]]:
        errors = sorted(self._validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
        return [_describe(error) for error in errors]

    # -- the model server behind status.url ----------------------------------------------

    def _infer(self, model: str, host: str, body: bytes) -> tuple[int, Any, dict[str, str]]:
        with self._lock:
            served = [
                obj
                for obj in self.objects.values()
                if obj["metadata"]["name"] == model and _is_ready(obj) and _host_matches(obj, host, self.url)
            ]
        if not served:
            return 404, {"error": f"Model {model} not found"}, {}
        try:
            payload = json.loads(body or b"null")
        except ValueError:
            return 400, {"error": "request body is not JSON"}, {}
        problem = _inference_request_problem(payload)
        if problem:
            return 422, {"error": problem}, {}
        code, answer = self.model_handler(model, payload)
        return code, answer, {}

    def _next_version(self) -> str:
        self._last_version = next(self._versions)
        return str(self._last_version)

    def _current_version(self) -> int:
        return self._last_version


def default_model(model: str, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Answer like MLServer's mlflow runtime for a model that sums each row."""
    first = payload["inputs"][0]
    rows = first["data"]
    width = first["shape"][-1] if len(first["shape"]) > 1 else 1
    flat = [v for row in rows for v in (row if isinstance(row, list) else [row])]
    sums = [sum(flat[i : i + width]) for i in range(0, len(flat), width)]
    return 200, {
        "model_name": model,
        "id": payload.get("id", str(uuid.uuid4())),
        "parameters": {"content_type": "np"},
        "outputs": [{"name": "output-1", "shape": [len(sums), 1], "datatype": "FP64", "data": sums}],
    }


class _Handler(BaseHTTPRequestHandler):
    standin: KubernetesStandIn
    # Keep-alive, as the API server offers, so urllib3's pooled connections are exercised.
    protocol_version = "HTTP/1.1"

    def _serve(self) -> None:
        parts = urlsplit(self.path)
        query = {key: values[-1] for key, values in parse_qs(parts.query, keep_blank_values=True).items()}
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {key.lower(): value for key, value in self.headers.items()}
        try:
            code, payload, extra = self.standin.handle(self.command, parts.path, query, headers, body)
        except Exception as exc:  # a bug in the stand-in must reach the test as a 500, not a hang
            code, payload, extra = 500, ApiError(500, "InternalError", f"stand-in bug: {exc!r}").body(), {}
        data = json.dumps(payload).encode()
        try:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in extra.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (a timeout test): nobody to answer

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the test output is no place for an access log


# -- helpers ----------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _query_text(query: dict[str, str]) -> str:
    return "&".join(f"{key}={value}" for key, value in sorted(query.items()))


def _json_body(body: bytes) -> Any:
    try:
        return json.loads(body or b"null")
    except ValueError as exc:
        raise ApiError(400, "BadRequest", f"the body of the request is not JSON: {exc}") from None


def _without(obj: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: copy.deepcopy(v) for k, v in obj.items() if k != key}


def _conflict(name: str) -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {CRD_NAME} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again",
        {"name": name, "group": GROUP, "kind": PLURAL},
    )


def _invalid(name: str, causes: list[tuple[str, str, str]]) -> tuple[int, str, str, dict[str, Any]]:
    """The API server's 422: `<Kind>.<group> "<name>" is invalid: <field>: <message>`."""
    texts = [f"{field}: {message}" for field, _, message in causes]
    joined = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
    return (
        422,
        "Invalid",
        f'{KIND}.{GROUP} "{name}" is invalid: {joined}',
        {
            "name": name,
            "group": GROUP,
            "kind": KIND,
            "causes": [{"reason": reason, "message": message, "field": field} for field, reason, message in causes],
        },
    )


def _field(path: Any) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "<root>"


def _describe(error: jsonschema.ValidationError) -> tuple[str, str, str]:
    """One jsonschema error in the words the API server uses."""
    field = _field(error.absolute_path)
    value = json.dumps(error.instance) if not isinstance(error.instance, dict | list) else type(error.instance).__name__
    if error.validator == "required":
        missing = re.search(r"'([^']+)' is a required property", error.message)
        child = (
            f"{field}.{missing.group(1)}" if missing and field != "<root>" else (missing.group(1) if missing else field)
        )
        return child, "FieldValueRequired", "Required value"
    if error.validator == "type":
        wanted = error.validator_value if isinstance(error.validator_value, str) else " or ".join(error.validator_value)
        return field, "FieldValueInvalid", f"Invalid value: {value}: {field} in body must be of type {wanted}: {value}"
    if error.validator == "pattern":
        return (
            field,
            "FieldValueInvalid",
            f"Invalid value: {value}: {field} in body should match '{error.validator_value}'",
        )
    if error.validator == "enum":
        supported = ", ".join(json.dumps(v) for v in error.validator_value)
        return field, "FieldValueNotSupported", f"Unsupported value: {value}: supported values: {supported}"
    if error.validator in ("minimum", "maximum"):
        relation = "greater than or equal to" if error.validator == "minimum" else "less than or equal to"
        return (
            field,
            "FieldValueInvalid",
            f"Invalid value: {value}: {field} in body should be {relation} {error.validator_value}",
        )
    return field, "FieldValueInvalid", f"Invalid value: {value}: {error.message}"


def _metadata_errors(meta: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The API server's ObjectMeta validation for a namespaced custom resource."""
    errors: list[tuple[str, str, str]] = []
    name = meta.get("name")
    if not name:
        errors.append(("metadata.name", "FieldValueRequired", "Required value: name or generateName is required"))
    elif len(name) > 253 or not _DNS_SUBDOMAIN.fullmatch(name):
        errors.append(
            (
                "metadata.name",
                "FieldValueInvalid",
                f'Invalid value: "{name}": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric '
                "characters, '-' or '.', and must start and end with an alphanumeric character",
            )
        )
    for key, value in (meta.get("labels") or {}).items():
        if not _qualified_name_ok(key):
            errors.append(
                (
                    "metadata.labels",
                    "FieldValueInvalid",
                    f"Invalid value: \"{key}\": name part must consist of alphanumeric characters, '-', '_' or '.'",
                )
            )
        if not isinstance(value, str) or len(value) > 63 or (value and not _QUALIFIED_NAME.fullmatch(value)):
            errors.append(
                (
                    "metadata.labels",
                    "FieldValueInvalid",
                    f'Invalid value: "{value}": a valid label must be an empty string or consist of alphanumeric '
                    "characters, '-', '_' or '.', and must start and end with an alphanumeric character "
                    "(at most 63 characters)",
                )
            )
    annotations = meta.get("annotations") or {}
    for key, value in annotations.items():
        if not _qualified_name_ok(key):
            errors.append(
                (
                    "metadata.annotations",
                    "FieldValueInvalid",
                    f"Invalid value: \"{key}\": name part must consist of alphanumeric characters, '-', '_' or '.'",
                )
            )
        if not isinstance(value, str):
            errors.append(
                ("metadata.annotations", "FieldValueInvalid", f"Invalid value: {json.dumps(value)}: must be a string")
            )
    if sum(len(k) + len(str(v)) for k, v in annotations.items()) > 256 * 1024:
        errors.append(("metadata.annotations", "TooLong", "Too long: must have at most 262144 bytes"))
    return errors


def _qualified_name_ok(key: str) -> bool:
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)):
        return False
    return 0 < len(name) <= 63 and bool(_QUALIFIED_NAME.fullmatch(name))


def _structural_children(schema: dict[str, Any]) -> tuple[dict[str, Any] | None, Any, bool]:
    """(properties, additionalProperties, preserves unknown fields) of an object schema."""
    return (
        schema.get("properties"),
        schema.get("additionalProperties"),
        bool(schema.get("x-kubernetes-preserve-unknown-fields")),
    )


def _unknown_fields(obj: Any, schema: dict[str, Any], path: str = "", top: bool = True) -> list[str]:
    """Paths of the fields the API server would prune, in its `spec.predictor.foo` notation."""
    found: list[str] = []
    if isinstance(obj, dict):
        properties, additional, preserve = _structural_children(schema)
        for key, value in obj.items():
            child = f"{path}.{key}" if path else key
            if top and key == "metadata":
                continue  # ObjectMeta is the API server's own type, not the CRD's schema
            if properties is not None and key in properties:
                found += _unknown_fields(value, properties[key], child, top=False)
            elif isinstance(additional, dict):
                found += _unknown_fields(value, additional, child, top=False)
            elif not preserve and additional is not True and (properties is not None or additional is not None):
                found.append(child)
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(obj):
            found += _unknown_fields(item, schema["items"], f"{path}[{index}]", top=False)
    return found


def _prune(obj: Any, schema: dict[str, Any], top: bool = False) -> None:
    """Drop unknown fields and nulls of non-nullable fields, as the API server does."""
    if isinstance(obj, dict):
        properties, additional, preserve = _structural_children(schema)
        for key in list(obj):
            if top and key == "metadata":
                continue
            if properties is not None and key in properties:
                child_schema = properties[key]
            elif isinstance(additional, dict):
                child_schema = additional
            elif preserve or additional is True or (properties is None and additional is None):
                continue
            else:
                del obj[key]
                continue
            if obj[key] is None and not child_schema.get("nullable"):
                del obj[key]
                continue
            _prune(obj[key], child_schema)
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for item in obj:
            _prune(item, schema["items"])


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


def _parse_selector(text: str) -> list[tuple[str, str, set[str]]]:
    """Equality- and set-based label selectors: a=b, a==b, a!=b, a, !a, a in (x,y), a notin (x)."""
    requirements: list[tuple[str, str, set[str]]] = []
    for term in re.findall(r"(?:[^,(]|\([^)]*\))+", text):
        term = term.strip()
        if not term:
            continue
        if match := re.fullmatch(r"(\S+)\s+(in|notin)\s+\(([^)]*)\)", term):
            values = {v.strip() for v in match.group(3).split(",") if v.strip()}
            requirements.append((match.group(1), match.group(2), values))
        elif "!=" in term:
            key, value = term.split("!=", 1)
            requirements.append((key.strip(), "!=", {value.strip()}))
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            requirements.append((key.strip(), "=", {value.strip()}))
        elif term.startswith("!"):
            requirements.append((term[1:].strip(), "!exists", set()))
        else:
            requirements.append((term, "exists", set()))
    return requirements


def _selected(labels: dict[str, str], selector: list[tuple[str, str, set[str]]]) -> bool:
    for key, operator, values in selector:
        present = key in labels
        if operator in ("=", "in") and not (present and labels[key] in values):
            return False
        if operator in ("!=", "notin") and present and labels[key] in values:
            return False
        if operator == "exists" and not present:
            return False
        if operator == "!exists" and present:
            return False
    return True


def _is_ready(obj: dict[str, Any]) -> bool:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _host_matches(obj: dict[str, Any], host: str, own_url: str) -> bool:
    """An ingress routes by Host header to the service whose status.url has that host; a
    status.url pointing at the stand-in itself is reached directly."""
    url_host = urlsplit((obj.get("status") or {}).get("url", "")).netloc
    return host == url_host or url_host == urlsplit(own_url).netloc


def _inference_request_problem(payload: Any) -> str:
    """Why MLServer would refuse this Open Inference Protocol request, or ""."""
    if not isinstance(payload, dict) or not isinstance(payload.get("inputs"), list) or not payload["inputs"]:
        return "inference request needs a non-empty 'inputs' list"
    for tensor in payload["inputs"]:
        if not isinstance(tensor, dict):
            return "each input must be an object"
        for key in ("name", "shape", "datatype", "data"):
            if key not in tensor:
                return f"input is missing '{key}'"
    return ""
