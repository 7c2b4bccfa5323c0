#!/bin/sh
# spec/redis.sh start|stop DIR - a redis-server for the tests, on a free
# loopback port, in DIR (port in DIR/port, pid in DIR/pid). Stopped by PID.
set -e
cmd=$1; dir=$2
case "$cmd" in
start)
  mkdir -p "$dir"
  if [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then kill "$(cat "$dir/pid")"; fi
  for try in 1 2 3 4 5; do
    # a port the kernel says is free now (bound, then released)
    port=$(luajit -e 'local s = assert(require("socket").bind("127.0.0.1", 0))
      local _, p = s:getsockname() s:close() print(p)')
    rm -f "$dir/pid"
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
      --dir "$dir" --daemonize yes --pidfile "$dir/pid" --logfile "$dir/log" || true
    for i in 1 2 3 4 5 6 7 8 9 10; do
      # ours answers, not another test run's that got the port first
      pid=$(cat "$dir/pid" 2>/dev/null || true)
      if [ -n "$pid" ] && redis-cli -p "$port" info server 2>/dev/null |
          tr -d '\r' | grep -qx "process_id:$pid"; then
        echo "$port" > "$dir/port"; echo "redis-server on 127.0.0.1:$port"; exit 0
      fi
      sleep 0.1
    done
  done
  echo "could not start redis-server" >&2; exit 1 ;;
stop)
  [ -f "$dir/pid" ] && kill "$(cat "$dir/pid")" 2>/dev/null || true
  rm -f "$dir/pid" "$dir/port" ;;
esac
