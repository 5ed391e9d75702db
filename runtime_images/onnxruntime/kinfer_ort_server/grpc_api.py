"""The GRPCInferenceService that tritonclient's stubs define (port 8001), on grpc.aio."""

from __future__ import annotations

import logging
import math
import time

import grpc
import numpy as np
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from kinfer_ort_server.core import Core
from kinfer_ort_server.decode import UNSUPPORTED_PARAMETERS
from kinfer_ort_server.dtypes import NUMPY_TO_PROTOCOL, PROTOCOL_TO_NUMPY
from kinfer_ort_server.errors import BadRequest, PayloadTooLarge, ServerError

log = logging.getLogger("kinfer_ort_server.grpc")

# InferTensorContents field per datatype, for requests that send typed contents
# instead of raw_input_contents.
_CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}


def _refuse_unsupported(what: str, parameters) -> None:
    # Extensions this server does not implement must fail loudly, not be ignored.
    for key in UNSUPPORTED_PARAMETERS:
        if key in parameters:
            raise BadRequest(f"{what}: parameter '{key}' is not supported by this server")


def _fail(context: grpc.aio.ServicerContext, error: ServerError) -> None:
    context.set_code(error.grpc_code)
    context.set_details(error.message)


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """ServerLive/Ready, metadata, ModelInfer, ModelConfig and the repository calls."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.repository = core.repository

    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=self.core.ready)

    async def ModelReady(self, request, context):
        try:
            self.repository.get(request.name, request.version)
        except ServerError:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    async def ServerMetadata(self, request, context):
        return pb.ServerMetadataResponse(**self.core.server_metadata())

    async def ModelMetadata(self, request, context):
        try:
            version = self.repository.get(request.name, request.version)
        except ServerError as error:
            _fail(context, error)
            return pb.ModelMetadataResponse()
        metadata = self.core.model_metadata(version)
        return pb.ModelMetadataResponse(
            name=metadata["name"],
            versions=metadata["versions"],
            platform=metadata["platform"],
            inputs=[pb.ModelMetadataResponse.TensorMetadata(**t) for t in metadata["inputs"]],
            outputs=[pb.ModelMetadataResponse.TensorMetadata(**t) for t in metadata["outputs"]],
        )

    async def ModelConfig(self, request, context):
        try:
            version = self.repository.get(request.name, request.version)
        except ServerError as error:
            _fail(context, error)
            return pb.ModelConfigResponse()
        return pb.ModelConfigResponse(config=version.model.config)

    async def RepositoryIndex(self, request, context):
        models = [
            pb.RepositoryIndexResponse.ModelIndex(**entry)
            for entry in self.repository.index(request.ready)
        ]
        return pb.RepositoryIndexResponse(models=models)

    async def RepositoryModelLoad(self, request, context):
        try:
            self._require_repository_api()
            if any(key.startswith("file:") for key in request.parameters):
                raise BadRequest(
                    f"load of '{request.model_name}': file: overrides are not supported; send "
                    "config only"
                )
            override = (
                request.parameters["config"].string_param
                if "config" in request.parameters
                else None
            )
            await self.repository.load(request.model_name, override)
        except ServerError as error:
            _fail(context, error)
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request, context):
        try:
            self._require_repository_api()
            await self.repository.unload(request.model_name)
        except ServerError as error:
            _fail(context, error)
        return pb.RepositoryModelUnloadResponse()

    def _require_repository_api(self) -> None:
        if not self.core.repository_api:
            raise BadRequest("the repository API needs --model-control-mode=explicit")

    async def ModelInfer(self, request, context):
        response, error = await self._serve(request)
        if error is not None:
            _fail(context, error)
            return pb.ModelInferResponse()
        return response

    async def ModelStreamInfer(self, request_iterator, context):
        # One response per request, in order; a failed request answers with error_message
        # and the stream goes on (tritonclient's start_stream / async_stream_infer).
        async for request in request_iterator:
            yield await self.stream_response(request)

    async def stream_response(self, request) -> pb.ModelStreamInferResponse:
        """The stream's answer to one of its requests: the response, or the error inside it."""
        response, error = await self._serve(request)
        if error is not None:
            return pb.ModelStreamInferResponse(error_message=error.message)
        return pb.ModelStreamInferResponse(infer_response=response)

    async def _serve(self, request) -> tuple[pb.ModelInferResponse | None, ServerError | None]:
        """One inference with its metrics: (response, None) or (None, the error to report)."""
        started_s = time.perf_counter()
        version = None
        try:
            version = self.repository.get(request.model_name, request.model_version)
            metrics = version.metrics
            metrics.arrivals.arrived(started_s)
            metrics.inflight += 1
            try:
                response = await self._infer(request, version)
            finally:
                metrics.inflight -= 1
        except ServerError as error:
            self.core.record_failure(request.model_name, version, error)
            return None, error
        except Exception as error:  # the server must answer and stay up whatever happens
            log.exception("inference on %s failed", request.model_name)
            failure = ServerError(f"internal error: {type(error).__name__}: {error}")
            self.core.record_failure(request.model_name, version, failure)
            return None, failure
        version.metrics.success(time.perf_counter() - started_s)
        return response, None

    async def _infer(self, request, version) -> pb.ModelInferResponse:
        model = version.model
        parsed = _parse_well_formed(request, model, self.core.max_request_bytes)
        if parsed is None:
            # Anything unusual (typed contents, a mistake to report) takes the checked path.
            inputs, requested = self._parse_checked(request, model)
            rows = model.validate(inputs)
        else:
            inputs, rows, requested = parsed
        outputs = await version.run_validated(inputs, rows)
        tensors = []
        contents = []
        for name in requested:
            array = outputs[name]
            tensors.append(
                _OutputTensor(name=name, datatype=NUMPY_TO_PROTOCOL[array.dtype], shape=array.shape)
            )
            contents.append(array.tobytes())
        return pb.ModelInferResponse(
            model_name=model.name,
            model_version=version.version_str,
            id=request.id,
            outputs=tensors,
            raw_output_contents=contents,
        )

    def _parse_checked(self, request, model) -> tuple[dict[str, np.ndarray], list[str]]:
        """The request's input arrays and requested output names, every mistake reported."""
        raw_contents = request.raw_input_contents
        size = sum(len(raw) for raw in raw_contents)
        if size > self.core.max_request_bytes:
            raise PayloadTooLarge(
                f"request tensors of {size} bytes exceed "
                f"--max-request-bytes={self.core.max_request_bytes}"
            )
        if raw_contents and len(raw_contents) != len(request.inputs):
            raise BadRequest(
                f"{len(raw_contents)} raw_input_contents for {len(request.inputs)} inputs"
            )
        if not request.inputs:
            raise BadRequest("the request has no inputs")
        inputs: dict[str, np.ndarray] = {}
        for index, tensor in enumerate(request.inputs):
            name = tensor.name
            _refuse_unsupported(f"input '{name}'", tensor.parameters)
            if name in inputs:
                raise BadRequest(f"input '{name}' appears twice")
            dtype = PROTOCOL_TO_NUMPY.get(tensor.datatype)
            if dtype is None:
                raise BadRequest(
                    f"input '{name}': datatype {tensor.datatype!r} is not supported; valid: "
                    f"{sorted(PROTOCOL_TO_NUMPY)}"
                )
            shape = tuple(tensor.shape)
            if any(d < 0 for d in shape):
                raise BadRequest(f"input '{name}': shape {list(shape)} has a negative dimension")
            count = 1
            for dim in shape:
                count *= dim
            if raw_contents:
                raw = raw_contents[index]
                if len(raw) != count * dtype.itemsize:
                    raise BadRequest(
                        f"input '{name}': {len(raw)} raw bytes but shape {list(shape)} of "
                        f"{tensor.datatype} "
                        f"needs {count * dtype.itemsize}"
                    )
                array = np.frombuffer(raw, dtype=dtype).reshape(shape)
            else:
                field = _CONTENTS_FIELD.get(tensor.datatype)
                values = getattr(tensor.contents, field) if field else ()
                if len(values) != count:
                    raise BadRequest(
                        f"input '{name}': {len(values)} contents elements for shape {list(shape)}"
                    )
                array = np.array(values, dtype=dtype).reshape(shape)
            inputs[name] = array
        for output in request.outputs:
            _refuse_unsupported(f"output '{output.name}'", output.parameters)
        requested = [output.name for output in request.outputs] or model.output_names
        for name in requested:
            model.output_info(name)
        return inputs, requested


