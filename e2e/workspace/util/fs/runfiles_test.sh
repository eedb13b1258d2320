#!/bin/bash
. "${TEST_SRCDIR}/${TEST_WORKSPACE}/testlib/lib.sh"
assert_eq "fixture for //util/fs:runfiles_test" "$(cat util/fs/fixture.txt)"
pass
