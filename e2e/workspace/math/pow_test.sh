#!/bin/bash
. "${TEST_SRCDIR}/${TEST_WORKSPACE}/testlib/lib.sh"
assert_eq 1024 "$((2 ** 10))"
assert_eq 1 "$((7 ** 0))"
pass
