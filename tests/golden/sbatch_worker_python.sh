#!/bin/bash
# A tvseg array, made by orchestrator/slurm.py; sbatch runs it in <workdir>/logs.
# Task i loads submitit/<array id>_<i>_submitted.pkl and runs that shard.
#SBATCH --job-name=demo-s1
#SBATCH --array=0-3
#SBATCH --output=%A_%a.log
#SBATCH --open-mode=append
#SBATCH --requeue
#SBATCH --signal=B:USR2@300
#SBATCH --time=04:00:00
#SBATCH --mem=16G
#SBATCH --cpus-per-task=4
export SUBMITIT_EXECUTOR=slurm
module load cuda/12.4
export TF_CPP_MIN_LOG_LEVEL=2
exec '/shared/tv seg'"'"'s "venvs"/é/gpu/bin/python' -u -m submitit.core._submit submitit
