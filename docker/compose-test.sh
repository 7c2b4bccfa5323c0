#!/usr/bin/env bash
# docker/compose-test.sh: runs docker/compose.yaml (sluice + Redis) with
# podman-compose and proves "a crashed sluice resumes from its checkpoint",
# exactly once. Called by docker/test.sh (`make docker-test`) after the
# single-container test; runs alone too, once test.sh has made the base image.
#
#   1. a stand-in for `redis:7` (no registry here): docker/redis.Containerfile
#      (Debian 12's redis-server 7.0) on the debootstrapped base, tagged
#      docker.io/library/redis:7 so that compose.yaml's `image: redis:7`
#      resolves to it locally (an existing real redis:7 is used as is);
#   2. `podman-compose build` of the sluice service (compose.yaml's own build
#      section: context .., docker/Dockerfile; from test.sh: its image, and
#      the build command only checked) and `podman-compose up -d` of
#      the unchanged compose.yaml: bridge network, the alias `redis`, the
#      published 127.0.0.1:9600, the named volume, restart: unless-stopped;
#   3. waits for Redis's healthcheck and sluice's GET /health (200) through
#      the published port; XADDs 1,000 lines to the stream `lines`, waits for
#      the exact counts in the hash `wordcount`;
#   4. XADDs 20,000 more over ~6 s and, a fifth of the way in, with entries
#      delivered but not yet acknowledged (no checkpoint covers them),
#      kill -9's sluice's host PID (not `podman kill`: a user's stop does not
#      trigger a restart); checks that the restart policy brought the same
#      container back (new PID, RestartCount 1), that it logged "restoring
#      checkpoint N", /health 200, that entries were added while it was down
#      (their ids fall between the kill and the new start), the exact counts
#      of all 21,000 lines (nothing lost, nothing counted twice) and nothing
#      left pending (XPENDING 0);
#   5. `podman-compose stop` (SIGTERM: exit 0, and unless-stopped leaves it
#      stopped), `down` (volume kept), `up` again: new containers restore the
#      last checkpoint from the Redis volume (AOF), count 500 more lines
#      exactly, one consumer in the group;
#   6. `podman-compose down -v`; the trap removes the containers, their
#      anonymous volumes and the network in any case.
#
# podman-compose 1.0.3 (Debian 12) puts --podman-args *after* the
# subcommand, so the mandated global options are given through a wrapper
# (--podman-path). Its gaps, worked around here and in docs/operations.md:
# it ignores the top-level `name:` (the project is -p), `depends_on:
# condition: service_healthy` (start order only: sluice retries Redis for
# 30 s), `stop_grace_period` (down/stop -t 30) and removes neither the
# network nor the anonymous volumes on `down`.
#
# Env: as test.sh (DOCKER_TEST_CLEAN=1 also removes the redis stand-in and
# sluice:latest); DOCKER_TEST_IMAGE (set by test.sh: the image it built, run
# as sluice:latest instead of building it again, unless
# DOCKER_TEST_COMPOSE_BUILD=1); DOCKER_TEST_COMPOSE_PROJECT (sluice-compose-test; its
# volume is deleted at the start and the end). Needs port 9600 of the host.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cache=$root/docker/.cache
base=localhost/debian12-min
redis_image=localhost/sluice-redis:7
redis_tag=docker.io/library/redis:7
proj=${DOCKER_TEST_COMPOSE_PROJECT:-sluice-compose-test}
c_redis=${proj}_redis_1
c_sluice=${proj}_sluice_1
admin=9600
t0=$(date +%s)

