"""What both protocols share: the repository, the metrics, readiness, and failure accounting."""

from __future__ import annotations

from dataclasses import dataclass, field

from kinfer_ort_server import SERVER_NAME, __version__
from kinfer_ort_server.errors import ServerError
from kinfer_ort_server.metrics import UNKNOWN_MODEL, Metrics, VersionMetrics
from kinfer_ort_server.model import ModelVersion
from kinfer_ort_server.repository import Repository

EXTENSIONS = ("binary_tensor_data", "model_repository", "model_configuration", "parameters")


@dataclass
class Core:
    repository: Repository
    metrics: Metrics
    max_request_bytes: int
    repository_api: bool  # False in --model-control-mode=none, as in Triton
    ready: bool = False
    _unversioned: dict[str, VersionMetrics] = field(default_factory=dict)

    def server_metadata(self) -> dict:
        return {"name": SERVER_NAME, "version": __version__, "extensions": list(EXTENSIONS)}

    def record_failure(
        self, model_name: str, version: ModelVersion | None, error: ServerError
    ) -> None:
        """Count a failed request on its version's series, or on the model's unversioned one."""
        if version is not None:
            version.metrics.failure(error.reason)
            return
        label = model_name if self.repository.is_known(model_name) else UNKNOWN_MODEL
        series = self._unversioned.get(label)
        if series is None:
            series = self._unversioned[label] = self.metrics.for_version(label, "", "")
        series.failure(error.reason)

    def model_metadata(self, version: ModelVersion) -> dict:
        model = version.model
        return {
            "name": model.name,
            "versions": [str(v) for v in sorted(model.versions)],
            "platform": model.config.platform,
            "inputs": [
                {
                    "name": t.name,
                    "datatype": t.datatype,
                    "shape": t.metadata_shape(model.max_batch_size),
                }
                for t in model.inputs
            ],
            "outputs": [
                {
                    "name": t.name,
                    "datatype": t.datatype,
                    "shape": t.metadata_shape(model.max_batch_size),
                }
                for t in model.outputs
            ],
        }
