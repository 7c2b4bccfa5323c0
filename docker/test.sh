#!/usr/bin/env bash
# docker/test.sh (`make docker-test`): builds the image of docker/Dockerfile
# and runs it, without a Docker engine and without a registry.
#
#   1. a Debian 12 minbase rootfs by debootstrap (mirror from the machine's
#      apt sources), cached as docker/.cache/debian12-min.tar, imported as
#      localhost/debian12-min;
#   2. podman build --build-arg BASE=localhost/debian12-min;
#   3. podman run of the default command (tcp 0.0.0.0:9700 -> upper -> stdout)
#      with /srv/scripts mounted from a temp folder; waits for the port and
#      the healthcheck, pushes lines, checks `podman logs` for them
#      upper-cased; rewrites the mounted upper.lua and checks the new
#      version's output (hot reload through the volume); stops it (exit 0).
#
# Needs root (podman with the vfs driver, debootstrap). Installs podman,
# buildah, debootstrap and runc with apt-get when they are missing.
# Env: DOCKER_TEST_SOURCE=head builds the committed tree (git archive HEAD)
# with the working tree's docker/ laid over it, instead of the working tree
# (useful while a change elsewhere in the tree is half done);
# SLUICE_TEST_PORT (9700; the port must be free: the container uses the
# host's network), DOCKER_TEST_CLEAN=1 removes the images at the end
# (kept by default so that a rerun reuses the build cache).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cache=$root/docker/.cache
base=localhost/debian12-min
image=localhost/sluice:test
port=${SLUICE_TEST_PORT:-9700}
name=sluice-test-$$
t0=$(date +%s)

say() { printf '[docker-test %3ds] %s\n' "$(($(date +%s) - t0))" "$*" >&2; }
die() { say "FAIL: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (podman --storage-driver vfs, debootstrap)"

missing=()
for p in podman:podman buildah:buildah debootstrap:debootstrap runc:runc; do
  command -v "${p%%:*}" >/dev/null || missing+=("${p#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

pm() {
  podman --storage-driver vfs --cgroup-manager=cgroupfs --events-backend=file \
    --runtime runc "$@"
}

# ---- the mirror: the first Debian (non-security) URI of the apt sources ----
mirror() {
  local f uri
  # one-line style: deb [opts] URI SUITE COMPONENTS
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -r "$f" ] || continue
    uri=$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i !~ /^\[/ && $i !~ /\]$/) { print $i; exit } }' "$f" \
          | grep -v -e security -e '^$' | head -n1 || true)
    [ -n "$uri" ] && grep -q -e bookworm -e stable "$f" && { echo "$uri"; return; }
  done
  # deb822 style: stanzas with Types: deb / URIs: / Suites: bookworm...
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -r "$f" ] || continue
    uri=$(awk 'BEGIN { RS = ""; FS = "\n" }
      { t = u = s = ""
        for (i = 1; i <= NF; i++) {
          if ($i ~ /^Types:/)  t = $i
          if ($i ~ /^URIs:/)   { u = $i; sub(/^URIs:[ \t]*/, "", u); sub(/[ \t].*/, "", u) }
          if ($i ~ /^Suites:/) s = $i }
        if (t ~ /[ \t]deb([ \t]|$)/ && s ~ /[ \t]bookworm([ \t]|$)/ && u !~ /security/) { print u; exit } }' "$f")
    [ -n "$uri" ] && { echo "$uri"; return; }
  done
  echo http://deb.debian.org/debian
}

# ---- 1. the base image ------------------------------------------------------
mkdir -p "$cache"
tarball=$cache/debian12-min.tar
if [ ! -s "$tarball" ]; then
  m=$(mirror)
  say "debootstrap --variant=minbase bookworm from $m (cached in docker/.cache)"
  rootfs=$(mktemp -d "$cache/rootfs.XXXXXX")
  trap 'rm -rf "$rootfs"' EXIT
  debootstrap --variant=minbase bookworm "$rootfs" "$m" >"$cache/debootstrap.log" 2>&1 \
    || { tail -n 20 "$cache/debootstrap.log" >&2; die "debootstrap failed (log: docker/.cache/debootstrap.log)"; }
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  chmod 755 "$rootfs"   # mktemp made it 0700, and "." in the tar is the image's /
  tar -C "$rootfs" --numeric-owner -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
  rm -rf "$rootfs"
  trap - EXIT
  pm rmi -f "$base" >/dev/null 2>&1 || true
fi
if ! pm image exists "$base"; then
  say "importing $tarball as $base"
  pm import "$tarball" "$base" >/dev/null
fi

# ---- 2. the image -----------------------------------------------------------
context=$root
if [ "${DOCKER_TEST_SOURCE:-worktree}" = head ]; then
  context=$(mktemp -d)
  trap 'rm -rf "$context"' EXIT
  git -C "$root" archive HEAD | tar -C "$context" -x
  rm -rf "$context/docker"; cp -r "$root/docker" "$context/docker"; rm -rf "$context/docker/.cache"
  say "context: git HEAD ($(git -C "$root" rev-parse --short HEAD)) + the working tree's docker/"
fi
say "podman build -f docker/Dockerfile --build-arg BASE=$base -t $image"
pm build --isolation chroot --format docker --build-arg BASE="$base" \
  -f "$context/docker/Dockerfile" -t "$image" "$context" >"$cache/build.log" 2>&1 \
  || { tail -n 30 "$cache/build.log" >&2; die "podman build failed (log: docker/.cache/build.log)"; }
say "built $image ($(pm image inspect --format '{{.Size}}' "$image" | awk '{ printf "%.0f MB", $1 / 1e6 }'))"
[ "$(pm image inspect --format '{{.Config.User}}' "$image")" = sluice ] || die "the image does not run as user sluice"

