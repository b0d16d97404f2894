#!/usr/bin/env bash
# make compose-check: compose.yaml brought up for real and put through two tier failures.
#
#   1. build the image (scripts/docker_image.sh: wheelhouse, base, Dockerfile; cached)
#   2. `compose up`, wait for every healthcheck (grpc.health.v1)
#   3. stream an answer through the router (`qarr generate` inside the router container)
#      and one pinned to each tier (mesh.yaml's tiers: smollm2-fp32, gemma3-fp32)
#   4. `docker kill` the tier that answered: N requests must all succeed on the other tiers
#      (no client retries: the router's own failover); start it again, it serves again
#   5. crash another tier (SIGKILL of everything in it): N requests succeed on the rest;
#      the restart policy brings it back by itself and it serves again
#   6. `compose down -v`: no container of the project is left (also on failure or Ctrl-C)
#
# env: COMPOSE (default: `docker compose`, else `docker-compose`), QARR_CHECK_PROJECT,
#      QARR_CHECK_REQUESTS (default 12), QARR_CHECK_TIMEOUT (seconds to healthy, default 900),
#      QARR_TIER_ENGINE=fake (tiers without a model: checks the plumbing in a minute or two),
#      and scripts/docker_image.sh's QARR_IMAGE, BASE_IMAGE.
set -euo pipefail
cd "$(dirname "$0")/.."
project=${QARR_CHECK_PROJECT:-qarr-check}
requests=${QARR_CHECK_REQUESTS:-12}
timeout=${QARR_CHECK_TIMEOUT:-900}
if [ -n "${COMPOSE:-}" ]; then read -ra compose <<<"$COMPOSE"
elif docker compose version >/dev/null 2>&1; then compose=(docker compose)
else compose=(docker-compose); fi
compose+=(-f compose.yaml -p "$project")
# The router's port on an ephemeral loopback port: never clashes with a `make up` on 50051.
export QARR_ROUTER_PUBLISH=127.0.0.1:
export QARR_HTTP_PUBLISH=127.0.0.1:

