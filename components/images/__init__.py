"""Stage container images: names, building (`solarpipe images build`) and local runs (`run-stage`)."""
