"""The detect stage: whole-raster inference with the exported model, to a GeoJSON map layer."""
