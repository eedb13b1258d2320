#!/bin/bash
. "${TEST_SRCDIR}/${TEST_WORKSPACE}/testlib/lib.sh"
assert_eq 5 "$((2 + 3))"
assert_eq 0 "$((-7 + 7))"
pass
