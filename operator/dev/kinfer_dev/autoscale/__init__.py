"""The autoscaling simulator, its baselines (HPA, KPA, oracle), bounds, plots and bench."""
