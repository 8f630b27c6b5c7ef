#!/usr/bin/env bash
# Bulk-assign benchmark on the release build: N recipients assigned and
# streamed back, durable (default sync mode), then the merge file.
set -euo pipefail
N=${N:-1000000}
BIN=${BIN:-$(dirname "$0")/../target/release/redeemd}
DIR=$(mktemp -d)
$BIN token add --data-dir $DIR/data --role issuer > $DIR/issuer 2>/dev/null
ISSUER=$(tail -1 $DIR/issuer | awk '{print $NF}')
$BIN serve --data-dir $DIR/data --listen 127.0.0.1:18099 > $DIR/out 2> $DIR/err &
PID=$!
trap 'kill $PID 2>/dev/null; rm -rf $DIR' EXIT
for i in $(seq 100); do grep -q "admin token" $DIR/out 2>/dev/null && curl -sf localhost:18099/readyz >/dev/null && break; sleep 0.1; done
ADMIN=$(grep "admin token" $DIR/out | awk '{print $NF}')
curl -s -X POST localhost:18099/v1/campaigns -H "Authorization: Bearer $ADMIN" -H 'content-type: application/json' \
  -d "{\"id\": \"spring\", \"generate\": $((N + N / 10)), \"code\": {\"prefix\": \"SPR\", \"length\": 12}}" > /dev/null
seq 1 $N | sed 's/.*/user&@example.com/' > $DIR/recipients.txt
ls -l $DIR/recipients.txt | awk '{print "file bytes:", $5}'
start=$(date +%s.%N)
curl -s -X POST "localhost:18099/v1/campaigns/spring/assignments/bulk" -H "Authorization: Bearer $ISSUER" \
  -H 'content-type: text/csv' --data-binary @$DIR/recipients.txt -o $DIR/codes.csv
end=$(date +%s.%N)
echo "bulk assign: $(wc -l < $DIR/codes.csv) rows (with header) in $(echo "$end - $start" | bc) s"
cut -d, -f3 $DIR/codes.csv | sort | uniq -c
cut -d, -f2 $DIR/codes.csv | sort -u | wc -l | awk '{print "distinct codes (with header):", $1}'
start=$(date +%s.%N)
curl -s -X POST "localhost:18099/v1/campaigns/spring/assignments/bulk" -H "Authorization: Bearer $ISSUER" \
  -H 'content-type: text/csv' --data-binary @$DIR/recipients.txt -o $DIR/again.csv
end=$(date +%s.%N)
echo "resend: $(echo "$end - $start" | bc) s; same codes: $(cmp -s <(cut -d, -f1,2 $DIR/codes.csv) <(cut -d, -f1,2 $DIR/again.csv) && echo yes || echo no)"
start=$(date +%s.%N)
curl -s "localhost:18099/v1/campaigns/spring/assignments" -H "Authorization: Bearer $ISSUER" -o $DIR/merge.csv
end=$(date +%s.%N)
echo "merge file: $(wc -l < $DIR/merge.csv) rows in $(echo "$end - $start" | bc) s"
grep "bulk assignment" $DIR/err | tail -2
