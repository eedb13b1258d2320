#!/bin/bash
. "${TEST_SRCDIR}/${TEST_WORKSPACE}/testlib/lib.sh"
for p in 1 80 443 65535; do
  [ "$p" -ge 1 ] && [ "$p" -le 65535 ] || fail "port $p out of range"
done
pass
