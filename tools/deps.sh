#!/bin/sh
# Installs the Debian packages sluice needs, when they are missing.
# As root it runs apt-get; otherwise it prints the exact line and fails.
# When everything is installed it costs one dpkg-query call (a few ms), so
# `make run` and `make test` run it every time.
PKGS="build-essential cmake pkg-config luajit libluajit-5.1-dev libuv1-dev libhiredis-dev libhttp-parser-dev lua-busted redis-server lua-socket lua-posix"
# one line per package: "ii NAME" when installed; unknown ones are missing
installed=$(dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' $PKGS 2>/dev/null |
  awk '$1 == "ii" { print $2 }')
missing=""
for p in $PKGS; do
  case " $(echo $installed) " in
    *" $p "*) ;;
    *) missing="$missing $p" ;;
  esac
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
