# shellcheck shell=bash disable=SC2034  # the paths are used by infra/up and infra/down
# Shared by infra/up and infra/down: where things live, logging, the state file,
# the TimescaleDB chroot, and careful removal of directories.
#
# Everything infra/up creates lives under ONE directory, $CRYPTOSTREAM_HOME
# (default ~/.local/share/cryptostream):
#   .cryptostream-home         marker: infra/down --purge deletes only a directory that has it
#   infra.lock                 flock: one infra/up or infra/down at a time
#   state.env                  what infra/up started (and so what infra/down stops)
#   logs/                      debootstrap.log, postgresql.log (link into the chroot), redis.log
#   timescaledb/root/          Debian trixie chroot with PostgreSQL 17 + TimescaleDB;
#                              the cluster is root/var/lib/tsdata/pg
#   timescaledb/root.build.*   a build in progress (removed if a build was interrupted)
#   redis/                     data directory of a redis-server that infra/up started

CS_HOME=${CRYPTOSTREAM_HOME:-${HOME:?set CRYPTOSTREAM_HOME or HOME}/.local/share/cryptostream}
CS_HOME=$(realpath -m -- "$CS_HOME")
CS_MARKER=$CS_HOME/.cryptostream-home
CS_STATE=$CS_HOME/state.env
CS_LOGS=$CS_HOME/logs
TS_DIR=$CS_HOME/timescaledb
TS_ROOT=$TS_DIR/root
TS_READY=.cryptostream-ready          # written into the root as the last build step
TS_PGBIN=/usr/lib/postgresql/17/bin   # paths inside the chroot
TS_PGDATA=/var/lib/tsdata/pg
TS_PGLOG=/var/lib/tsdata/postgresql.log
REDIS_DIR=$CS_HOME/redis

log() { printf 'infra: %s\n' "$*" >&2; }
die() { printf 'infra: error: %s\n' "$*" >&2; exit 1; }
is_root() { [ "$(id -u)" -eq 0 ]; }

# Hold $CS_HOME/infra.lock (fd 9) until the script exits.  Children that outlive
# the script (postmaster, redis-server) must not inherit fd 9: start them with 9>&-.
take_lock() {
  mkdir -p "$CS_HOME"
  exec 9>"$CS_HOME/infra.lock"
  if ! flock -w 600 9; then die "another infra/up or infra/down holds $CS_HOME/infra.lock"; fi
}

# --- state file: KEY=value lines, read with grep, never sourced -------------
state_get() {  # state_get KEY -> value or empty
  [ -f "$CS_STATE" ] || return 0
  grep -m1 "^$1=" "$CS_STATE" | cut -d= -f2- || true
}
state_set() {  # state_set KEY=value ...
  local kv tmp
  tmp=$(mktemp "$CS_HOME/.state.XXXXXX")
  { [ -f "$CS_STATE" ] && cat "$CS_STATE"; true; } > "$tmp"
  for kv in "$@"; do
    grep -v "^${kv%%=*}=" "$tmp" > "$tmp.n" || true
    printf '%s\n' "$kv" >> "$tmp.n"
    mv "$tmp.n" "$tmp"
  done
  mv "$tmp" "$CS_STATE"
}
state_del_prefix() {  # state_del_prefix PREFIX_
  [ -f "$CS_STATE" ] || return 0
  local tmp
  tmp=$(mktemp "$CS_HOME/.state.XXXXXX")
  grep -v "^$1" "$CS_STATE" > "$tmp" || true
  mv "$tmp" "$CS_STATE"
}

# --- networking -------------------------------------------------------------
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
redis_ping_port() {  # PING without redis-cli (absent on a fresh machine)
  (
    exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
    printf 'PING\r\n' >&3
    IFS= read -r -t 3 reply <&3 || exit 1
    [[ $reply == "+PONG"* ]]
  ) 2>/dev/null
}

# --- the TimescaleDB chroot ----------------------------------------------------
in_root() {  # in_root ROOT CMD...: run CMD as postgres inside the chroot
  local root=$1; shift
  chroot --userspec=postgres:postgres "$root" env -i HOME=/var/lib/postgresql LANG=C.UTF-8 \
    PATH=/usr/bin:/bin "$@"
}
ts_root_ready() { [ -f "$TS_ROOT/$TS_READY" ]; }
ts_running() {  # our cluster is running (needs root: chroot)
  ts_root_ready && is_root && in_root "$TS_ROOT" "$TS_PGBIN/pg_ctl" -D "$TS_PGDATA" status >/dev/null 2>&1
}
ts_running_port() { sed -n 4p "$TS_ROOT$TS_PGDATA/postmaster.pid" 2>/dev/null || true; }
ts_stop() {
  log "stopping TimescaleDB in $TS_ROOT"
  in_root "$TS_ROOT" "$TS_PGBIN/pg_ctl" -D "$TS_PGDATA" -m fast -w -t 120 stop >&2 9>&-
}

# --- careful removal -----------------------------------------------------------
# An interrupted debootstrap can leave /proc, /sys or /dev bind mounts inside its
# target; rm -rf through a bind-mounted /dev would delete the host's devices.
# Unmount everything below the directory first (deepest first), then remove
# without crossing file systems.
safe_rm() {
  local dir=$1 real mnt
  [ -e "$dir" ] || return 0
  real=$(realpath -- "$dir")
  [ "$real" != / ] || die "refusing to remove /"
  while IFS= read -r mnt; do
    [ -n "$mnt" ] || continue
    log "unmounting leftover $mnt"
    umount -l "$mnt" || die "cannot unmount $mnt; remove $dir by hand"
  done < <(awk -v p="$real/" '{ m = $2; gsub(/\\040/, " ", m); if (index(m "/", p) == 1) print m }' \
             /proc/self/mounts | sort -r)
  rm -rf --one-file-system -- "$real" || die "cannot remove $real"
}
