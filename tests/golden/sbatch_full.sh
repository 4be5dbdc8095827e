#!/bin/bash
# A tvseg array, made by orchestrator/slurm.py; sbatch runs it in <workdir>/logs.
# Task i loads submitit/<array id>_<i>_submitted.pkl and runs that shard.
#SBATCH --job-name=demo-s3.2
#SBATCH --array=0-6%7
#SBATCH --output=%A_%a.log
#SBATCH --open-mode=append
#SBATCH --requeue
#SBATCH --signal=B:USR2@600
#SBATCH --time=1-12:00:00
#SBATCH --mem=32G
#SBATCH --cpus-per-task=8
#SBATCH --gres=gpu:2
#SBATCH --partition=gpu
#SBATCH --account=tv-archive
#SBATCH --qos=long
#SBATCH --constraint=a100|v100
#SBATCH --dependency=afterany:4711
#SBATCH --mail-type=FAIL
#SBATCH --comment="it's a test"
#SBATCH --exclusive
export SUBMITIT_EXECUTOR=slurm
exec '/opt/tv seg'"'"'s env/bin/python' -u -m submitit.core._submit submitit
