"""Shared core of every stage: params, URI I/O, the S3 client, progress and logging."""
