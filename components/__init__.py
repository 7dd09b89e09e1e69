"""solarpipe: solar-panel detection pipeline stages and their shared core."""