# ---- 3. run it ----------------------------------------------------------------
[ "$context" = "$root" ] || rm -rf "$context"
trap - EXIT
work=$(mktemp -d)
cleanup() {
  # -v: the anonymous volumes of the image's VOLUMEs too
  pm rm -f -v -t 0 "$name" >/dev/null 2>&1 || true
  rm -rf "$work"
  if [ "${DOCKER_TEST_CLEAN:-0}" = 1 ]; then
    pm rmi -f "$image" "$base" >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT
mkdir "$work/scripts"
cp "$root"/scripts/*.lua "$work/scripts/"
chmod 755 "$work" "$work/scripts"; chmod 644 "$work"/scripts/*.lua

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; }
send() { # lines... -> one connection to the tcp source
  exec 3<>"/dev/tcp/127.0.0.1/$port"
  printf '%s\n' "$@" >&3
  exec 3>&-
}
logs() { pm logs "$name" 2>&1; }
running() { [ "$(pm inspect --format '{{.State.Running}}' "$name" 2>/dev/null)" = true ]; }

port_open && die "port $port is in use on this host (the container uses the host network; set SLUICE_TEST_PORT)"
(exec 3<>/dev/tcp/127.0.0.1/9600) 2>/dev/null && die "port 9600 (the admin API) is in use on this host"
conf=()
if [ "$port" != 9700 ]; then   # the same pipeline on another port
  sed "s/0.0.0.0:9700/0.0.0.0:$port/" "$root/docker/pipeline.conf" >"$work/pipeline.conf"
  mkdir "$work/conf"; mv "$work/pipeline.conf" "$work/conf/"; chmod -R a+rX "$work/conf"
  conf=(-v "$work/conf:/srv/conf:ro")
fi

say "podman run $image (default command), scripts mounted from $work/scripts"
# --health-interval=disable: podman arms the periodic check with a systemd
# timer, and there is no systemd here; `podman healthcheck run` below runs
# the image's HEALTHCHECK once instead.
pm run -d --name "$name" --network host --health-interval=disable \
  --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 \
  -v "$work/scripts:/srv/scripts:ro" "${conf[@]}" "$image" >/dev/null

for _ in $(seq 1 100); do
  running || { logs >&2; die "the container exited: $(pm inspect --format '{{.State.ExitCode}}' "$name")"; }
  port_open && break
  sleep 0.2
done
port_open || { logs >&2; die "port $port never accepted"; }
say "port $port accepts"

# the image's HEALTHCHECK (GET /health on 9600), run once: healthy within 10 s
healthy=0
for _ in $(seq 1 20); do
  if pm healthcheck run "$name" >/dev/null 2>&1; then healthy=1; break; fi
  sleep 0.5
done
[ $healthy = 1 ] || { logs >&2; die "healthcheck failed: $(pm healthcheck run "$name" 2>&1 || true)"; }
logs | grep "admin: listening" >/dev/null || die "no admin API in the log (the check was not on /health)"
say "healthcheck: healthy (GET /health on the admin port)"
exec 3<>/dev/tcp/127.0.0.1/9600
printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3
grep -q '^sluice_up' <&3 || die "GET /metrics has no sluice_up"
exec 3>&-

# (grep >/dev/null, not grep -q, after a pipe: with pipefail, grep -q quitting
# at the first match can fail the pipe with SIGPIPE on `podman logs`)
wait_for() { # grep -x pattern, seconds
  local i
  for i in $(seq 1 $(($2 * 5))); do
    logs | grep -x -- "$1" >/dev/null && return 0
    sleep 0.2
  done
  return 1
}

send "hello" "stream processing" "sluice in a container"
for l in "HELLO" "STREAM PROCESSING" "SLUICE IN A CONTAINER"; do
  wait_for "$l" 10 || { logs >&2; die "no line '$l' in the container's output"; }
done
say "3 lines in, 3 upper-cased lines out"

# hot reload through the mounted volume: an editor-style save (rename over)
cat >"$work/scripts/upper.lua.new" <<'LUA'
local op = {}
function op.process(ctx, line) ctx:emit("v2 " .. line:upper(), ctx.key, ctx.time) end
return op
LUA
chmod 644 "$work/scripts/upper.lua.new"
mv "$work/scripts/upper.lua.new" "$work/scripts/upper.lua"
reloaded=0
for i in $(seq 1 30); do
  send "reload $i"
  if wait_for "v2 RELOAD $i" 1; then reloaded=1; break; fi
done
[ $reloaded = 1 ] || { logs >&2; die "the new upper.lua never ran"; }
# the log line (stderr) may reach `podman logs` after the output (stdout)
for _ in $(seq 1 25); do logs | grep "now runs" >/dev/null && break; sleep 0.2; done
logs | grep "now runs" >/dev/null || { logs >&2; die "no reload line in the log"; }
say "hot reload: the rewritten /srv/scripts/upper.lua runs (after $i attempts)"

pm stop -t 20 "$name" >/dev/null
code=$(pm inspect --format '{{.State.ExitCode}}' "$name")
[ "$code" = 0 ] || { logs >&2; die "sluice exited $code on SIGTERM"; }
say "stopped, exit code 0"

# ---- 4. compose: sluice + Redis, crash and restore (docker/compose-test.sh) ----
if [ "${DOCKER_TEST_COMPOSE:-1}" = 1 ]; then
  DOCKER_TEST_IMAGE=$image "$root/docker/compose-test.sh" || die "the compose test failed"
fi
say "PASS ($(($(date +%s) - t0)) s)"
