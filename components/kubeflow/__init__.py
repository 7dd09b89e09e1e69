"""pipeline.py's links to the outside: the Kubeflow Pipelines API, the cluster's S3 Secret, and
the local Docker engine that ``run-local`` runs the stage images on."""
