"""The Open Inference Protocol v2 over HTTP, as Triton serves it (JSON and binary tensor data)."""

from __future__ import annotations

import logging
import time

import numpy as np
import orjson
from aiohttp import web

from kinfer_ort_server.config import config_to_json_dict
from kinfer_ort_server.core import Core
from kinfer_ort_server.dtypes import NUMPY_TO_PROTOCOL, PROTOCOL_TO_NUMPY
from kinfer_ort_server.errors import BadRequest, PayloadTooLarge, ServerError

log = logging.getLogger("kinfer_ort_server.http")

HEADER_LENGTH = "Inference-Header-Content-Length"
_JSON = "application/json"
_EMPTY_OK = web.Response(status=200)


def _json(payload: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, content_type=_JSON)


def _error(error: ServerError) -> web.Response:
    return _json({"error": error.message}, status=error.http_status)


def build_app(core: Core) -> web.Application:
    """The aiohttp application of the HTTP endpoint (port 8000)."""
    # The body limit is enforced in the handler (to count and explain it), so aiohttp's own
    # limit sits just above it.
    app = web.Application(client_max_size=core.max_request_bytes + 1)
    api = _HttpApi(core)
    app.router.add_get("/v2/health/live", api.live)
    app.router.add_get("/v2/health/ready", api.ready)
    app.router.add_get("/v2", api.server_metadata)
    app.router.add_get("/v2/models/{model}", api.model_metadata)
    app.router.add_get("/v2/models/{model}/versions/{version}", api.model_metadata)
    app.router.add_get("/v2/models/{model}/ready", api.model_ready)
    app.router.add_get("/v2/models/{model}/versions/{version}/ready", api.model_ready)
    app.router.add_get("/v2/models/{model}/config", api.model_config)
    app.router.add_get("/v2/models/{model}/versions/{version}/config", api.model_config)
    app.router.add_post("/v2/models/{model}/infer", api.infer)
    app.router.add_post("/v2/models/{model}/versions/{version}/infer", api.infer)
    app.router.add_post("/v2/repository/index", api.repository_index)
    app.router.add_post("/v2/repository/models/{model}/load", api.load)
    app.router.add_post("/v2/repository/models/{model}/unload", api.unload)
    return app


