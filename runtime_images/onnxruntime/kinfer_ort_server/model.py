"""A loaded model: its versions, each an onnxruntime session with a batcher and metrics."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tritonclient.grpc import model_config_pb2 as mc

from kinfer_ort_server.batcher import Batcher
from kinfer_ort_server.config import TensorInfo
from kinfer_ort_server.errors import BadRequest
from kinfer_ort_server.metrics import VersionMetrics


@dataclass
class ModelVersion:
    """One served version: what the hot path needs, resolved at load time."""

    model: LoadedModel
    version: int
    version_str: str
    tier: str
    path: Path
    session: object
    batcher: Batcher
    metrics: VersionMetrics

    async def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Validate `inputs` against the config and run them; returns every output by name."""
        return await self.run_validated(inputs, self.model.validate(inputs))

    async def run_validated(
        self, inputs: dict[str, np.ndarray], rows: int
    ) -> dict[str, np.ndarray]:
        """Run `inputs` (already validated: `rows` along the batch dimension)."""
        outputs = self.batcher.run_now(inputs, rows)
        if outputs is None:
            outputs, queue_s = await self.batcher.submit(inputs, rows)
        else:
            queue_s = 0.0  # ran at once, as an idle instance takes a lone request
        self.metrics.queue_duration.observe(queue_s)
        return dict(zip(self.model.output_names, outputs, strict=True))


@dataclass
class LoadedModel:
    """A model as loaded: one config for all its versions (Triton's rule)."""

    name: str
    config: mc.ModelConfig
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    tiers: tuple[str, ...]
    versions: dict[int, ModelVersion] = field(default_factory=dict)
    loaded_at_s: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        self.max_batch_size = int(self.config.max_batch_size)
        self.output_names = [tensor.name for tensor in self.outputs]
        self._inputs_by_name = {tensor.name: tensor for tensor in self.inputs}
        self._outputs_by_name = {tensor.name: tensor for tensor in self.outputs}
        # What the protocols' fast paths compare a request against, per input name:
        # (datatype, numpy dtype, dims without the batch dim, whether dims has no -1).
        self.input_specs = {
            tensor.name: (tensor.datatype, tensor.np_dtype, tensor.dims, -1 not in tensor.dims)
            for tensor in self.inputs
            if tensor.np_dtype is not None
        }

    def retire(self) -> None:
        """Drop the versions once another load replaced this model (or it was unloaded).

        Each version refers back to its model: left as they are, the two form a cycle that
        keeps the versions' ONNX Runtime sessions (a model's weights, MiBs each) alive until a
        full garbage collection, so every tier switch left the last model's weights behind.
        Requests in flight hold their own version; it goes when they finish."""
        self.versions.clear()

    @property
    def latest(self) -> ModelVersion:
        # Triton serves a request without a version on the highest loaded version.
        return self.versions[max(self.versions)]

    def tier_of(self, version: int) -> str:
        return self.tiers[version - 1] if 0 < version <= len(self.tiers) else ""

    def output_info(self, name: str) -> TensorInfo:
        tensor = self._outputs_by_name.get(name)
        if tensor is None:
            raise BadRequest(
                f"model '{self.name}' has no output '{name}'; outputs: {self.output_names}"
            )
        return tensor

    def validate(self, inputs: dict[str, np.ndarray]) -> int:
        """Check names, datatypes and shapes against the config; returns the batch rows (or 1)."""
        expected = self._inputs_by_name
        if inputs.keys() != expected.keys():
            missing = sorted(expected.keys() - inputs.keys())
            unexpected = sorted(inputs.keys() - expected.keys())
            raise BadRequest(
                f"model '{self.name}' expects inputs {sorted(expected)}"
                + (f"; missing {missing}" if missing else "")
                + (f"; unexpected {unexpected}" if unexpected else "")
            )
        rows = None
        batched = self.max_batch_size > 0
        for name, array in inputs.items():
            tensor = expected[name]
            if array.dtype != tensor.np_dtype:
                raise BadRequest(
                    f"input '{name}': datatype {_protocol_name(array.dtype)} does not match the "
                    f"model's {tensor.datatype}"
                )
            shape = array.shape[1:] if batched else array.shape
            if len(shape) != len(tensor.dims) or any(
                d not in (-1, s) for d, s in zip(tensor.dims, shape, strict=True)
            ):
                want = [-1, *tensor.dims] if batched else list(tensor.dims)
                raise BadRequest(
                    f"input '{name}': shape {list(array.shape)} does not match the model's {want}"
                )
            if batched:
                if array.ndim == 0 or not 1 <= array.shape[0] <= self.max_batch_size:
                    raise BadRequest(
                        f"input '{name}': batch size {array.shape[0] if array.ndim else 0} is "
                        f"outside 1..{self.max_batch_size} "
                        f"(max_batch_size of model '{self.name}')"
                    )
                if rows is None:
                    rows = array.shape[0]
                elif array.shape[0] != rows:
                    raise BadRequest(
                        f"input '{name}': batch size {array.shape[0]} differs from the other "
                        f"inputs' {rows}"
                    )
        return rows if batched and rows is not None else 1


def _protocol_name(dtype: np.dtype) -> str:
    from kinfer_ort_server.dtypes import NUMPY_TO_PROTOCOL

    return NUMPY_TO_PROTOCOL.get(dtype, str(dtype))
