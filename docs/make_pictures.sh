#!/bin/sh
# Makes the README's pictures of the three operator views from the generated demo clip:
#   docs/annotate.png  a frame of `dfwatch watch --annotate` output (frame 150, in the manipulated half)
#   docs/status.txt    `dfwatch status --once` while two workers publish three streams
#   docs/report.png    `dfwatch report` of the clip (and docs/report.json, the plotted series)
# Needs the venv (`make setup`), the bundled model pack in models/ and a Redis at $REDIS
# (default redis://127.0.0.1:6379/0).
set -eu
cd "$(dirname "$0")/.."
REDIS=${REDIS:-redis://127.0.0.1:6379/0}
DF=.venv/bin/dfwatch
FLAGS="--max-faces 1 --metrics-port 0"
tmp=$(mktemp -d)
pids=""
cleanup() {
    for pid in $pids; do kill "$pid" 2>/dev/null || true; done
    for pid in $pids; do wait "$pid" 2>/dev/null || true; done  # they flush to Redis as they stop
    for s in docs-lobby docs-gate docs-dock; do
        .venv/bin/python -c "import redis,sys; c=redis.Redis.from_url(sys.argv[1]); \
c.delete('dfwatch:state:'+sys.argv[2], 'dfwatch:verdicts:'+sys.argv[2]); c.srem('dfwatch:streams', sys.argv[2])" \
            "$REDIS" "$s"
    done
    rm -rf "$tmp"
}
trap cleanup EXIT

$DF demo "$tmp/demo.mp4"

# 1. The annotated video, and one frame of it.
$DF watch "demo=$tmp/demo.mp4" $FLAGS --annotate "$tmp/annotated" >/dev/null
.venv/bin/python - "$tmp/annotated/demo.mp4" docs/annotate.png <<'EOF'
import sys, av, cv2
with av.open(sys.argv[1]) as c:
    frame = next(f for i, f in enumerate(c.decode(video=0)) if i == 150)
cv2.imwrite(sys.argv[2], cv2.cvtColor(frame.to_ndarray(format="rgb24"), cv2.COLOR_RGB2BGR),
            [cv2.IMWRITE_PNG_COMPRESSION, 9])
EOF

# 2. The status table: worker A watches two looped feeds, worker B one clip that ends (and so goes down).
$DF watch "docs-lobby=$tmp/demo.mp4" "docs-gate=$tmp/demo.mp4" --loop --pace $FLAGS --redis "$REDIS" \
    >/dev/null 2>"$tmp/a.log" &
pids="$pids $!"
$DF watch "docs-dock=$tmp/demo.mp4" --pace $FLAGS --redis "$REDIS" >/dev/null 2>"$tmp/b.log" &
pids="$pids $!"
sleep 45
$DF status --redis "$REDIS" --once --match 'docs-*' --stale 5 >docs/status.txt

# 3. The report.
$DF report "$tmp/demo.mp4" --max-faces 2 --out docs/report.png

# 4. Keep the repository lean: 128-colour palettes cut each picture from ~250 kB to under 80 kB.
.venv/bin/python - docs/annotate.png docs/report.png <<'EOF2'
import sys
from PIL import Image
for path in sys.argv[1:]:
    Image.open(path).convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
EOF2
