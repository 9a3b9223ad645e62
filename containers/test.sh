#!/usr/bin/env bash
# The container test: the compose cluster (four custodians, two on SoftHSM2 and two on
# swtpm sidecars, and the enroller), driven by shardctl in its own container:
#
#   1. build the images, `docker-compose up`, wait until every service is healthy
#   2. the journey: invite, register, login, enroll a secret brought from outside and a
#      generated P-256 key, recover both and compare
#   3. stop one custodian container: recovery succeeds and names it
#   4. `docker-compose down`, `up` again: every shard is still there, recovery succeeds
#   5. partition: one custodian's container disconnected from the network; recovery
#      succeeds and names it, enrolling fails and keeps nothing; reconnected, it serves
#      again
#   6. `docker-compose down -v` (also on any failure)
#
# Without a Docker engine it prints SKIPPED (never "passed") and exits 0, unless
# SHARD_REQUIRE_DOCKER=1, when it fails. Its own project name, subnet and ports keep it
# apart from a cluster started by hand. Time: about 2-3 minutes after the images exist.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! docker info >/dev/null 2>&1 || ! command -v docker-compose >/dev/null; then
  if [[ "${SHARD_REQUIRE_DOCKER:-0}" == 1 ]]; then
    echo "container test: FAILED: no Docker engine or docker-compose answers" >&2
    exit 1
  fi
  echo "container test: SKIPPED (no Docker engine answers; nothing was tested)" >&2
  exit 0
fi

started=$(date +%s)
say() { printf '[container test %3ds] %s\n' "$(($(date +%s) - started))" "$*" >&2; }
fail() { say "FAILED: $*"; exit 1; }

export SHARD_TAG="${SHARD_TAG:-test}"
export COMPOSE_PROJECT_NAME="shardtest$$"
# A subnet and host ports of its own (a cluster started by hand uses 10.89.47.0/24 and 7010-7014).
export SHARD_NET_PREFIX="${SHARD_TEST_NET_PREFIX:-10.89.$((100 + $$ % 100))}"
base_port=$((20000 + ($$ % 2000) * 5))
export SHARD_PORT_ENROLLER=$base_port SHARD_PORT_CUSTODIAN_1=$((base_port + 1)) \
  SHARD_PORT_CUSTODIAN_2=$((base_port + 2)) SHARD_PORT_CUSTODIAN_3=$((base_port + 3)) \
  SHARD_PORT_CUSTODIAN_4=$((base_port + 4))
export COMPOSE_HTTP_TIMEOUT=120

