#!/usr/bin/env bash
# ctest netns_e2e_test (label netns): the three services across network namespaces whose data
# link is shaped to 1 Gbit/s (deploy/netns/kvwire-netns), driven through the control plane.
# Checks that the link is really shaped (a timed bulk transfer), that real-model requests
# complete and their wire bytes crossed the shaped veth (its counters), that a synthetic-KV
# request of Llama-3-8B shape took at least as long as its bytes need at the measured rate (so
# the data plane did not bypass the link, e.g. through shared memory), that compression shrinks
# the bytes on the wire, and that `down` leaves no namespace or service behind.
# Exit 77 (skipped, with the reason) without root, iproute2, namespaces, tbf or the model file.
#
#   netns_e2e_test.sh BIN_DIR
set -euo pipefail
bin="$(cd "${1:?usage: netns_e2e_test.sh BIN_DIR}" && pwd)"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
netns="$repo/deploy/netns/kvwire-netns"
prefix=kvwt
net=10.78
rate_gbps=1

skip() { echo "SKIP: $*"; exit 77; }
fail() { echo "FAIL: $*" >&2; exit 1; }

[[ "$(id -u)" == 0 ]] || skip "needs root for network namespaces and tc"
command -v ip >/dev/null && command -v tc >/dev/null || skip "iproute2 (ip, tc) is not installed"
probe="${prefix}probe"
ip netns add "$probe" 2>/dev/null || skip "cannot create network namespaces here"
probe_ok=1
ip netns exec "$probe" tc qdisc add dev lo root tbf rate 1gbit burst 128k latency 25ms \
  2>/dev/null || probe_ok=0
ip netns del "$probe"
[[ "$probe_ok" == 1 ]] || skip "tc tbf is not available"
model="${KVWIRE_MODEL:-$HOME/.cache/kvwire/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
[[ -f "$model" ]] || skip "no model file (set KVWIRE_MODEL or run scripts/fetch-model)"

nsargs=(--prefix "$prefix" --net "$net")
trap '"$netns" down "${nsargs[@]}"' EXIT

# A field of the `kvwire generate --json` output on stdin ("text" or a stats field).
field() {
  python3 -c 'import json, sys; d = json.load(sys.stdin); k = sys.argv[1]
print(d["text"] if k == "text" else d["stats"].get(k, 0))' "$1"
}
# The TX byte counter of the data link towards the decode node.
to_decode_bytes() { "$netns" counters "${nsargs[@]}" | awk '/prefill_to_decode/ { print $6 }'; }
generate() {  # CONTROL MODEL BUDGET PROMPT (a chat turn)
  "$bin/kvwire" --control "$1" generate --model "$2" --budget "$3" --max-tokens 8 --json \
    --timeout-ms 120000 --chat --prompt "$4"
}

echo "== topology at ${rate_gbps} Gbit/s"
"$netns" up "${nsargs[@]}" --rate "${rate_gbps}gbit"
measured="$("$netns" measure "${nsargs[@]}" --bytes 100000000 | tee /dev/stderr |
            awk '/prefill_to_decode_gbps/ { print $3 }')"
awk -v m="$measured" -v r="$rate_gbps" 'BEGIN { exit !(m > 0.5 * r && m < 1.1 * r) }' ||
  fail "bulk transfer ran at $measured Gbit/s, not shaped to $rate_gbps Gbit/s"

echo "== real model"
control="$("$netns" start "${nsargs[@]}" --model "$model" --bin "$bin" | tee /dev/stderr |
           sed -n 's/^control //p')"
passage="The lighthouse on Marrow Point was built in 1871 from granite quarried on the island \
itself. Its first keeper, Edith Calloway, kept the lamp burning for thirty-two years and wrote \
a log entry every night, recording the weather, the ships that passed and the birds that struck \
the glass. Who was the first keeper?"
before="$(to_decode_bytes)"
wire=0
for budget in 0.2 1; do
  out="$(generate "$control" "" "$budget" "$passage")" || fail "request at budget $budget failed"
  tokens="$(field generated_tokens <<<"$out")"
  bytes="$(field wire_bytes <<<"$out")"
  echo "budget $budget: $tokens tokens, $bytes wire bytes: $(field text <<<"$out")"
  [[ "$tokens" -ge 1 && "$bytes" -gt 0 ]] || fail "budget $budget: no tokens or no wire bytes"
  wire=$((wire + bytes))
done
crossed=$(($(to_decode_bytes) - before))
echo "wire bytes $wire, crossed the shaped veth $crossed"
# The veth carries the frames plus UCX and TCP headers (large segments: well under 10 %).
[[ "$crossed" -ge "$wire" && "$crossed" -le $((wire + wire / 10 + 1000000)) ]] ||
  fail "the data plane bytes did not cross the shaped link ($crossed vs $wire)"
"$netns" stop "${nsargs[@]}"

echo "== synthetic KV, Llama-3-8B shape"
control="$("$netns" start "${nsargs[@]}" --model "$model" --bin "$bin" \
           --synthetic-kv 32x8x128x32 | sed -n 's/^control //p')"
prompt="$(for _ in $(seq 100); do printf 'The quick brown fox jumps over the lazy dog. '; done)"
before="$(to_decode_bytes)"
full="$(generate "$control" synthetic-32x8x128x32 1 "$prompt")" || fail "synthetic request failed"
crossed=$(($(to_decode_bytes) - before))
small="$(generate "$control" synthetic-32x8x128x32 0.1 "$prompt")" || fail "synthetic request failed"
full_bytes="$(field wire_bytes <<<"$full")"
small_bytes="$(field wire_bytes <<<"$small")"
install_ms="$(field install_ms <<<"$full")"
echo "budget 1: $full_bytes bytes, install $install_ms ms, ttft $(field ttft_ms <<<"$full") ms;" \
     "budget 0.1: $small_bytes bytes, ttft $(field ttft_ms <<<"$small") ms"
[[ "$(field text <<<"$full")" == *synthetic* ]] || fail "no synthetic answer"
[[ "$crossed" -ge "$full_bytes" ]] || fail "$full_bytes wire bytes, only $crossed crossed the veth"
awk -v b="$full_bytes" -v ms="$install_ms" -v g="$measured" \
  'BEGIN { need = b * 8 / (g * 1e9) * 1000; printf "needs >= %.0f ms at the measured rate\n", need
           exit !(ms >= 0.9 * need) }' ||
  fail "the transfer was faster than the shaped link allows: it went around it"
awk -v s="$small_bytes" -v f="$full_bytes" 'BEGIN { exit !(s < 0.15 * f) }' ||
  fail "budget 0.1 sent $small_bytes bytes, budget 1 $full_bytes"

echo "== teardown"
"$netns" down "${nsargs[@]}"
trap - EXIT
left="$(ip netns list | grep -c "^$prefix-" || true)"
[[ "$left" == 0 ]] || fail "$left namespaces left behind"
! ip link show "$prefix-br" >/dev/null 2>&1 || fail "bridge $prefix-br left behind"
pgrep -f "$bin/kvwire-(control|prefill|decode).*$net\." >/dev/null && fail "services left running"
echo "PASS"
