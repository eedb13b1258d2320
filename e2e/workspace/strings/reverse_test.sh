#!/bin/bash
. "${TEST_SRCDIR}/${TEST_WORKSPACE}/testlib/lib.sh"
s=hello r=
for ((i = ${#s} - 1; i >= 0; i--)); do r+="${s:i:1}"; done
assert_eq olleh "$r"
pass