_OutputTensor = pb.ModelInferResponse.InferOutputTensor


def _parse_well_formed(
    request, model, max_request_bytes: int
) -> tuple[dict[str, np.ndarray], int, list[str]] | None:
    """(inputs, batch rows, requested outputs) of a request that is right in every respect.

    The hot path: raw_input_contents for exactly the model's inputs with their datatypes
    and shapes, no parameters, known outputs. It only decides "well formed or not" and
    reports nothing: None sends the request through `_parse_checked` and
    `LoadedModel.validate`, which find the same request wrong with the message to send.
    """
    raw_contents = request.raw_input_contents
    tensors = request.inputs
    specs = model.input_specs
    if not tensors or len(tensors) != len(specs) or len(raw_contents) != len(tensors):
        return None
    batched = model.max_batch_size > 0
    inputs: dict[str, np.ndarray] = {}
    rows = 1
    size = 0
    for index, tensor in enumerate(tensors):
        name = tensor.name
        spec = specs.get(name)
        if spec is None or name in inputs or tensor.parameters or tensor.datatype != spec[0]:
            return None
        shape = tuple(tensor.shape)
        dims = spec[2]
        if batched:
            if not shape or not 1 <= shape[0] <= model.max_batch_size:
                return None
            if index == 0:
                rows = shape[0]
            elif shape[0] != rows:
                return None
            item_shape = shape[1:]
        else:
            item_shape = shape
        if spec[3]:
            if item_shape != dims:
                return None
        elif len(item_shape) != len(dims) or any(
            s < 0 or d not in (-1, s) for d, s in zip(dims, item_shape, strict=True)
        ):
            return None
        dtype = spec[1]
        raw = raw_contents[index]
        size += len(raw)
        if len(raw) != math.prod(shape) * dtype.itemsize:
            return None
        inputs[name] = np.frombuffer(raw, dtype=dtype).reshape(shape)
    if size > max_request_bytes:
        return None
    if request.outputs:
        requested = []
        known = model.output_names
        for output in request.outputs:
            if output.parameters or output.name not in known:
                return None
            requested.append(output.name)
    else:
        requested = model.output_names
    return inputs, rows, requested
