"""The preprocess stage: Label Studio export objects → one ground-truth ``annotations.json``."""
