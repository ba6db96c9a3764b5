#!/bin/sh
# The dfwatch container's entry point: runs `dfwatch ARGS...`, and for `watch`:
#
#   DFWATCH_SHARDS=N          add `--shard I/N`, I = this pod's ordinal: DFWATCH_SHARD_INDEX if set, else the
#                             number that ends DFWATCH_POD_NAME (or HOSTNAME), as in a StatefulSet pod
#                             "dfwatch-2". Worker I keeps the streams rendezvous hashing gives it.
#   DFWATCH_BUILD_ENGINES=1   first copy the image's models to DFWATCH_MODELS_DIR (a volume) and build the
#                             TensorRT plans for this node's GPU there (`dfwatch-train engines --tensorrt`):
#                             plans only run on the GPU and TensorRT version they were built with. Nothing is
#                             downloaded; an up-to-date plan is kept.
#   DFWATCH_DEMO_FEED=1       add the generated demo clip as a looping, paced live feed "demo" (quick start).
#
# Anything else is passed through unchanged, so `docker run IMAGE --help` and `IMAGE demo out.mp4` work too.
set -eu

fail() {
    echo "dfwatch entrypoint: $*" >&2
    exit 2
}

if [ "${1:-}" = "watch" ]; then
    shift
    extra=""
    if [ -n "${DFWATCH_SHARDS:-}" ]; then
        case "$DFWATCH_SHARDS" in
            '' | *[!0-9]*) fail "DFWATCH_SHARDS='$DFWATCH_SHARDS' is not a number of workers (a positive integer)" ;;
        esac
        name="${DFWATCH_POD_NAME:-${HOSTNAME:-}}"
        index="${DFWATCH_SHARD_INDEX:-${name##*-}}"
        case "$index" in
            '' | *[!0-9]*)
                fail "cannot tell this worker's shard index: pod name '$name' does not end in -<ordinal> (a" \
                    "StatefulSet pod is named <statefulset>-<ordinal>); set DFWATCH_SHARD_INDEX=0..$((DFWATCH_SHARDS - 1))"
                ;;
        esac
        extra="--shard $index/$DFWATCH_SHARDS"
    fi
    if [ "${DFWATCH_BUILD_ENGINES:-0}" = "1" ]; then
        dir="${DFWATCH_MODELS_DIR:-/var/lib/dfwatch/models}"
        mkdir -p "$dir"
        for f in "${DFWATCH_IMAGE_MODELS:-/app/models}"/*; do
            [ -e "$dir/$(basename "$f")" ] || cp -p "$f" "$dir/"
        done
        echo "dfwatch entrypoint: dfwatch-train engines --models $dir --tensorrt" >&2
        dfwatch-train engines --models "$dir" --tensorrt
    fi
    if [ "${DFWATCH_DEMO_FEED:-0}" = "1" ]; then
        clip="${TMPDIR:-/tmp}/dfwatch-demo.mp4"
        [ -s "$clip" ] || dfwatch demo "$clip"
        extra="$extra demo=$clip --loop --pace"
    fi
    # $extra holds no spaces inside its words (an index, a count, a path under TMPDIR): split it on purpose.
    # shellcheck disable=SC2086
    set -- watch $extra "$@"
fi
exec dfwatch "$@"