work=$(mktemp -d /tmp/shard-container-test.XXXXXX)
dc() { docker-compose --ansi never "$@"; }
cleanup() {
  local rc=$?
  if ((rc != 0)); then
    say "logs of the failed run:"
    dc logs --no-color --tail 40 >&2 2>/dev/null || true
  fi
  dc --profile client down -v --remove-orphans >/dev/null 2>&1 || true
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT

say "building images (${SHARD_CARGO_PROFILE:-release} binaries, tag $SHARD_TAG)"
containers/build.sh

services=(custodian-1 custodian-2 custodian-3 custodian-4 enroller)
container() { dc ps -q "$1"; }

wait_healthy() {
  local deadline=$(($(date +%s) + 240)) s id state
  for s in "${services[@]}"; do
    while :; do
      id=$(container "$s")
      state=$( [[ -n "$id" ]] && docker inspect -f '{{.State.Health.Status}}' "$id" 2>/dev/null || echo none)
      [[ "$state" == healthy ]] && break
      (($(date +%s) < deadline)) || fail "$s is $state after 240 s"
      sleep 1
    done
  done
}

# shardctl in its container, with the test's work directory at /work (owned by the
# containers' user, 0700); what docker-compose and shardctl print on stderr is shown
# only when the command fails.
chown 10001:10001 "$work"
chmod 0700 "$work"
run() {
  dc run --rm -T -v "$work:/work" "$@" 2>"$work/stderr" || {
    cat "$work/stderr" >&2
    return 1
  }
}
sc() { run shardctl "$@"; }
json_field() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
# result_of NAME: that custodian's result in a `recover --json` report on stdin.
result_of() {
  python3 -c 'import json,sys
r = json.load(sys.stdin)
print(next(c["result"] for c in r["custodians"] if c["name"] == sys.argv[1]))' "$1"
}
verified_count() {
  python3 -c 'import json,sys; print(sum(c["result"] == "verified" for c in json.load(sys.stdin)["custodians"]))'
}

say "starting the cluster (project $COMPOSE_PROJECT_NAME, subnet $SHARD_NET_PREFIX.0/24)"
dc up -d >/dev/null 2>&1 || { dc up -d; fail "docker-compose up"; }
wait_healthy
say "all five services healthy"
status=$(sc --json status) || fail "shardctl status: $status"
[[ $(grep -o '"answered":true' <<<"$status" | wc -l) -eq 5 ]] || fail "status: $status"

say "isolation: unprivileged containers, loopback-only ports, TPMs reachable by their custodian only"
for s in custodian-1 custodian-3 enroller swtpm-3 swtpm-4; do
  who=$(dc exec -T "$s" sh -c 'id -u; grep -E "^(CapEff|CapBnd|NoNewPrivs)" /proc/1/status') || fail "$s: exec"
  [[ "$who" == $'10001\nCapEff:\t0000000000000000\nCapBnd:\t0000000000000000\nNoNewPrivs:\t1' ]] ||
    fail "$s runs as: $who"
done
# The one-shot steps have exited: their configuration says the same, with no network.
for s in pki user-ca enroller-init; do
  id=$(docker ps -aq --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME" \
    --filter "label=com.docker.compose.service=$s" | head -n 1)
  [[ -n "$id" ]] || fail "no $s container"
  conf=$(docker inspect -f '{{.Config.User}} {{.HostConfig.CapDrop}} {{.HostConfig.CapAdd}} {{.HostConfig.NetworkMode}} {{.HostConfig.SecurityOpt}} {{.HostConfig.ReadonlyRootfs}} {{.State.ExitCode}}' "$id")
  [[ "$conf" == "shard [ALL] [] none [no-new-privileges:true] true 0" ]] || fail "$s ran with: $conf"
done
# Published ports: the enroller's and each custodian's (custodian-3's and -4's are
# published by the swtpm container that holds their network namespace), loopback only.
for s in enroller custodian-1 custodian-2 swtpm-3 swtpm-4; do
  port=$(docker port "$(container "$s")")
  [[ -n "$port" && $(grep -vc '127.0.0.1:' <<<"$port") -eq 0 ]] || fail "$s publishes: $port"
done
# connects HOST PORT: from a container on the cluster network, the path shardctl uses.
connects() { run --entrypoint timeout shardctl 5 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }
for n in 3 4; do
  connects "custodian-$n" 7001 || fail "custodian-$n unreachable: the probes below would prove nothing"
  timeout 5 bash -c "exec 3<>/dev/tcp/$SHARD_NET_PREFIX.1$n/7001" ||
    fail "the host cannot reach custodian-$n: the probes below would prove nothing"
  for port in 2321 2322; do
    if connects "custodian-$n" "$port"; then fail "custodian-$n's TPM port $port is reachable from the cluster network"; fi
    if timeout 5 bash -c "exec 3<>/dev/tcp/$SHARD_NET_PREFIX.1$n/$port" 2>/dev/null; then
      fail "custodian-$n's TPM port $port is reachable from the host"
    fi
  done
done
say "journey: invite, register, login"
code=$(sc --json admin invite alice | json_field code)
printf '%s\n' "$code" >"$work/invitation"
python3 -c 'import secrets; print("Ctr-" + secrets.token_urlsafe(18))' >"$work/password"
head -c 48 /dev/urandom >"$work/brought.bin"
chown 10001:10001 "$work/invitation" "$work/password" "$work/brought.bin"
chmod 0600 "$work/invitation" "$work/password" "$work/brought.bin"
creds=(-e SHARDCTL_INVITATION_FILE=/work/invitation -e SHARDCTL_PASSWORD_FILE=/work/password)
run "${creds[@]}" shardctl register alice >/dev/null
run "${creds[@]}" shardctl login alice >/dev/null

say "journey: enroll a brought secret and a generated P-256 key"
brought=$(sc --json enroll --secret-file /work/brought.bin | json_field secret_id)
generated_report=$(sc --json enroll)
generated=$(json_field secret_id <<<"$generated_report")
json_field public_key <<<"$generated_report" >"$work/generated.pub.pem"

recover() { # ID OUT [extra args]: the JSON report on stdout
  local id=$1 out=$2
  shift 2
  rm -f "$work/$out"
  sc --json recover "$id" --out "/work/$out" "$@"
}
check_brought() {
  cmp -s "$work/brought.bin" "$work/$1" || fail "recovered bytes differ from the brought secret"
}

report=$(recover "$brought" r1.bin --wait-all)
[[ $(verified_count <<<"$report") -eq 4 ]] || fail "not every custodian verified: $report"
check_brought r1.bin
recover "$generated" g1.pem >/dev/null
python3 - "$work/g1.pem" "$work/generated.pub.pem" <<'PY' || fail "recovered key does not match the enrolled public key"
import subprocess, sys
pub = subprocess.run(["openssl", "pkey", "-in", sys.argv[1], "-pubout"], capture_output=True, text=True, check=True).stdout
sys.exit(0 if pub.strip() == open(sys.argv[2]).read().strip() else 1)
PY
say "both secrets recovered from all four custodians; bytes and public key match"

say "certificates renewed while serving; a changed enroller key is refused, not pinned"
before=$(dc exec -T custodian-1 cat /etc/shard/identity/cert.pem | sha256sum)
dc run --rm --no-deps -e SHARD_RENEW_DAYS=400 pki services >/dev/null 2>"$work/stderr" ||
  { cat "$work/stderr" >&2; fail "renewing"; }
after=$(dc exec -T custodian-1 cat /etc/shard/identity/cert.pem | sha256sum)
[[ "$before" != "$after" ]] || fail "custodian-1's certificate was not renewed"
sleep 7 # the services look at their certificate files every 5 s
status=$(sc --json status) || fail "status after renewal: $status"
[[ $(grep -o '"answered":true' <<<"$status" | wc -l) -eq 5 ]] || fail "after renewal: $status"
public="${COMPOSE_PROJECT_NAME}_enroller-public"
key_file=/p/enroller-manifest.pub.pem
keep=$(docker run --rm --user 10001 -v "$public:/p" --entrypoint cat "shard-custodians/shardctl:$SHARD_TAG" "$key_file")
openssl ecparam -name prime256v1 -genkey -noout 2>/dev/null | openssl ec -pubout 2>/dev/null >"$work/other.pub.pem"
chmod 0644 "$work/other.pub.pem"
put_key() {
  docker run --rm -i --user 10001 -v "$public:/p" --entrypoint sh "shard-custodians/shardctl:$SHARD_TAG" \
    -c "cat >$key_file"
}
put_key <"$work/other.pub.pem"
if dc run --rm --no-deps user-ca >/dev/null 2>"$work/stderr"; then fail "user-ca accepted a changed manifest key"; fi
grep -q "manifest key changed" "$work/stderr" || fail "user-ca refused without saying why: $(cat "$work/stderr")"
printf '%s\n' "$keep" | put_key
dc run --rm --no-deps user-ca >/dev/null 2>"$work/stderr" || { cat "$work/stderr" >&2; fail "user-ca with the pinned key"; }

say "one custodian stopped (custodian-2)"
dc stop custodian-2 >/dev/null 2>&1
report=$(recover "$brought" r2.bin --wait-all --deadline-ms 3000)
check_brought r2.bin
r=$(result_of custodian-2 <<<"$report")
[[ "$r" == unreachable || "$r" == timeout ]] || fail "custodian-2 reported as $r: $report"
detail_of() {
  python3 -c 'import json,sys
r = json.load(sys.stdin)
print(next(c["detail"] for c in r["custodians"] if c["name"] == sys.argv[1]))' "$1"
}
[[ $(verified_count <<<"$report") -eq 3 ]] || fail "expected 3 verified: $report"
say "recovered from 3; custodian-2 named: $r ($(detail_of custodian-2 <<<"$report"))"
dc start custodian-2 >/dev/null 2>&1

say "docker-compose down, then up: the volumes keep every shard"
dc logs --no-color >"$work/logs-before-down.txt" 2>&1 # down removes the containers and their logs
dc down >/dev/null 2>&1
dc up -d >/dev/null 2>&1 || { dc up -d; fail "docker-compose up (again)"; }
wait_healthy
run "${creds[@]}" shardctl login alice >/dev/null
report=$(recover "$brought" r3.bin --wait-all)
[[ $(verified_count <<<"$report") -eq 4 ]] || fail "after restart: $report"
check_brought r3.bin
recover "$generated" g3.pem >/dev/null
cmp -s "$work/g1.pem" "$work/g3.pem" || fail "the generated key differs after the restart"
say "after down/up: both secrets recovered from all four custodians"

say "partition: custodian-1 disconnected from the cluster network"
network="${COMPOSE_PROJECT_NAME}_cluster"
c1=$(container custodian-1)
docker network disconnect "$network" "$c1"
report=$(recover "$brought" r4.bin --wait-all --deadline-ms 3000)
check_brought r4.bin
r=$(result_of custodian-1 <<<"$report")
[[ "$r" == unreachable || "$r" == timeout ]] || fail "custodian-1 reported as $r: $report"
[[ $(verified_count <<<"$report") -eq 3 ]] || fail "expected 3 verified: $report"
say "recovered from 3 across the partition; custodian-1 named: $r ($(detail_of custodian-1 <<<"$report"))"
# Enrolling needs every custodian: it fails, names the missing one, and keeps nothing.
if sc enroll >"$work/enroll.out" 2>&1; then
  fail "an enrollment succeeded with custodian-1 cut off"
fi
grep -q custodian-1 "$work/enroll.out" || fail "the failed enrollment does not name custodian-1: $(cat "$work/enroll.out")"
listed=$(sc --json secrets)
python3 -c 'import json,sys
ids = sorted(s["secret_id"] for s in json.loads(sys.argv[1]))
sys.exit(0 if ids == sorted(sys.argv[2:]) else 1)' "$listed" "$brought" "$generated" ||
  fail "after the failed enrollment alice holds: $listed"
say "enrolling during the partition fails ($(grep -m1 custodian-1 "$work/enroll.out")) and leaves alice's two secrets only"
docker network connect --ip "$SHARD_NET_PREFIX.11" --alias custodian-1 "$network" "$c1"
report=$(recover "$brought" r5.bin --wait-all)
[[ $(result_of custodian-1 <<<"$report") == verified ]] || fail "custodian-1 after reconnecting: $report"
check_brought r5.bin
say "reconnected: custodian-1 serves again"

say "shardctl on the host, through the ports published on 127.0.0.1"
mkdir -m 0700 "$work/host"
for f in ca.pem enroller-manifest.pub.pem; do
  run --entrypoint cat shardctl "/etc/shardctl/$f" >"$work/host/$f"
done
{
  printf 'trust_domain = "%s"\nca = "ca.pem"\nmanifest_key = "enroller-manifest.pub.pem"\n' "${SHARD_TRUST_DOMAIN:-demo.test}"
  printf '[enroller]\naddress = "127.0.0.1:%s"\nserver_name = "localhost"\nname = "main"\n' "$SHARD_PORT_ENROLLER"
  for i in 1 2 3 4; do
    port_var="SHARD_PORT_CUSTODIAN_$i"
    printf '[[custodians]]\nname = "custodian-%s"\naddress = "127.0.0.1:%s"\nserver_name = "localhost"\n' "$i" "${!port_var}"
  done
} >"$work/host/config.toml"
. scripts/env.sh
host_sc() {
  XDG_CONFIG_HOME="$work/host/xdg" XDG_STATE_HOME="$work/host/state" \
    SHARDCTL_PASSWORD_FILE="$work/password" \
    "$CARGO_TARGET_DIR/${SHARD_CARGO_PROFILE:-release}/shardctl" --config "$work/host/config.toml" "$@"
}
host_sc login alice >/dev/null 2>"$work/stderr" || { cat "$work/stderr" >&2; fail "host login"; }
host_sc recover "$brought" --out "$work/host/r6.bin" >/dev/null 2>"$work/stderr" || { cat "$work/stderr" >&2; fail "host recover"; }
cmp -s "$work/brought.bin" "$work/host/r6.bin" || fail "host recovery differs"
say "the host's shardctl logged in and recovered over the published ports"

say "no password, invitation code or secret in any container's log"
dc logs --no-color >"$work/logs.txt" 2>&1
python3 - "$work" "$brought" <<'PY' || fail "the log scan"
import base64, sys
work, secret_id = sys.argv[1], sys.argv[2]
logs = "".join(
    open(f"{work}/{name}", encoding="utf-8", errors="replace").read()
    for name in ("logs-before-down.txt", "logs.txt")
)
# The scan must be able to see: the services log each release with its secret id.
if secret_id not in logs:
    print(f"the logs do not mention secret {secret_id}: the scan would prove nothing", file=sys.stderr)
    sys.exit(1)
secret = open(f"{work}/brought.bin", "rb").read()
needles = {
    "password": open(f"{work}/password").read().strip(),
    "invitation code": open(f"{work}/invitation").read().strip(),
    "secret (hex)": secret.hex()[:32],
    "secret (base64)": base64.b64encode(secret).decode()[:32],
    "secret (base64url)": base64.urlsafe_b64encode(secret).decode()[:32],
}
found = [name for name, n in needles.items() if n in logs]
if found:
    print("found in the logs:", ", ".join(found), file=sys.stderr)
    sys.exit(1)
PY

for s in custodian-1 custodian-2 custodian-3 custodian-4; do
  out=$(dc exec -T "$s" custodian audit verify) || fail "$s audit: $out"
  say "$s: $out"
done
say "PASSED in $(($(date +%s) - started)) s"
