"""The Open Inference Protocol v2 over HTTP, as Triton serves it (JSON and binary tensor data)."""

from __future__ import annotations

import asyncio
import logging
import time

import numpy as np
import orjson

from kinfer_ort_server.config import config_to_json_dict
from kinfer_ort_server.core import Core
from kinfer_ort_server.decode import HEADER_LENGTH, decode_request
from kinfer_ort_server.dtypes import NUMPY_TO_PROTOCOL
from kinfer_ort_server.errors import BadRequest, ModelNotFound, PayloadTooLarge, ServerError
from kinfer_ort_server.http_server import HttpRequest, HttpResponse

log = logging.getLogger("kinfer_ort_server.http")

_HEADER_LENGTH_KEY = HEADER_LENGTH.lower()
_JSON = b"application/json"
_OCTETS = b"application/octet-stream"
_OK = HttpResponse(200)
# Bodies larger than this are decoded on a worker thread, off the event loop.
OFFLOAD_BYTES = 1 << 20


def _json(payload: object, status: int = 200) -> HttpResponse:
    return HttpResponse(status, orjson.dumps(payload), _JSON)


def _error(error: ServerError) -> HttpResponse:
    return _json({"error": error.message}, status=error.http_status)


class HttpApi:
    """The HTTP endpoint (port 8000): routes a request to its handler by method and path."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.repository = core.repository

    async def handle(self, request: HttpRequest) -> HttpResponse:
        # ['', 'v2', 'models', '<m>', ('versions', '<v>',) '<action>']: the infer route first,
        # it is the hot one.
        parts = request.path.split("/")
        if len(parts) < 2 or parts[1] != "v2" or parts[0] != "":
            return _error(ModelNotFound(f"no route {request.method} {request.path}"))
        method = request.method
        count = len(parts)
        if count >= 4 and parts[2] == "models":
            model = parts[3]
            version = ""
            rest = parts[4:]
            if len(rest) >= 2 and rest[0] == "versions":
                version = rest[1]
                rest = rest[2:]
            action = rest[0] if rest else ""
            if len(rest) <= 1:
                if action == "infer" and method == "POST":
                    return await self.infer(request, model, version)
                if method == "GET":
                    if action == "":
                        return self.model_metadata(model, version)
                    if action == "ready":
                        return self.model_ready(model, version)
                    if action == "config":
                        return self.model_config(model, version)
        elif count == 4 and parts[2] == "health" and method == "GET":
            if parts[3] == "live":
                return _OK
            if parts[3] == "ready":
                return _OK if self.core.ready else HttpResponse(503)
        elif method == "GET" and (count == 2 or (count == 3 and parts[2] == "")):
            return _json(self.core.server_metadata())  # /v2 (Triton) or /v2/ (the OIP spec)
        elif count >= 4 and parts[2] == "repository" and method == "POST":
            if count == 4 and parts[3] == "index":
                return self.repository_index(request)
            if count == 6 and parts[3] == "models" and parts[5] in ("load", "unload"):
                if parts[5] == "load":
                    return await self.load(request, parts[4])
                return await self.unload(parts[4])
        return _error(ModelNotFound(f"no route {method} {request.path}"))

    def too_large(self, request: HttpRequest) -> HttpResponse:
        """The answer to a body over --max-request-bytes (counted as a failure on infer routes)."""
        error = PayloadTooLarge(
            f"request body exceeds --max-request-bytes={self.core.max_request_bytes}"
        )
        parts = request.path.split("/")
        if len(parts) >= 5 and parts[2] == "models" and parts[-1] == "infer":
            version_str = parts[5] if len(parts) == 7 and parts[4] == "versions" else ""
            try:
                version = self.repository.get(parts[3], version_str)
            except ServerError:
                version = None
            self.core.record_failure(parts[3], version, error)
        return _error(error)

    def model_metadata(self, model: str, version: str) -> HttpResponse:
        try:
            served = self.repository.get(model, version)
        except ServerError as error:
            return _error(error)
        return _json(self.core.model_metadata(served))

    def model_ready(self, model: str, version: str) -> HttpResponse:
        try:
            self.repository.get(model, version)
        except ServerError as error:
            # Triton answers 400 for a model that is not ready; the body says why.
            return _json({"error": error.message}, status=400)
        return _OK

    def model_config(self, model: str, version: str) -> HttpResponse:
        try:
            served = self.repository.get(model, version)
        except ServerError as error:
            return _error(error)
        return _json(config_to_json_dict(served.model.config))

    def repository_index(self, request: HttpRequest) -> HttpResponse:
        ready_only = False
        if request.body:
            try:
                ready_only = bool(orjson.loads(request.body).get("ready", False))
            except (orjson.JSONDecodeError, AttributeError):
                return _error(BadRequest("repository index: the body is not a JSON object"))
        return _json(self.repository.index(ready_only))

    async def load(self, request: HttpRequest, name: str) -> HttpResponse:
        try:
            self._require_repository_api()
            override = None
            if request.body:
                try:
                    parameters = orjson.loads(request.body).get("parameters") or {}
                except (orjson.JSONDecodeError, AttributeError):
                    raise BadRequest(f"load of '{name}': the body is not a JSON object") from None
                if any(key.startswith("file:") for key in parameters):
                    raise BadRequest(
                        f"load of '{name}': file: overrides are not supported; send "
                        "parameters.config only"
                    )
                override = parameters.get("config")
                if override is not None and not isinstance(override, str):
                    override = orjson.dumps(override).decode()
            await self.repository.load(name, override)
        except ServerError as error:
            return _error(error)
        return _OK

    async def unload(self, name: str) -> HttpResponse:
        try:
            self._require_repository_api()
            await self.repository.unload(name)
        except ServerError as error:
            return _error(error)
        return _OK

    def _require_repository_api(self) -> None:
        if not self.core.repository_api:
            raise BadRequest("the repository API needs --model-control-mode=explicit")

    async def infer(self, request: HttpRequest, model_name: str, version_str: str) -> HttpResponse:
        started_s = time.perf_counter()
        version = None
        try:
            version = self.repository.get(model_name, version_str)
            metrics = version.metrics
            metrics.arrivals.arrived(started_s)
            metrics.inflight += 1
            try:
                response = await self._infer(request, version)
            finally:
                metrics.inflight -= 1
        except ServerError as error:
            self.core.record_failure(model_name, version, error)
            return _error(error)
        except Exception as error:  # the server must answer and stay up whatever happens
            log.exception("inference on %s failed", model_name)
            failure = ServerError(f"internal error: {type(error).__name__}: {error}")
            self.core.record_failure(model_name, version, failure)
            return _error(failure)
        metrics.success(time.perf_counter() - started_s)
        return response

    async def _infer(self, request: HttpRequest, version) -> HttpResponse:
        args = (
            request.body,
            request.headers.get(_HEADER_LENGTH_KEY),
            version.model,
            self.core.max_request_bytes,
        )
        if len(request.body) > OFFLOAD_BYTES:
            # Off the event loop: health, readiness and metrics answer meanwhile.
            decoded = await asyncio.get_running_loop().run_in_executor(None, decode_request, *args)
        else:
            decoded = decode_request(*args)
        outputs = await version.run_validated(decoded.inputs, decoded.rows)
        return _encode_response(decoded.id, version, outputs, decoded.outputs)


def _encode_response(
    request_id: str | None, version, outputs: dict[str, np.ndarray], chosen
) -> HttpResponse:
    out_entries = []
    chunks = []
    for name, binary in chosen:
        array = outputs[name]
        entry = {"name": name, "datatype": NUMPY_TO_PROTOCOL[array.dtype], "shape": array.shape}
        if binary:
            raw = array.tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = np.ascontiguousarray(array).ravel()
        out_entries.append(entry)
    payload = {
        "model_name": version.model.name,
        "model_version": version.version_str,
        "outputs": out_entries,
    }
    if request_id is not None:
        payload["id"] = request_id
    json_bytes = orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return HttpResponse(200, json_bytes, _JSON)
    return HttpResponse(
        200,
        b"".join([json_bytes, *chunks]),
        _OCTETS,
        ((b"Inference-Header-Content-Length", b"%d" % len(json_bytes)),),
    )
