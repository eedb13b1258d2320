#!/bin/bash
. "${TEST_SRCDIR}/${TEST_WORKSPACE}/testlib/lib.sh"
assert_eq 4 "$((9 - 5))"
assert_eq -3 "$((2 - 5))"
pass
