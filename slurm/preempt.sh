# Sourced by the sbatch templates in the batch shell: pass Slurm's warning signal on to the training
# processes, and requeue a job whose run stopped for it.
#
# Contract with the training scripts: on SIGUSR1 a training process saves a checkpoint, writes the
# file PREEMPTED into its output directory and exits with code 75. The requeued job (same job id,
# SLURM_RESTART_COUNT > 0) starts the script again with `--resume_from_checkpoint auto`.

# shellcheck disable=SC2034  # read by the templates that source this file
PREEMPT_SIGNALLED=0

# `#SBATCH --signal=B:USR1@300` sends SIGUSR1 to this shell only, before the time limit (and at a
# preemption where slurm.conf has PreemptParameters=send_user_signal). scancel --signal passes it on to
# every process of every job step, on every node, and leaves this shell out (no --batch/--full).
on_warning_signal() {
  PREEMPT_SIGNALLED=1
  echo "[$(date +%T)] batch shell got SIG$1: passing SIGUSR1 to the training processes" >&2
  scancel --signal=USR1 "$SLURM_JOB_ID" || true
}
trap 'on_warning_signal USR1' USR1

# run_step COMMAND...: run a job step in the background and wait for it. A trapped signal cuts `wait`
# short (status > 128); the step still runs then, so wait again.
run_step() {
  "$@" &
  local pid=$! rc
  while :; do
    wait "$pid"
    rc=$?
    if [ "$rc" -gt 128 ] && kill -0 "$pid" 2>/dev/null; then
      continue
    fi
    return "$rc"
  done
}

# RESUME_ARGS: nothing on a first start; `--resume_from_checkpoint auto` once the job was requeued.
# shellcheck disable=SC2034  # read by the templates that source this file
RESUME_ARGS=()
if [ "${SLURM_RESTART_COUNT:-0}" -gt 0 ]; then
  RESUME_ARGS=(--resume_from_checkpoint auto)
fi

# requeue_job REASON: put this job back in the queue (same job id, so the same W&B run id and output
# directory) unless it already came back MAX_REQUEUES times; exits the batch shell.
requeue_job() {
  if [ "${SLURM_RESTART_COUNT:-0}" -ge "${MAX_REQUEUES:-20}" ]; then
    echo "$1; not requeueing: job $SLURM_JOB_ID was already requeued ${SLURM_RESTART_COUNT} times" >&2
    exit 75
  fi
  echo "$1: requeueing job $SLURM_JOB_ID" >&2
  scontrol requeue "$SLURM_JOB_ID"
  exit 0
}

# finish_or_requeue OUTPUT_DIR STATUS: requeue when the run stopped for the signal (it left PREEMPTED
# in OUTPUT_DIR, or exited 75 itself); otherwise end the job with the run's status.
finish_or_requeue() {
  if [ -e "$1/PREEMPTED" ] || [ "$2" -eq 75 ]; then
    requeue_job "run in $1 stopped for preemption"
  fi
  exit "$2"
}
