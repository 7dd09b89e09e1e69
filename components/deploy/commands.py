"""``solarpipe deploy`` / ``python -m components.deploy``: roll the serving Deployment to a model.

Run by the pipeline's deploy task (behind the quality gate) inside the cluster, where it uses
the task's service account; from a workstation it uses the kubeconfig.
"""

from __future__ import annotations

import argparse
import os

DEFAULT_DEPLOYMENT = "solarpipe-serve"
DEFAULT_TIMEOUT_S = 900.0


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Point the serving Deployment at a new model (its SOLARPIPE_MODEL_URI, with the run id "
        "in annotations), wait until the rollout completes, and report. A rollout that does "
        "not become ready fails (exit 1) and is rolled back; the previous pods keep serving."
    )
    parser.epilog = (
        "example: solarpipe deploy --model-uri s3://solarpipe/runs/RUN/export --run-id RUN"
    )
    parser.add_argument(
        "--model-uri",
        required=True,
        metavar="URI",
        help="the export stage's output (folder or archive) as the serving pods reach it",
    )
    parser.add_argument(
        "--run-id",
        default=os.environ.get("KFP_RUN_ID", ""),
        help="the run that made the model, recorded in annotations (default: $KFP_RUN_ID)",
    )
    parser.add_argument(
        "--deployment",
        default=DEFAULT_DEPLOYMENT,
        help=f"the serving Deployment (default: {DEFAULT_DEPLOYMENT}, from k8s/serving)",
    )
    parser.add_argument(
        "--namespace",
        default="",
        help="its namespace (default: this pod's, else the kubeconfig context's)",
    )
    parser.add_argument(
        "--container", default="serve", help="the serving container's name (default: serve)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        metavar="SECONDS",
        help=f"give up waiting after this long (default: {DEFAULT_TIMEOUT_S:g}; the "
        "Deployment's progressDeadlineSeconds usually decides first)",
    )
    parser.add_argument(
        "--poll-interval",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="seconds between status reads (default: 5)",
    )
    parser.add_argument(
        "--no-rollback",
        dest="rollback",
        action="store_false",
        help="on failure leave the Deployment on the new model (its old pods still serve)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> None:
    from components.deploy.run import DeployRequest, deploy

    request = DeployRequest(
        model_uri=args.model_uri,
        run_id=args.run_id,
        deployment=args.deployment,
        namespace=args.namespace,
        container=args.container,
        timeout_s=args.timeout,
        poll_s=args.poll_interval,
        rollback=args.rollback,
    )
    print(deploy(request), flush=True)
