"""Reconciliation: converge services towards their desired state."""
