"""Delivery: the `reportsvc` command line, the Litestar API, the worker and their wiring."""
