"""Fleet-scale runs of the operator on the local cluster with simulated pods."""
