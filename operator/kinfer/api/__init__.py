"""The InferenceService API: constants, model (parse + defaults), validation, CRD schema."""
