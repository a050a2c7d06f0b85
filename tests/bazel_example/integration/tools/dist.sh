#!/bin/sh
# The distribution command: build //:dist and copy the archive into $LOCKSTEP_DIST_DIR.
# Arguments are Bazel startup options (e.g. --output_base=DIR). A Bazel build writes only
# into its own output tree, and `bazel run` of an sh_binary needs rules_cc from the
# internet, so this copy is done here.
set -eu
: "${LOCKSTEP_DIST_DIR:?set by lockstep: the directory the artifacts go to}"
bazel --batch "$@" build //:dist
cp bazel-bin/dist.tar.gz "$LOCKSTEP_DIST_DIR/example-dist.tar.gz"
