#!/usr/bin/env bash
# The install test of the Debian package (run by `scripts/package --test`; needs root and the
# testbed up, `scripts/testbed up`). Installs the .deb on this machine, checks what it put
# there, runs the service exactly as its unit would (systemd need not be PID 1 here: as the
# unit's user, with its ExecStart, UMask, working directory and an empty environment), has it
# replicate one collection to the testbed's target, checked row by row, stops it with SIGTERM,
# then removes and purges the package: the journal must outlive both.
# Ends as it began: package purged, user removed, /var/lib/milvus-cdc deleted. It refuses to
# start where any of those exist already, so that it never touches a real installation.
set -euo pipefail
source "$(dirname "$0")/setup.sh"
cd "$ROOT"

deb=$(realpath "${1:?usage: scripts/lib/package_test.sh PACKAGE.deb}")
user=milvus-cdc
state=/var/lib/milvus-cdc
config=/etc/milvus-cdc/cdc.toml
work=$(mktemp -d)
pid=

fail() { echo "package test: FAILED: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }
expect() { # expect WHAT ACTUAL WANTED
    [ "$2" = "$3" ] || fail "$1: $2, expected $3"
    ok "$1: $2"
}

[ "$(id -u)" = 0 ] || fail "must run as root (it installs a package)"
[ -f .testbed/env ] || fail "the testbed is not up: scripts/testbed up"
source .testbed/env
case "$(dpkg-query -W -f='${Status}' milvus-cdc 2>/dev/null || true)" in
    "" | *not-installed) ;;
    *) fail "milvus-cdc is installed already; this test installs and purges it (dpkg --purge milvus-cdc first)" ;;
esac
getent passwd "$user" >/dev/null && fail "user $user exists already (deluser --system $user first)"
[ -e "$state" ] && fail "$state exists already: it may be a real journal; move it away first"
apt_install systemd man-db util-linux

