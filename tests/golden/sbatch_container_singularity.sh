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
exec singularity exec --bind '/shared/tv seg'"'"'s "venvs"/é/work' --bind '/local scratch/tvseg' /images/tvseg.sif /opt/other/bin/python -u -m submitit.core._submit submitit
