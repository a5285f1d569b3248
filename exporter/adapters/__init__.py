"""Backends of the ports: SQLite and Redis (queue, ledger), aioboto3 (OBS), in-process limiter."""
