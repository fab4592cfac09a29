#!/bin/bash
# Train on two nodes (and all their GPUs) together: one process per node,
# tf.distribute.MultiWorkerMirroredStrategy. Each process learns the cluster from Slurm's
# environment (tf.distribute.cluster_resolver.SlurmClusterResolver), so no TF_CONFIG is needed.
#
#   sbatch scripts/slurm_two_nodes.sh           (from the repository root)
#
# Requirements:
# - OUT on a filesystem both nodes see (shared home or scratch): the chief (task 0) alone writes
#   the run there, and after a restart the other worker resumes from the chief's last commit.
# - The data root readable from both nodes, and prepared before the job (check-data below).
# - Workers talk over TCP ports starting at 8888 on each node (SlurmClusterResolver's default).
# - The full preset has no time budget: if --time runs out first, submit the job again to
#   continue. OUT=... sbatch scripts/slurm_two_nodes.sh chooses the run folder.
#
# If a worker dies, the others wait for it at their next step; srun --kill-on-bad-exit ends
# them, and submitting the same job again resumes all of them from the last finished epoch.
#SBATCH --job-name=unetlib-multiworker
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1          # one worker per node; it uses every GPU of its node
#SBATCH --gpus-per-node=4            # adjust to your cluster (some want --gres=gpu:4)
#SBATCH --cpus-per-task=16
#SBATCH --mem=64G
#SBATCH --time=04:00:00
#SBATCH --output=%x-%j.out
set -euo pipefail

# An environment with TensorFlow's CUDA build, made once on a login node (README, "Scaling up"):
#   python -m venv .venv && .venv/bin/pip install -e '.[gpu,dev]'
source .venv/bin/activate
# Stop at once if TensorFlow sees no GPU, rather than training for hours on the CPU.
python -c "import sys, tensorflow as tf; sys.exit(0 if tf.config.list_physical_devices('GPU') else 'no GPU visible to TensorFlow')"

# Data: real slices under data/ or UNETLIB_DATA (exported, it reaches every node), else the phantom.
OUT=${OUT:-$PWD/runs/full-multiworker}

unetlib check-data            # once, on the first node, before the workers start
export SRUN_CPUS_PER_TASK=${SLURM_CPUS_PER_TASK:-1}   # newer srun does not pass --cpus-per-task on by itself
# srun starts one worker per node; global batch = 8 × GPUs per node × 2 nodes.
srun --kill-on-bad-exit=1 unetlib train --preset full --out "$OUT" --distribute multiworker --batch-size 8
unetlib evaluate "$OUT/model.keras" --json "$OUT/test_scores.json"
