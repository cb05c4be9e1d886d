#!/usr/bin/env bash
# Run a launcher (accelerate launch, torchrun, wandb agent) as a node's Slurm task so that the signals
# reach the training processes and not the launcher, and so that the task (the job step) lasts until
# the training processes have saved their checkpoint:
#   srun slurm/launch_on_node.sh accelerate launch ... SCRIPT ARGS...
# torchrun and accelerate launch install no SIGUSR1 handler (the default action kills them, and their
# workers with them) and do not pass the signal on. So the launcher starts with SIGUSR1 ignored, which
# its children inherit until each Python training process installs its own handler; a SIGUSR1 or
# SIGTERM that reaches this wrapper goes to every process below the launcher (the training processes,
# however deep: under `wandb agent` they are grandchildren). When Slurm also delivers it to every
# process of the step directly, a training process gets it twice: its handler must only set a flag.
# (Ignored signals cannot be trapped again by a bash script: the training process must be Python.)
#
# A launcher that dies (killed alone, or by the SIGTERM Slurm sends every process of a step) leaves its
# training processes behind: the kernel sends them SIGUSR1 (they ask for it, errors.stop_with_launcher)
# and they save a checkpoint. Slurm kills whatever is left of a step once its task exits, so this
# wrapper stays until they are done. It finds them by a variable in their environment, which every
# launcher passes on: after their launcher's death they are no longer its descendants.
set -u

tag="${SLURM_JOB_ID:-job}.${SLURM_STEP_ID:-step}.$$"
(trap '' USR1; export LAUNCH_ON_NODE_TAG="$tag"; exec "$@") &
launcher=$!

below_launcher() {  # the pids of the live processes started below the launcher, the launcher left out
  local file pid
  for file in $(grep -lsxzF "LAUNCH_ON_NODE_TAG=$tag" /proc/[0-9]*/environ); do
    pid=${file#/proc/}
    pid=${pid%/environ}
    if [ "$pid" != "$launcher" ]; then
      echo "$pid"
    fi
  done
}

pass_on() {
  local pids
  pids=$(below_launcher)
  if [ -n "$pids" ]; then
    # shellcheck disable=SC2086  # one word per pid
    kill -"$1" $pids 2>/dev/null
  fi
  return 0
}
trap 'pass_on USR1' USR1
trap 'pass_on TERM' TERM

while :; do
  wait "$launcher"
  rc=$?
  if [ "$rc" -gt 128 ] && kill -0 "$launcher" 2>/dev/null; then
    continue  # wait was cut short by a trap; the launcher still runs
  fi
  break
done
if [ "$rc" -gt 128 ]; then  # the launcher was killed: its training processes may still be saving
  while [ -n "$(below_launcher)" ]; do
    sleep 0.5
  done
fi
exit "$rc"
