"""Delivery: the container that wires adapters to ports, the HTTP API, the worker, the CLI."""
