"""Precision tiers: tier policy (pure) and the tritonclient actuator."""
