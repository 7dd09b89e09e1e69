"""What a Kubeflow run shows besides the stages' own pages: evaluate's Metrics with the quality
gate, and the exported Model with its metadata.

These are KFP lightweight components (``pipeline.py`` wraps them with ``dsl.component`` in the
``solarpipe-pipeline`` image, which has kfp and the project installed, so nothing is installed at
run time): KFP's own executor writes the artifacts' metadata, which is where the KFP UI reads a
``Metrics`` artifact's values and a ``Model``'s description. Each function is self-contained (KFP
ships its source into the pod), so the imports live inside.
"""

from kfp.dsl import Markdown, Metrics, Model, Output


def quality_gate(
    evaluation: str,
    minimum: float,
    metrics: Output[Metrics],
    decision: Output[Markdown],
) -> float:
    """Log evaluate's figures as the run's Metrics; say whether mAP@0.5 clears ``minimum``.

    Returns mAP@0.5: the pipeline runs detect (and deploy) under ``dsl.If(returned >= minimum)``.
    """
    from components.core import uri as uri_io

    figures = uri_io.read_json(uri_io.join(evaluation, "metrics.json"))
    shown = {
        "map_50": "mAP@0.5",
        "map": "mAP@0.5:0.95",
        "precision": "precision",
        "recall": "recall",
        "f1": "F1",
    }
    for key, label in shown.items():
        metrics.log_metric(label, float(figures[key]))
    map_50 = float(figures["map_50"])
    passed = map_50 >= minimum
    verdict = (
        f"mAP@0.5 {map_50:.3f} ≥ {minimum:.3f} (kubeflow.min_map50): detect runs."
        if passed
        else f"mAP@0.5 {map_50:.3f} < {minimum:.3f} (kubeflow.min_map50): **detect and deploy "
        "are skipped**; this run ends without detections. Label more tiles or train longer."
    )
    with open(decision.path, "w", encoding="utf-8") as page:
        page.write(f"# Quality gate\n\n{verdict}\n\nScored: `{evaluation}/metrics.json`.\n")
    print(f"quality gate: {verdict}")
    return map_50


def exported_model(export: str, evaluation: str, model: Output[Model]) -> None:
    """The exported model as a KFP Model: its description, figures and where it is."""
    import json

    from components.core import uri as uri_io

    summary = uri_io.read_json(uri_io.join(export, "export.json"))
    figures = uri_io.read_json(uri_io.join(evaluation, "metrics.json"))
    description = {
        "arch": summary["arch"],
        "classes": list(summary["classes"]),
        "image_size": summary["image_size"],
        "score_threshold": summary["score_threshold"],
        "map_50": float(figures["map_50"]),
        "map": float(figures["map"]),
        "model_pt": uri_io.join(export, summary["model_file"]),
        "bentoml_archive": uri_io.join(export, summary["bento_archive"]),
        "bentoml_tag": summary["bento_tag"],
    }
    model.metadata.update(description)
    with open(model.path, "w", encoding="utf-8") as card:
        json.dump(description, card, indent=2, sort_keys=True)
