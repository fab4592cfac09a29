#!/bin/bash
# Train on every GPU of one node: one process, tf.distribute.MirroredStrategy.
#
#   sbatch scripts/slurm_one_node.sh            (from the repository root)
#
# --batch-size is per GPU: with 4 GPUs and --batch-size 8 each step trains on 32 slices, and an
# epoch has a quarter of the steps. The learning rate is not scaled for you (see README,
# "Scaling up"). Rerunning the same job after a timeout or preemption resumes from the last
# finished epoch. The full preset has no time budget: if --time runs out first, submit the job
# again to continue (the evaluate line runs once training has finished), or give the run a
# --max-minutes budget below --time (a run that used up its budget is finished, not resumable).
# OUT=... sbatch scripts/slurm_one_node.sh chooses the run folder.
#SBATCH --job-name=unetlib-mirrored
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --gpus-per-node=4            # adjust to your cluster (some want --gres=gpu:4)
#SBATCH --cpus-per-task=16           # the input pipeline and NIfTI decoding use CPU cores
#SBATCH --mem=64G
#SBATCH --time=04:00:00
#SBATCH --output=%x-%j.out
set -euo pipefail

# An environment with TensorFlow's CUDA build, made once on a login node (README, "Scaling up"):
#   python -m venv .venv && .venv/bin/pip install -e '.[gpu,dev]'
source .venv/bin/activate
# Stop at once if TensorFlow sees no GPU, rather than training for hours on the CPU.
python -c "import sys, tensorflow as tf; sys.exit(0 if tf.config.list_physical_devices('GPU') else 'no GPU visible to TensorFlow')"

# The data: real HipMRI slices under data/ or wherever UNETLIB_DATA points (exported here, it
# reaches the job); without them, the synthetic phantom. Runs go to a folder the job can write.
OUT=${OUT:-$PWD/runs/full-mirrored}

unetlib check-data
unetlib train --preset full --out "$OUT" --distribute mirrored --batch-size 8
unetlib evaluate "$OUT/model.keras" --json "$OUT/test_scores.json"