say() { echo "compose-check: $*"; }
fail() { say "FAILED: $*"; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.0f", b - a }'; }
# Container ids, looked up once after `up` (a started or restarted container keeps its id).
declare -A ids
cid() { echo "${ids[$1]}"; }
health() { docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$(cid "$1")" 2>/dev/null || echo gone; }

teardown() {
  local rc=$?
  trap - EXIT INT TERM
  if [ $rc -ne 0 ]; then
    say "logs of the last 40 lines per service:"
    "${compose[@]}" logs --no-color --tail 40 2>&1 | sed 's/^/  /' || true
  fi
  "${compose[@]}" down -v --remove-orphans --timeout 20 >/dev/null 2>&1 || true
  left=$(docker ps -aq --filter "label=com.docker.compose.project=$project")
  if [ -n "$left" ]; then say "containers left after down: $left"; rc=1
  else say "torn down: no container of project $project left"; fi
  exit $rc
}

restarts() { docker inspect -f '{{.RestartCount}}' "$(cid "$1")"; }

wait_healthy() {  # wait_healthy SERVICE...: until each one's healthcheck passes
  local start s next=30; start=$(now)
  declare -A before
  for s in "$@"; do before[$s]=$(restarts "$s"); done
  while :; do
    local pending=()
    for s in "$@"; do
      [ "$(health "$s")" = healthy ] || pending+=("$s:$(health "$s")")
      # A server that keeps crashing at start will not become healthy: say so now.
      [ "$(restarts "$s")" -ge $(( before[$s] + 3 )) ] && fail "$s crashed 3 times while starting"
    done
    [ ${#pending[@]} -eq 0 ] && return 0
    [ "$(since "$start")" -ge "$timeout" ] && fail "not healthy after ${timeout} s: ${pending[*]}"
    if [ "$(since "$start")" -ge "$next" ]; then say "  ${next} s: waiting for ${pending[*]}"; next=$(( next + 30 )); fi
    sleep 1
  done
}

# batch N [TIER]: N requests through the router in one `qarr batch` (4 at a time, no client
# retries); prints "<succeeded> <failed> <tiers that served>".
batch() {
  local n=$1 tier=${2:-}
  python3 -c '
import json, sys
n, tier = int(sys.argv[1]), sys.argv[2]
for i in range(n):
    item = {"id": i, "prompt": f"Name a colour, number {i}:", "max_tokens": 16}
    if tier:
        item["tier"] = tier
    print(json.dumps(item))' "$n" "$tier" \
  | "${compose[@]}" exec -T router sh -c 'cat > /tmp/in.jsonl && rm -f /tmp/out.jsonl &&
      qarr batch /tmp/in.jsonl -o /tmp/out.jsonl --concurrency 4 --max-retries 0 --no-progress >/dev/null 2>&1;
      cat /tmp/out.jsonl' \
  | python3 -c '
import collections, json, sys
rows = [json.loads(line) for line in sys.stdin if line.strip()]
ok = [r for r in rows if not r.get("error")]
tiers = collections.Counter(r["tier"] for r in ok)
print(len(ok), len(rows) - len(ok), ",".join(f"{t}={c}" for t, c in sorted(tiers.items())) or "-")'
}

trap teardown EXIT
trap 'exit 130' INT TERM

say "building the image"
t=$(now); scripts/docker_image.sh; build_s=$(since "$t")

# The tier services (tier-<tier name>), from compose.yaml itself.
mapfile -t tier_services < <("${compose[@]}" config --services | grep '^tier-' | sort)
[ ${#tier_services[@]} -ge 2 ] || fail "compose.yaml has ${#tier_services[@]} tier services; the check needs two or more"

say "up: ${compose[*]}"
t=$(now)
"${compose[@]}" up -d --no-build 2>&1 | sed "s/^/  /"
for s in "${tier_services[@]}" router; do ids[$s]=$("${compose[@]}" ps -q "$s"); done
wait_healthy "${tier_services[@]}" router
healthy_s=$(since "$t")
say "healthy in ${healthy_s} s (${tier_services[*]}, router)"

answer=$("${compose[@]}" exec -T router qarr generate --max-tokens 32 "What is the capital of France?" 2>/tmp/qarr-check-meta.$$) \
  || { cat /tmp/qarr-check-meta.$$; rm -f /tmp/qarr-check-meta.$$; fail "no answer through the router"; }
meta=$(cat /tmp/qarr-check-meta.$$); rm -f /tmp/qarr-check-meta.$$
[ -n "$(echo "$answer" | tr -d '[:space:]')" ] || fail "empty answer"
say "answer: $(echo "$answer" | tr '\n' ' ') $meta"
first=$(echo "$meta" | sed -n 's/.*tier=\([^ ]*\).*/\1/p')
[ -n "$first" ] || fail "the answer names no tier"
# The OpenAI-compatible HTTP door, from the host through its published port.
http_port=$("${compose[@]}" port router 8000 | sed 's/.*://')
http_answer=$(python3 - "$http_port" <<'PY'
import json, sys, urllib.request
body = {"model": "auto", "max_tokens": 32, "messages": [{"role": "user", "content": "What is the capital of France?"}]}
req = urllib.request.Request(f"http://127.0.0.1:{sys.argv[1]}/v1/chat/completions", json.dumps(body).encode(),
                             {"content-type": "application/json"})
reply = json.load(urllib.request.urlopen(req, timeout=120))
print(reply["model"], json.dumps(reply["choices"][0]["message"]["content"]), reply["usage"])
PY
) || fail "no answer through the HTTP door"
say "HTTP door answer: $http_answer"
# Each tier answers the same question, pinned (with the framing and stop strings of its mesh entry).
for s in "${tier_services[@]}"; do
  name=${s#tier-}
  pinned=$("${compose[@]}" exec -T router qarr generate --tier "$name" --max-tokens 32 "What is the capital of France?" 2>/tmp/qarr-check-meta.$$) \
    || { cat /tmp/qarr-check-meta.$$; rm -f /tmp/qarr-check-meta.$$; fail "no answer from tier $name"; }
  say "answer from $name (pinned): \"$(echo "$pinned" | tr '\n' ' ' | sed 's/ *$//')\" $(cat /tmp/qarr-check-meta.$$)"
  rm -f /tmp/qarr-check-meta.$$
done
# The tier killed second: another than the one that answered.
other=$(printf '%s\n' "${tier_services[@]#tier-}" | grep -Fvx "$first" | head -1)
[ -n "$other" ] || fail "the answer came from an unknown tier: $first"

say "docker kill tier-$first (the tier that answered)"
docker kill "$(cid "tier-$first")" >/dev/null
read -r ok bad tiers <<<"$(batch "$requests")"
say "after the kill: $ok of $requests requests served ($tiers), $bad failed"
[ "$ok" -eq "$requests" ] && [[ ",$tiers" != *",$first="* ]] || fail "requests failed or went to the killed tier"

say "docker start tier-$first (a killed container stays down: Docker counts it as an operator's stop)"
t=$(now); "${compose[@]}" start "tier-$first" >/dev/null 2>&1
wait_healthy "tier-$first"; back_s=$(since "$t")
read -r ok bad tiers <<<"$(batch 2 "$first")"
say "tier-$first healthy again in ${back_s} s; pinned requests: $ok of 2 served ($tiers)"
[ "$ok" -eq 2 ] || fail "tier-$first does not serve after its start"

say "crash tier-$other (SIGKILL to every process in it)"
crashes=$(restarts "tier-$other")
t=$(now)
docker exec "$(cid "tier-$other")" sh -c 'kill -KILL -1' >/dev/null 2>&1 || true
read -r ok bad tiers <<<"$(batch "$requests")"
say "after the crash: $ok of $requests requests served ($tiers), $bad failed"
[ "$ok" -eq "$requests" ] && [[ ",$tiers" != *",$other="* ]] || fail "requests failed or went to the crashed tier"
while [ "$(restarts "tier-$other")" -le "$crashes" ]; do
  [ "$(since "$t")" -ge "$timeout" ] && fail "tier-$other was not restarted by its restart policy"
  sleep 1
done
wait_healthy "tier-$other"; crash_s=$(since "$t")
read -r ok bad tiers <<<"$(batch 2 "$other")"
say "tier-$other restarted by its restart policy, healthy in ${crash_s} s after the crash; pinned requests: $ok of 2 served ($tiers)"
[ "$ok" -eq 2 ] || fail "tier-$other does not serve after its restart"

say "PASSED: image ${build_s} s, healthy ${healthy_s} s, killed tier back ${back_s} s, crashed tier back ${crash_s} s"
