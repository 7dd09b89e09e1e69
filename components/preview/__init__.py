"""The preview stage: sample tiles per split and draw their ground-truth boxes into a gallery."""
