"""The train stage: fit a torchvision detector on ``annotations.json``, streaming tiles by URI."""
