#!/bin/bash
. "${TEST_SRCDIR}/${TEST_WORKSPACE}/testlib/lib.sh"
assert_eq 1 "$((10 % 3))"
pass
