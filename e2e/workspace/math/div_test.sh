#!/bin/bash
. "${TEST_SRCDIR}/${TEST_WORKSPACE}/testlib/lib.sh"
assert_eq 3 "$((10 / 3))"
assert_eq -2 "$((-7 / 3))"
pass
