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
module load apptainer
if command -v apptainer >/dev/null 2>&1; then tvseg_runtime=apptainer
elif command -v singularity >/dev/null 2>&1; then tvseg_runtime=singularity
else echo "tvseg: neither apptainer nor singularity is on the PATH of $(hostname): load its module in slurm.setup or set container.runtime" >&2; exit 127
fi
exec "$tvseg_runtime" exec --nv --bind '/shared/tv seg'"'"'s "venvs"/é/work' --bind "${TMPDIR:-/tmp}" --bind '/archive/tv 2026' --bind /home --writable-tmpfs '/shared/tv seg'"'"'s "venvs"/é/tvseg.sif' /opt/tvseg/venv/bin/python -u -m submitit.core._submit submitit
