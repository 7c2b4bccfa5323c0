#!/bin/bash
# The image's HEALTHCHECK: GET /health on the admin API (127.0.0.1:$SLUICE_ADMIN_PORT,
# 9600 by default; the conf needs admin = 9600 or "0.0.0.0:9600"): healthy
# on 200 only (503 while restoring, starting, stopping or failed). A conf without an
# admin API (nothing listens there) falls back to: a sluice process is alive.
# bash's /dev/tcp: the runtime image has no curl.
port=${SLUICE_ADMIN_PORT:-9600}
if exec 3<>"/dev/tcp/127.0.0.1/$port" 2>/dev/null; then
  printf 'GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
  read -r -t 3 _ code _ <&3 || exit 1
  [ "$code" = 200 ]
  exit
fi
for p in /proc/[0-9]*; do
  [ "$(cat "$p/comm" 2>/dev/null)" = sluice ] && exit 0
done
exit 1
