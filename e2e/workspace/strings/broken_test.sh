#!/bin/bash
. "${TEST_SRCDIR}/${TEST_WORKSPACE}/testlib/lib.sh"
# The one intentionally failing test of the workspace (tag "failing").
assert_eq "expected" "actual" "intentionally failing test"
pass