cleanup() {
    [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null || true
    dpkg --purge milvus-cdc >/dev/null 2>&1 || true
    getent passwd "$user" >/dev/null && deluser --system --quiet "$user" || true
    getent group "$user" >/dev/null && delgroup --system --quiet "$user" || true
    rm -rf "$state" "$work"
}
trap cleanup EXIT

echo "== dpkg -i $(basename "$deb")"
dpkg -i "$deb" >/dev/null
unit=$(dpkg -L milvus-cdc | grep -E '/systemd/system/milvus-cdc\.service$') || fail "no unit installed"
ok "unit installed at $unit"
systemd-analyze verify "$unit" || fail "systemd-analyze verify $unit"
ok "systemd-analyze verify $unit"
expect "passwd entry" "$(getent passwd "$user" | cut -d: -f6,7)" "$state:/usr/sbin/nologin"
expect "group" "$(id -gn "$user")" "$user"
expect "$state" "$(stat -c '%a %U:%G' "$state")" "700 $user:$user"
expect "$config" "$(stat -c '%a %U:%G' "$config")" "640 root:$user"
expect "/etc/milvus-cdc" "$(stat -c '%a %U:%G' /etc/milvus-cdc)" "750 root:$user"
dpkg-query -W -f='${Conffiles}\n' milvus-cdc | grep -q " $config " || fail "$config is not a conffile"
ok "$config is a conffile"
for page in milvus-cdc milvus-cdc-serve milvus-cdc-dump milvus-cdc-task milvus-cdc-task-create; do
    expect "man page of $page" "$(man -w "$page")" "/usr/share/man/man1/$page.1.gz"
done
man -w milvus-cdc-generate >/dev/null 2>&1 && fail "the hidden generate command has a man page"
bash -c 'source /usr/share/bash-completion/completions/milvus-cdc && complete -p milvus-cdc' \
    >/dev/null || fail "bash completion does not load"
ok "bash completion loads"
for file in /usr/share/zsh/vendor-completions/_milvus-cdc /usr/share/fish/vendor_completions.d/milvus-cdc.fish; do
    grep -q serve "$file" || fail "$file does not complete serve"
    ok "$file"
done
grep -q generate /usr/share/bash-completion/completions/milvus-cdc && fail "bash completes the hidden generate"
/usr/bin/milvus-cdc --help | grep -q '^  serve ' || fail "milvus-cdc --help lists no serve"

# What an operator edits: the testbed's source, and a port of our own.
port=$("$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
sed -i -e "s|^listen = .*|listen = \"127.0.0.1:$port\"|" \
    -e "s|^etcd_endpoints = .*|etcd_endpoints = [\"$ETCD_ENDPOINTS\"]|" \
    -e "s|^etcd_root_path = .*|etcd_root_path = \"$SOURCE_ETCD_ROOT\"|" \
    -e "s|^brokers = .*|brokers = \"$KAFKA_BROKERS\"|" \
    -e "0,/^#milvus_uri = /s|^#milvus_uri = .*|milvus_uri = \"$SOURCE_MILVUS_URI\"|" "$config"
expect "$config after editing" "$(stat -c '%a %U:%G' "$config")" "640 root:$user"

# The service as its unit starts it.
unit_value() { sed -n "s/^$1=//p" "$unit"; }
exec_start=$(unit_value ExecStart)
expect "unit User=" "$(unit_value User)" "$user"
expect "unit UMask=" "$(unit_value UMask)" "0077"
echo "== $exec_start (as $user, umask $(unit_value UMask))"
(
    cd /
    umask "$(unit_value UMask)"
    # shellcheck disable=SC2086 # ExecStart is split on spaces, as systemd splits it
    exec env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 STATE_DIRECTORY="$state" \
        setpriv --reuid="$(unit_value User)" --regid="$(unit_value Group)" --init-groups \
        --no-new-privs --inh-caps=-all --bounding-set=-all -- $exec_start
) > "$work/service.log" 2>&1 &
pid=$!
api="http://127.0.0.1:$port"
for _ in $(seq 150); do
    curl -fsS "$api/healthz" >/dev/null 2>&1 && break
    kill -0 "$pid" 2>/dev/null || { cat "$work/service.log" >&2; fail "the service exited"; }
    sleep 0.2
done
curl -fsS "$api/healthz" >/dev/null || { cat "$work/service.log" >&2; fail "the service did not answer"; }
expect "the service's user" "$(ps -o user= -p "$pid")" "$user"

"$VENV/bin/python" scripts/lib/package_check.py "$api" || { tail -n 30 "$work/service.log" >&2; fail "replication"; }

journal_files=$(find "$state" -mindepth 1 | wc -l)
[ "$journal_files" -gt 0 ] || fail "no journal in $state"
readable=$(find "$state" -mindepth 1 \( -perm /077 -o ! -user "$user" \))
[ -z "$readable" ] || fail "journal files open to others or not the service's: $readable"
ok "$journal_files journal files in $state, all the service's own and closed to others"

echo "== SIGTERM"
kill -TERM "$pid"
timeout_s=$(unit_value TimeoutStopSec); timeout_s=${timeout_s%s}
for _ in $(seq $((timeout_s * 5))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
kill -0 "$pid" 2>/dev/null && fail "still running ${timeout_s}s after SIGTERM (the unit's TimeoutStopSec)"
rc=0; wait "$pid" || rc=$?
pid=
expect "exit status after SIGTERM" "$rc" 0

echo "== dpkg -r milvus-cdc"
dpkg -r milvus-cdc >/dev/null
[ -e /usr/bin/milvus-cdc ] && fail "/usr/bin/milvus-cdc is still there"
ok "/usr/bin/milvus-cdc is gone"
[ -e "$unit" ] && fail "$unit is still there"
[ -f "$state/journal.redb" ] || fail "the journal is gone after remove"
ok "$state/journal.redb is kept"
[ -f "$config" ] || fail "the edited config is gone after remove"
ok "$config is kept (a conffile)"

echo "== dpkg --purge milvus-cdc"
dpkg --purge milvus-cdc >/dev/null 2>&1
getent passwd "$user" >/dev/null && fail "user $user is still there after purge"
getent group "$user" >/dev/null && fail "group $user is still there after purge"
ok "user and group $user are gone"
[ -e "$config" ] && fail "$config is still there after purge"
[ -f "$state/journal.redb" ] || fail "the journal is gone after purge"
ok "$state/journal.redb is kept after purge"

echo "== dpkg -i again: the kept journal goes to the new user"
# The new user may get the old uid back; an owner no user has stands for one that does not.
chown -R 4242424:4242424 "$state"
dpkg -i "$deb" >/dev/null
strangers=$(find "$state" ! -user "$user")
[ -z "$strangers" ] || fail "not given to the new $user: $strangers"
ok "$state belongs to the new $user"
dpkg --purge milvus-cdc >/dev/null 2>&1

echo "package test: passed"
