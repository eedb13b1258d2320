#!/bin/bash
. "${TEST_SRCDIR}/${TEST_WORKSPACE}/testlib/lib.sh"
f="${TEST_TMPDIR}/probe"
echo hi > "$f"
assert_eq hi "$(cat "$f")"
pass
