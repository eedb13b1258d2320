#!/bin/bash
. "${TEST_SRCDIR}/${TEST_WORKSPACE}/testlib/lib.sh"
assert_eq 3 "$(printf "x\nx\ny\nz\nz\n" | uniq | wc -l | tr -d " ")"
pass
