#!/usr/bin/env bash
# Installs the built package as an operator would, checks that it works as installed, and
# purges it: dpkg -i, `sluice check` on the installed config, /usr/bin/sluice started on it
# answering HTTP on 127.0.0.1:8080 through its pool, the man page, then dpkg --purge.
# Needs root and free ports 8080 and 9900 (the packaged config's).
#   bash packaging/build-deb.sh && sudo bash packaging/test-deb.sh [PATH.deb]
# .ci/run builds and runs both after the tests (SLUICE_CI_DEB=0 skips them).
set -euo pipefail
cd "$(dirname "$0")/.."
deb=${1:-$(ls "${CARGO_TARGET_DIR:-target}"/debian/sluice_*.deb | head -n 1)}
pid=
cleanup() {
  if [[ -n $pid ]]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  dpkg --purge sluice >/dev/null
  [[ ! -e /etc/sluice/sluice.yaml ]] || { echo "purge left /etc/sluice/sluice.yaml" >&2; exit 1; }
}
dpkg -i "$deb"
trap cleanup EXIT

# GET PATH on 127.0.0.1:8080 with bash's /dev/tcp (no curl needed): prints status line + body.
get() {
  exec 3<>/dev/tcp/127.0.0.1/8080 || return 1
  printf 'GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' "$1" >&3
  cat <&3
  exec 3<&-
}

file /usr/bin/sluice 2>/dev/null | grep -q ', stripped' || [[ $(stat -c %s /usr/bin/sluice) -lt 40000000 ]]
sluice check -c /etc/sluice/sluice.yaml
sluice version | head -n 1
[[ -s /usr/share/man/man8/sluice.8.gz && -s /usr/share/man/man8/sluice-check.8.gz ]]
[[ -s /usr/share/doc/sluice/examples/sluice.yaml && -s /usr/share/doc/sluice/docs/operations.md ]]
[[ -s /etc/logrotate.d/sluice ]]

/usr/bin/sluice run -c /etc/sluice/sluice.yaml &
pid=$!
# Wait for the answer, 10 s at most.
answer=
for _ in $(seq 100); do
  answer=$(get /healthz 2>/dev/null) && [[ $answer == *$'\r\n\r\nok'* ]] && break
  kill -0 "$pid" || { echo "sluice exited" >&2; exit 1; }
  sleep 0.1
done
[[ $answer == "HTTP/1.1 200"*$'\r\n\r\nok'* ]] || { echo "no answer on 127.0.0.1:8080: $answer" >&2; exit 1; }
sluice status | grep -q '^example  *127.0.0.1:9900  *up'
kill -TERM "$pid"
wait "$pid"
pid=
echo "package OK: installed, checked, answered on 127.0.0.1:8080"
