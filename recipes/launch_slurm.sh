#!/usr/bin/env bash
# Multi-node training on a SLURM cluster: one `accelerate launch` per node, each starting one process per GPU.
#
#   sbatch --nodes=2 --gpus-per-node=8 --ntasks-per-node=1 --cpus-per-task=64 recipes/launch_slurm.sh \
#       grpo --config recipes/Qwen2.5-VL-7B-Instruct/grpo/config_videorft.yaml \
#       --dataset_name path/to/VideoRFT-RL-310K --media_root path/to/media
#
# The first argument is the command (sft or grpo); the rest go to it. ACCELERATE_CONFIG picks the engine (default
# ZeRO-3 for grpo, ZeRO-2 for sft; recipes/accelerate_configs/fsdp.yaml or multinode.yaml for FSDP2 or plain DDP);
# process counts come from the allocation, so the configs stay as they are. Every node must see the repository, the
# data and output_dir at the same paths (a shared filesystem): only the main process writes checkpoints.
#
# Outside SLURM, run on each machine (rank 0 and 1 of two, 8 GPUs each):
#   accelerate launch --config_file recipes/accelerate_configs/zero3.yaml --num_machines 2 --num_processes 16 \
#       --machine_rank <0|1> --main_process_ip <machine 0 address> --main_process_port 29500 \
#       -m videorft_hf.scripts.grpo --config ...
#SBATCH --job-name=videorft
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --exclusive
set -euo pipefail

COMMAND=${1:?usage: launch_slurm.sh sft|grpo [arguments of the command]}
shift
case "$COMMAND" in
    sft) DEFAULT_CONFIG=recipes/accelerate_configs/zero2.yaml ;;
    grpo) DEFAULT_CONFIG=recipes/accelerate_configs/zero3.yaml ;;
    *) echo "launch_slurm.sh: unknown command '$COMMAND'; use sft or grpo" >&2; exit 2 ;;
esac
ACCELERATE_CONFIG=${ACCELERATE_CONFIG:-$DEFAULT_CONFIG}

NUM_NODES=${SLURM_NNODES:?run this under sbatch or srun (SLURM_NNODES is not set)}
GPUS_PER_NODE=${GPUS_PER_NODE:-$(nvidia-smi --list-gpus | wc -l)}
# awk reads every line (head would close the pipe early: SIGPIPE under pipefail)
MAIN_PROCESS_IP=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | awk 'NR == 1')
MAIN_PROCESS_PORT=${MAIN_PROCESS_PORT:-29500}

# One task per node; each resolves its own machine rank from SLURM_NODEID. Single quotes: expanded on each node.
srun --nodes="$NUM_NODES" --ntasks-per-node=1 bash -c '
    accelerate launch --config_file "$0" \
        --num_machines "$1" --num_processes "$(($1 * $2))" --machine_rank "$SLURM_NODEID" \
        --main_process_ip "$3" --main_process_port "$4" --rdzv_backend static \
        -m "videorft_hf.scripts.$5" "${@:6}"
' "$ACCELERATE_CONFIG" "$NUM_NODES" "$GPUS_PER_NODE" "$MAIN_PROCESS_IP" "$MAIN_PROCESS_PORT" "$COMMAND" "$@"
