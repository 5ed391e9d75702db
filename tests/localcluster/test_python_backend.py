"""The runner's rewrite of a production model config for the local Triton's Python backend."""

from __future__ import annotations

from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from kinfer_dev.runtime import testmodels
from kinfer_dev.runtime.local_triton import to_python_backend

PRODUCTION_CONFIG = """
name: "mlp"
version_policy { specific { versions: 2 } }
max_batch_size: 8
instance_group { count: 1 kind: KIND_GPU }
dynamic_batching { max_queue_delay_microseconds: 500 }
parameters { key: "kinfer.tiers" value { string_value: "fp32,fp16" } }
backend: "onnxruntime"
"""


def test_config_keeps_policy_and_tiers_gains_signature_and_model_py(tmp_path: Path) -> None:
    built = testmodels.build_tier_models(tmp_path / "built", tiers=("fp32", "fp16"))
    model_dir = tmp_path / "repo" / "mlp"
    for version, tier in ((1, "fp32"), (2, "fp16")):
        (model_dir / str(version)).mkdir(parents=True)
        built[tier].replace(model_dir / str(version) / "model.onnx")
    (model_dir / "config.pbtxt").write_text(PRODUCTION_CONFIG)

    to_python_backend(tmp_path / "repo")

    config = text_format.Parse((model_dir / "config.pbtxt").read_text(), mc.ModelConfig())
    assert config.backend == "python" and not config.platform
    assert list(config.version_policy.specific.versions) == [2]
    assert config.parameters["kinfer.tiers"].string_value == "fp32,fp16"
    assert config.max_batch_size == 8
    assert [i.name for i in config.input] == [testmodels.INPUT_NAME]
    assert list(config.input[0].dims) == [testmodels.MLPShape().in_features]
    assert [o.name for o in config.output] == [testmodels.OUTPUT_NAME]
    assert config.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    for version in ("1", "2"):
        assert (model_dir / version / "model.py").exists()