say() { printf '[compose-test %3ds] %s\n' "$(($(date +%s) - t0))" "$*" >&2; }
die() { say "FAIL: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root"
if ! command -v podman-compose >/dev/null; then
  say "installing podman-compose"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman-compose >/dev/null
fi

pm() {
  podman --storage-driver vfs --cgroup-manager=cgroupfs --events-backend=file \
    --runtime runc "$@"
}
pm image exists "$base" || die "no $base image: run docker/test.sh (make docker-test) first"

work=$(mktemp -d)
mkdir -p "$cache"
# podman-compose runs this instead of podman: the mandated global options
cat >"$work/podman" <<'EOF'
#!/bin/sh
exec podman --storage-driver vfs --cgroup-manager=cgroupfs --events-backend=file --runtime runc "$@"
EOF
chmod 755 "$work/podman"
pc() { # podman-compose with the real compose file; output to the log
  echo "+ podman-compose $*" >>"$cache/compose.log"
  (cd "$root/docker" && podman-compose --podman-path "$work/podman" -p "$proj" -f compose.yaml \
     --podman-build-args "--isolation chroot --format docker" \
     --podman-run-args "--ulimit nofile=1024:1024 --ulimit nproc=1024:1024" "$@") \
    >>"$cache/compose.log" 2>&1
}
: >"$cache/compose.log"

anon_volumes() { # the containers' volumes other than the project's named ones
  local c
  for c in "$c_sluice" "$c_redis"; do
    pm inspect --format '{{range .Mounts}}{{if eq .Type "volume"}}{{.Name}}{{"\n"}}{{end}}{{end}}' \
      "$c" 2>/dev/null || true
  done | grep -v "^${proj}_" | grep . || true
}
teardown() { # whatever is left, by name
  local vols
  vols="$(anon_volumes) $(cat "$work/volumes" 2>/dev/null || true)"
  pm rm -f -t 0 "$c_sluice" "$c_redis" >/dev/null 2>&1 || true
  [ -z "$vols" ] || pm volume rm -f $vols >/dev/null 2>&1 || true
  pm volume rm -f "${proj}_redis-data" >/dev/null 2>&1 || true
  pm network rm -f "${proj}_default" >/dev/null 2>&1 || true
}
cleanup() {
  local rc=$?
  if [ $rc != 0 ]; then
    { echo "--- sluice log (tail)"; pm logs "$c_sluice" 2>&1 | tail -n 40
      echo "--- podman-compose log: docker/.cache/compose.log"; } >&2 || true
  fi
  teardown
  rm -rf "$work"
  if [ "${DOCKER_TEST_CLEAN:-0}" = 1 ]; then
    pm rmi -f "$redis_tag" "$redis_image" localhost/sluice:latest >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

(exec 3<>"/dev/tcp/127.0.0.1/$admin") 2>/dev/null \
  && die "port $admin is in use on this host (compose publishes 127.0.0.1:$admin)"
teardown   # a previous run killed before its trap

# ---- 1. the redis:7 stand-in --------------------------------------------------
say "building $redis_image from docker/redis.Containerfile"
mkdir "$work/ctx"
pm build --isolation chroot --format docker --build-arg BASE="$base" \
  -f "$root/docker/redis.Containerfile" -t "$redis_image" "$work/ctx" >"$cache/redis-build.log" 2>&1 \
  || { tail -n 20 "$cache/redis-build.log" >&2; die "redis image build failed (docker/.cache/redis-build.log)"; }
if pm image exists "$redis_tag" \
   && [ "$(pm image inspect --format '{{index .Labels "org.sluice.stand-in"}}' "$redis_tag")" != redis ]; then
  say "$redis_tag exists and is not the stand-in: using it"
else
  pm tag "$redis_image" "$redis_tag"
fi

# ---- 2. build and up, through compose.yaml ------------------------------------
if [ -n "${DOCKER_TEST_IMAGE:-}" ] && [ "${DOCKER_TEST_COMPOSE_BUILD:-0}" != 1 ]; then
  # test.sh has just built the same Dockerfile from the same context; a
  # second, fully cached vfs build would still take a minute. compose runs
  # that image, and the build command compose.yaml makes is checked instead.
  pm tag "$DOCKER_TEST_IMAGE" localhost/sluice:latest
  pc --dry-run build --build-arg BASE="$base" sluice || die "podman-compose --dry-run build failed"
  grep -q -- "build .* -t sluice:latest -f \.\./docker/Dockerfile .*--build-arg BASE=$base \.\.\$" "$cache/compose.log" \
    || { tail -n 5 "$cache/compose.log" >&2; die "compose.yaml's build is not docker/Dockerfile with the repository as context"; }
  say "sluice:latest = $DOCKER_TEST_IMAGE (compose's build: -f ../docker/Dockerfile .., checked; DOCKER_TEST_COMPOSE_BUILD=1 runs it)"
else
  say "podman-compose build sluice (compose.yaml: context .., docker/Dockerfile)"
  pc build --build-arg BASE="$base" sluice \
    || { tail -n 30 "$cache/compose.log" >&2; die "podman-compose build failed (docker/.cache/compose.log)"; }
fi
say "podman-compose -p $proj -f docker/compose.yaml up -d"
pc up -d --no-build || { tail -n 30 "$cache/compose.log" >&2; die "podman-compose up failed"; }
for c in "$c_redis" "$c_sluice"; do
  [ "$(pm inspect --format '{{.State.Running}}' "$c" 2>/dev/null)" = true ] \
    || die "$c is not running after up (docker/.cache/compose.log)"
  [ "$(pm inspect --format '{{.HostConfig.RestartPolicy.Name}}' "$c")" = unless-stopped ] \
    || die "$c has no restart policy unless-stopped"
done

rcli() { pm exec -i "$c_redis" redis-cli "$@"; }
health() { # the HTTP status of GET /health through the published port
  ( exec 3<>"/dev/tcp/127.0.0.1/$admin" || exit 1
    printf 'GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
    read -r -t 3 _ code _ <&3 && echo "$code" ) 2>/dev/null || echo none
}
wait_health() { # seconds
  local i
  for i in $(seq 1 $(($1 * 10))); do
    [ "$(health)" = 200 ] && return 0
    sleep 0.1
  done
  return 1
}
slog() { pm logs "$c_sluice" 2>&1; }

# Redis's compose healthcheck (redis-cli ping), run by hand: without systemd
# podman cannot arm the periodic one (it logs an error and goes on)
ok=0
for _ in $(seq 1 60); do
  pm healthcheck run "$c_redis" >/dev/null 2>&1 && { ok=1; break; }
  sleep 0.5
done
[ $ok = 1 ] || die "redis never passed its healthcheck (redis-cli ping)"
wait_health 60 || die "GET /health on 127.0.0.1:$admin never answered 200 (last: $(health))"
pm healthcheck run "$c_sluice" >/dev/null 2>&1 || die "the sluice image's HEALTHCHECK fails"
slog | grep "checkpoint: starting empty" >/dev/null || die "sluice did not start empty (a stale ck:* in the volume?)"
say "up: redis healthy, sluice GET /health 200 on 127.0.0.1:$admin"

# ---- 3. lines in, exact counts out -----------------------------------------------
# line i is "The wI xJ." (I = i % 7, J = i % 13): split.lua lowercases and
# strips the ends' punctuation, so after n lines the hash must hold exactly
gen() { local i; for ((i = $1; i <= $2; i++)); do printf 'XADD lines * v "The w%d x%d."\n' $((i % 7)) $((i % 13)); done; }
expected() { awk -v n="$1" 'BEGIN { for (i = 1; i <= n; i++) { c["the"]++; c["w" i % 7]++; c["x" i % 13]++ }
                                    for (k in c) print k, c[k] }' | sort; }
actual() { rcli HGETALL wordcount | paste -d ' ' - - | sort; }
wait_counts() { # total lines, seconds
  local i want
  want=$(expected "$1")
  for i in $(seq 1 $(($2 * 2))); do
    [ "$(actual)" = "$want" ] && return 0
    sleep 0.5
  done
  say "wordcount (got / want):"; diff <(actual) <(echo "$want") >&2 || true
  return 1
}
pending() { rcli XPENDING lines redis-pipeline | awk 'NR == 1'; }

n1=1000 n2=20000 n4=500
gen 1 $n1 | rcli >/dev/null
wait_counts $n1 30 || die "the hash never held the exact counts of $n1 lines"
say "$n1 lines: wordcount exact"

# ---- 4. kill -9 mid-stream, restart by the policy, exactly once --------------
# n2 lines go in as 50 chunks ~0.1 s apart (one redis-cli reading stdin line
# by line), so the stream grows before, during and after the crash
pid=$(pm inspect --format '{{.State.Pid}}' "$c_sluice")
[ "${pid:-0}" -gt 0 ] || die "no host PID for $c_sluice"
chunk=$((n2 / 50))
{ for ((k = 0; k < 50; k++)); do
    gen $((n1 + k * chunk + 1)) $((n1 + (k + 1) * chunk)); sleep 0.1
  done; } | rcli >/dev/null &
feeder=$!
inflight=0
for _ in $(seq 1 100); do   # entries delivered to sluice that no checkpoint covers yet
  if [ "$(rcli XLEN lines)" -ge $((n1 + n2 / 5)) ]; then
    inflight=$(pending); [ "${inflight:-0}" -gt 0 ] && break
  fi
  sleep 0.1
done
[ "${inflight:-0}" -gt 0 ] || die "no entry was ever pending while $n2 lines went in"
kill -0 "$feeder" 2>/dev/null || die "the feeder ended before the crash (too fast a machine? raise n2)"
tk=$(date +%s%N)
kill -9 "$pid"
new=$pid
for _ in $(seq 1 600); do
  new=$(pm inspect --format '{{.State.Pid}}' "$c_sluice" 2>/dev/null || echo 0)
  [ "$new" != "$pid" ] && [ "$new" != 0 ] && break
  sleep 0.05
done
[ "$new" != "$pid" ] && [ "$new" != 0 ] \
  || die "the restart policy did not restart $c_sluice within 30 s ($(pm inspect --format '{{.State.Status}} exit {{.State.ExitCode}}' "$c_sluice"))"
started=$(pm inspect --format '{{.State.StartedAt.UnixNano}}' "$c_sluice")
restart_ms=$(((started - tk) / 1000000))
wait_health 60 || die "the restarted sluice never answered /health 200"
health_ms=$((($(date +%s%N) - tk) / 1000000))
rc=$(pm inspect --format '{{.RestartCount}}' "$c_sluice")
[ "$rc" = 1 ] || die "RestartCount is $rc, not 1"
restored=$(slog | grep -o 'restoring checkpoint [0-9]*' | tail -n1)
[ -n "$restored" ] || die "the restarted sluice did not restore a checkpoint"
wait "$feeder" || die "the XADD feeder failed"
# entry ids are Redis's clock in ms (the same host clock): the entries added
# between the kill and the new start, while no sluice was running
down=$(rcli XRANGE lines $((tk / 1000000)) $((started / 1000000)) | grep -c '^v$' || true)
[ "$down" -gt 0 ] || die "no entry was added while sluice was down (the restart was too quick to see one)"
say "kill -9 $pid (host PID) with $inflight entries delivered and not checkpointed; restarted by the policy (RestartCount 1, PID $new) ${restart_ms} ms later, /health 200 after ${health_ms} ms, $down entries added meanwhile; log: $restored"
total=$((n1 + n2))
wait_counts $total 60 || die "after the crash the counts of $total lines are not exact (lost or counted twice)"
ok=0
for _ in $(seq 1 20); do [ "$(pending)" = 0 ] && { ok=1; break; }; sleep 0.5; done
[ $ok = 1 ] || die "$(pending) entries still pending (XPENDING lines redis-pipeline)"
say "$total lines: wordcount exact (each entry once), XPENDING 0"

# ---- 5. stop (stays stopped), down, up: resumes from the Redis volume -----------
pc stop -t 30 sluice || die "podman-compose stop failed"
code=$(pm inspect --format '{{.State.ExitCode}}' "$c_sluice")
[ "$code" = 0 ] || die "sluice exited $code on SIGTERM"
sleep 3
[ "$(pm inspect --format '{{.State.Running}}' "$c_sluice")" = false ] \
  || die "unless-stopped restarted a container that was stopped by the user"
say "podman-compose stop: exit 0, and it stays stopped"
anon_volumes >>"$work/volumes"   # `down` removes the containers, not these
pc down -t 30 || die "podman-compose down failed"
pm container exists "$c_sluice" && die "down left $c_sluice"
pc up -d --no-build || die "podman-compose up (again) failed"
wait_health 60 || die "the recreated sluice never answered /health 200"
slog | grep 'restoring checkpoint' >/dev/null || die "the recreated sluice did not restore the checkpoint in Redis"
gen $((total + 1)) $((total + n4)) | rcli >/dev/null
total=$((total + n4))
wait_counts $total 30 || die "after down/up the counts of $total lines are not exact"
consumers=$(rcli XINFO CONSUMERS lines redis-pipeline | grep -c '^name$' || true)
[ "$consumers" = 1 ] || die "$consumers consumers in the group (want 1: compose.yaml's hostname keeps the name)"
say "down + up: $(slog | grep -o 'restoring checkpoint [0-9]*' | tail -n1), $total lines exact, one consumer"

# ---- 6. down -------------------------------------------------------------------
anon_volumes >>"$work/volumes"
pc down -t 30 -v || die "podman-compose down -v failed"
pm volume rm -f $(cat "$work/volumes") >/dev/null 2>&1 || true
pm network rm -f "${proj}_default" >/dev/null 2>&1 || true
say "PASS ($(($(date +%s) - t0)) s; restart ${restart_ms} ms after kill -9, /health 200 after ${health_ms} ms)"
