"""The process around delivery: logging, tracing, probes, serving and reloading.

``entrypoints.api``, ``entrypoints.worker`` and ``entrypoints.cli`` deliver the use cases; the
modules here are what every process runs beside them, and never import delivery
(import-linter's contracts in pyproject.toml).
"""
