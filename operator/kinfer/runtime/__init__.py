"""The data plane: model repository layout, model config, local Triton, tier switching."""
