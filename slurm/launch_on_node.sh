#!/usr/bin/env bash
# Run a launcher (accelerate launch, torchrun, wandb agent) as a node's Slurm task so that SIGUSR1, the
# warning before the time limit, reaches the training processes and not the launcher:
#   srun slurm/launch_on_node.sh accelerate launch ... SCRIPT ARGS...
# torchrun and accelerate launch install no SIGUSR1 handler (the default action kills them, and their
# workers with them) and do not pass the signal on. So the launcher starts with SIGUSR1 ignored, which
# its children inherit until each Python training process installs its own handler; a SIGUSR1 that
# reaches this wrapper goes to every process below the launcher (the training processes, however deep:
# under `wandb agent` they are grandchildren). When `scancel --signal` also delivers it to every process
# of the step directly, a training process gets it twice: its handler must only set a flag.
# (Ignored signals cannot be trapped again by a bash script: the training process must be Python.)
set -u

(trap '' USR1; exec "$@") &
launcher=$!

descendants() {
  local child
  for child in $(pgrep -P "$1"); do
    echo "$child"
    descendants "$child"
  done
}

pass_on() {
  local pids
  pids=$(descendants "$launcher")
  if [ -n "$pids" ]; then
    # shellcheck disable=SC2086  # one word per pid
    kill -USR1 $pids 2>/dev/null
  fi
  return 0
}
trap pass_on USR1

while :; do
  wait "$launcher"
  rc=$?
  if [ "$rc" -gt 128 ] && kill -0 "$launcher" 2>/dev/null; then
    continue  # wait was cut short by the trap; the launcher still runs
  fi
  exit "$rc"
done
