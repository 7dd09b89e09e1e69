"""The evaluate stage: the exported TorchScript model on one split of the annotations."""
