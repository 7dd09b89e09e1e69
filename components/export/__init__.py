"""The export stage: a train checkpoint → TorchScript ``model.pt`` and a BentoML model archive."""
