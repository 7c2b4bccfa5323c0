#!/bin/sh
# Installs the Debian packages sluice needs, when they are missing.
# As root it runs apt-get; otherwise it prints the exact line and fails.
PKGS="build-essential cmake pkg-config luajit libluajit-5.1-dev libuv1-dev libhiredis-dev libhttp-parser-dev lua-busted redis-server lua-socket lua-posix"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = "0" ]; then
  echo "deps: installing:$missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends $missing
else
  echo "deps: missing packages; run as root:"
  echo "  sudo apt-get install -y$missing"
  exit 1
fi
