"""Rasters shared by the stages that read them (prepare, detect): windowed reads and tiling."""
