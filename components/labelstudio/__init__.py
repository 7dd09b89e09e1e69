"""Label Studio integration: project and storage setup, its export objects, the stand-in annotator."""
