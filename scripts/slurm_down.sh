#!/usr/bin/env bash
# Stop the local test cluster that scripts/slurm_up.sh started (by the pid files it wrote);
# safe to run again. Keeps config, state and the accounting database; `--purge` removes the
# cluster folder too (the next slurm_up.sh starts from an empty queue).
set -uo pipefail

DIR=${CLIPSCALE_SLURM_DIR:-/tmp/clipscale-slurm}
[ -d "$DIR/run" ] || { echo "slurm_down: nothing to stop ($DIR/run absent)"; exit 0; }
export SLURM_CONF=$DIR/slurm.conf

stop() {  # stop NAME PIDFILE: TERM, wait up to 10 s, then KILL
  local name=$1 pidfile=$2 pid
  [ -s "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    echo "slurm_down: stopped $name ($pid)"
  fi
  rm -f "$pidfile"
}

for f in "$DIR"/run/slurmd-*.pid; do
  [ -e "$f" ] && stop "$(basename "$f" .pid)" "$f"
done
stop slurmctld "$DIR/run/slurmctld.pid"
stop slurmdbd "$DIR/run/slurmdbd.pid"
stop mariadb "$DIR/mysql-run/mariadb.pid"
stop munged "$DIR/run/munged.pid"
if [ "${1:-}" = "--purge" ]; then
  [ "$(readlink /etc/slurm/slurm.conf 2>/dev/null)" = "$DIR/slurm.conf" ] && rm -f /etc/slurm/slurm.conf
  [ "$(readlink /etc/slurm/slurmdbd.conf 2>/dev/null)" = "$DIR/slurmdbd.conf" ] && rm -f /etc/slurm/slurmdbd.conf
  rm -rf "$DIR"
  echo "slurm_down: removed $DIR"
fi
echo "slurm_down: done"
