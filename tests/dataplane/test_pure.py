"""Pure parts of the data plane: test models, config rendering, repository layout, the switch override."""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from kinfer.runtime.switch import switch_config, tier_names
from kinfer_dev.runtime.repository import (
    ModelConfigSpec,
    TensorSpec,
    onnx_signature,
    render_config_pbtxt,
    write_model_repository,
)
from kinfer_dev.runtime.testmodels import (
    INPUT_NAME,
    MLPShape,
    build_tier_models,
    run_reference,
    sample_input,
)


def test_tier_models_are_deterministic_and_share_one_signature(tier_models, tmp_path):
    again = build_tier_models(tmp_path)
    for tier, path in tier_models.items():
        assert path.read_bytes() == again[tier].read_bytes(), tier
    signatures = {tier: onnx_signature(path) for tier, path in tier_models.items()}
    assert len(set(signatures.values())) == 1
    inputs, outputs = signatures["fp32"]
    assert inputs == (TensorSpec(INPUT_NAME, "float32", (MLPShape().in_features,)),)
    assert outputs[0].dtype == "float32"


def test_lower_tiers_approximate_fp32_but_differ(tier_models):
    batch = sample_input(8)
    fp32 = run_reference(tier_models["fp32"], batch)
    for tier in ("fp16", "int8"):
        lower = run_reference(tier_models[tier], batch)
        assert lower.shape == fp32.shape
        assert not np.array_equal(lower, fp32), f"{tier} should not compute exactly like fp32"
        np.testing.assert_allclose(lower, fp32, rtol=0.1, atol=0.15)


def test_unknown_tier_is_refused(tmp_path):
    with pytest.raises(ValueError, match="bf16"):
        build_tier_models(tmp_path, tiers=("bf16",))


def test_config_pbtxt_for_both_flavours_parses_as_a_triton_model_config():
    spec = ModelConfigSpec(
        name="m",
        tiers=("fp32", "fp16", "int8"),
        version=2,
        max_batch_size=16,
        max_queue_delay_us=250,
        inputs=(TensorSpec("input", "float32", (64,)),),
        outputs=(TensorSpec("output", "float32", (16,)),),
    )
    for flavour, backend in (("onnxruntime", "onnxruntime"), ("python", "python")):
        config = text_format.Parse(render_config_pbtxt(spec, flavour), mc.ModelConfig())
        assert config.backend == backend
        assert list(config.version_policy.specific.versions) == [2]
        assert config.max_batch_size == 16
        assert config.dynamic_batching.max_queue_delay_microseconds == 250
        assert config.parameters["kinfer.tiers"].string_value == "fp32,fp16,int8"
        assert config.input[0].data_type == mc.TYPE_FP32 and list(config.input[0].dims) == [64]


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="version=4"):
        render_config_pbtxt(ModelConfigSpec(name="m", tiers=("a", "b"), version=4))
    with pytest.raises(ValueError, match="flavour='python' needs inputs"):
        render_config_pbtxt(ModelConfigSpec(name="m"), "python")
    with pytest.raises(ValueError, match="flavour='tensorrt'"):
        render_config_pbtxt(ModelConfigSpec(name="m"), "tensorrt")


def test_repository_layout_puts_tier_k_in_version_k(tier_models, tmp_path):
    model_dir = write_model_repository(tmp_path, "m", tier_models, flavour="python")
    assert sorted(p.name for p in model_dir.iterdir()) == ["1", "2", "3", "config.pbtxt"]
    for k, path in enumerate(tier_models.values(), start=1):
        assert (model_dir / str(k) / "model.onnx").read_bytes() == path.read_bytes()
        assert (model_dir / str(k) / "model.py").exists()
    config = text_format.Parse((model_dir / "config.pbtxt").read_text(), mc.ModelConfig())
    assert [t.name for t in config.input] == ["input"] and [t.name for t in config.output] == [
        "output"
    ]


def test_switch_config_changes_only_the_version_policy():
    config = {
        "name": "m",
        "max_batch_size": 8,
        "input": [{"name": "input", "data_type": "TYPE_FP32", "dims": ["64"]}],
        "version_policy": {"specific": {"versions": ["1"]}},
        "parameters": {"kinfer.tiers": {"string_value": "fp32, fp16,int8"}},
    }
    switched = switch_config(config, 3)
    assert switched["version_policy"] == {"specific": {"versions": [3]}}
    assert {k: v for k, v in switched.items() if k != "version_policy"} == {
        k: v for k, v in config.items() if k != "version_policy"
    }
    assert config["version_policy"] == {"specific": {"versions": ["1"]}}, "the input is not mutated"
    assert tier_names(config) == ["fp32", "fp16", "int8"]
    for bad in (0, -1, True, "2"):
        with pytest.raises(ValueError, match="version="):
            switch_config(config, bad)


def test_find_executable_prefers_this_pythons_bin_then_path(tmp_path, monkeypatch):
    import os
    import sys

    from kinfer_dev.runtime.process import find_executable

    venv_bin, elsewhere = tmp_path / "venv-bin", tmp_path / "elsewhere"
    for folder in (venv_bin, elsewhere):
        folder.mkdir()
        tool = folder / "kinfer-tool"
        tool.write_text("#!/bin/sh\n")
        tool.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(venv_bin / "python"))
    monkeypatch.setenv("PATH", str(elsewhere))
    assert find_executable("kinfer-tool") == str(venv_bin / "kinfer-tool")
    os.chmod(venv_bin / "kinfer-tool", 0o644)  # not executable: PATH's is used
    assert find_executable("kinfer-tool") == str(elsewhere / "kinfer-tool")
    assert find_executable("kinfer-missing") is None