class _HttpApi:
    def __init__(self, core: Core) -> None:
        self.core = core
        self.repository = core.repository

    async def live(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def ready(self, request: web.Request) -> web.Response:
        return web.Response(status=200 if self.core.ready else 503)

    async def server_metadata(self, request: web.Request) -> web.Response:
        return _json(self.core.server_metadata())

    async def model_metadata(self, request: web.Request) -> web.Response:
        try:
            version = self.repository.get(
                request.match_info["model"], request.match_info.get("version", "")
            )
        except ServerError as error:
            return _error(error)
        return _json(self.core.model_metadata(version))

    async def model_ready(self, request: web.Request) -> web.Response:
        try:
            self.repository.get(request.match_info["model"], request.match_info.get("version", ""))
        except ServerError:
            return web.Response(status=400)
        return web.Response(status=200)

    async def model_config(self, request: web.Request) -> web.Response:
        try:
            version = self.repository.get(
                request.match_info["model"], request.match_info.get("version", "")
            )
        except ServerError as error:
            return _error(error)
        return _json(config_to_json_dict(version.model.config))

    async def repository_index(self, request: web.Request) -> web.Response:
        ready_only = False
        body = await request.read()
        if body:
            try:
                ready_only = bool(orjson.loads(body).get("ready", False))
            except (orjson.JSONDecodeError, AttributeError):
                return _error(BadRequest("repository index: the body is not a JSON object"))
        return _json(self.repository.index(ready_only))

    async def load(self, request: web.Request) -> web.Response:
        name = request.match_info["model"]
        try:
            self._require_repository_api()
            override = None
            body = await request.read()
            if body:
                try:
                    parameters = orjson.loads(body).get("parameters") or {}
                except (orjson.JSONDecodeError, AttributeError):
                    raise BadRequest(f"load of '{name}': the body is not a JSON object") from None
                if any(key.startswith("file:") for key in parameters):
                    raise BadRequest(
                        f"load of '{name}': file: overrides are not supported; send parameters.config only"
                    )
                override = parameters.get("config")
                if override is not None and not isinstance(override, str):
                    override = orjson.dumps(override).decode()
            await self.repository.load(name, override)
        except ServerError as error:
            return _error(error)
        return web.Response(status=200)

    async def unload(self, request: web.Request) -> web.Response:
        try:
            self._require_repository_api()
            await self.repository.unload(request.match_info["model"])
        except ServerError as error:
            return _error(error)
        return web.Response(status=200)

    def _require_repository_api(self) -> None:
        if not self.core.repository_api:
            raise BadRequest("the repository API needs --model-control-mode=explicit")

    async def infer(self, request: web.Request) -> web.Response:
        started_s = time.perf_counter()
        model_name = request.match_info["model"]
        version = None
        try:
            version = self.repository.get(model_name, request.match_info.get("version", ""))
            version.metrics.inflight.inc()
            try:
                response = await self._infer(request, version)
            finally:
                version.metrics.inflight.dec()
        except ServerError as error:
            self.core.record_failure(model_name, version, error)
            return _error(error)
        except Exception as error:  # the server must answer and stay up whatever happens
            log.exception("inference on %s failed", model_name)
            failure = ServerError(f"internal error: {type(error).__name__}: {error}")
            self.core.record_failure(model_name, version, failure)
            return _error(failure)
        version.metrics.success(time.perf_counter() - started_s)
        return response

    async def _infer(self, request: web.Request, version) -> web.Response:
        limit = self.core.max_request_bytes
        if request.content_length is not None and request.content_length > limit:
            raise PayloadTooLarge(
                f"request body of {request.content_length} bytes exceeds --max-request-bytes={limit}"
            )
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise PayloadTooLarge(f"request body exceeds --max-request-bytes={limit}") from None
        header, binary = _split_body(body, request.headers.get(HEADER_LENGTH))
        inputs = _decode_inputs(header, binary)
        requested = header.get("outputs")
        model = version.model
        outputs = await version.infer(inputs)
        binary_default = bool((header.get("parameters") or {}).get("binary_data_output", False))
        if requested:
            if not isinstance(requested, list):
                raise BadRequest("'outputs' must be a list of {name, parameters}")
            chosen = []
            for entry in requested:
                if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                    raise BadRequest("each of 'outputs' must be an object with a string 'name'")
                model.output_info(entry["name"])
                parameters = entry.get("parameters") or {}
                chosen.append((entry["name"], bool(parameters.get("binary_data", binary_default))))
        else:
            chosen = [(name, binary_default) for name in model.output_names]
        return _encode_response(header, version, outputs, chosen)


def _split_body(body: bytes, header_length: str | None) -> tuple[dict, memoryview]:
    if header_length is None:
        json_part, binary = body, memoryview(b"")
    else:
        try:
            length = int(header_length)
        except ValueError:
            raise BadRequest(f"{HEADER_LENGTH}={header_length!r} is not an integer") from None
        if not 0 <= length <= len(body):
            raise BadRequest(f"{HEADER_LENGTH}={length} is outside the body's {len(body)} bytes")
        view = memoryview(body)
        json_part, binary = view[:length], view[length:]
    try:
        header = orjson.loads(json_part)
    except orjson.JSONDecodeError as error:
        raise BadRequest(f"malformed JSON inference header: {error}") from None
    if not isinstance(header, dict):
        raise BadRequest("the inference header must be a JSON object")
    return header, binary


def _decode_inputs(header: dict, binary: memoryview) -> dict[str, np.ndarray]:
    entries = header.get("inputs")
    if not isinstance(entries, list) or not entries:
        raise BadRequest("'inputs' must be a non-empty list")
    inputs: dict[str, np.ndarray] = {}
    offset = 0
    for entry in entries:
        if not isinstance(entry, dict):
            raise BadRequest("each of 'inputs' must be an object with name, datatype, shape")
        name = entry.get("name")
        datatype = entry.get("datatype")
        shape = entry.get("shape")
        if not isinstance(name, str):
            raise BadRequest("an input has no string 'name'")
        if name in inputs:
            raise BadRequest(f"input '{name}' appears twice")
        dtype = PROTOCOL_TO_NUMPY.get(datatype) if isinstance(datatype, str) else None
        if dtype is None:
            raise BadRequest(
                f"input '{name}': datatype {datatype!r} is not supported; valid: {sorted(PROTOCOL_TO_NUMPY)}"
            )
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            raise BadRequest(
                f"input '{name}': shape {shape!r} must be a list of non-negative integers"
            )
        count = 1
        for dim in shape:
            count *= dim
        parameters = entry.get("parameters") or {}
        size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise BadRequest(
                    f"input '{name}': binary_data_size={size!r} runs past the {len(binary)} bytes of binary data "
                    f"(offset {offset})"
                )
            if size != count * dtype.itemsize:
                raise BadRequest(
                    f"input '{name}': binary_data_size={size} but shape {shape} of {datatype} needs {count * dtype.itemsize} bytes"
                )
            array = np.frombuffer(binary, dtype=dtype, count=count, offset=offset).reshape(shape)
            offset += size
        else:
            data = entry.get("data")
            if data is None:
                raise BadRequest(
                    f"input '{name}': neither 'data' nor parameters.binary_data_size given"
                )
            try:
                array = np.asarray(data, dtype=dtype)
            except (TypeError, ValueError) as error:
                raise BadRequest(f"input '{name}': data is not {datatype}: {error}") from None
            if array.size != count:
                raise BadRequest(
                    f"input '{name}': {array.size} data elements for shape {shape} ({count} elements)"
                )
            array = array.reshape(shape)
        inputs[name] = array
    return inputs


def _encode_response(header: dict, version, outputs: dict[str, np.ndarray], chosen) -> web.Response:
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
    if "id" in header:
        payload["id"] = header["id"]
    json_bytes = orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return web.Response(body=json_bytes, content_type=_JSON)
    return web.Response(
        body=b"".join([json_bytes, *chunks]),
        headers={HEADER_LENGTH: str(len(json_bytes))},
        content_type="application/octet-stream",
    )
