"""Shared ML code of the torch stages (train, export, evaluate, detect)."""
