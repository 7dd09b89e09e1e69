"""Train a solar-panel detector on annotations.json (tiles streamed from S3 or disk).

Writes --out: model.ckpt (best val mAP@0.5), last.ckpt (for --resume), metrics.json,
params.yaml and logs/ (CSV and TensorBoard).
"""

import sys

from components.core.stage import run_stage
from components.train.run import add_io_options, run

if __name__ == "__main__":
    sys.exit(run_stage("train", __doc__, add_io_options, run))
