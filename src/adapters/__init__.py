"""Adapters: one module per outside thing, each implementing a ``reportcore`` port."""
