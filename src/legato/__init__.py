"""Legato: a self-hosted application orchestration platform."""

__version__ = "0.1.0"
