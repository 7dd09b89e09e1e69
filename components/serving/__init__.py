"""The BentoML service that serves the exported detector over HTTP (``service.py``)."""
