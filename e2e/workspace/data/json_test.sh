#!/bin/bash
. "${TEST_SRCDIR}/${TEST_WORKSPACE}/testlib/lib.sh"
json="{\"ok\":true}"
assert_contains "$json" "\"ok\":true"
pass
