#!/bin/bash
. "${TEST_SRCDIR}/${TEST_WORKSPACE}/testlib/lib.sh"
url="http://127.0.0.1:8080/cas/abc"
rest="${url#*://}"
assert_eq 127.0.0.1:8080 "${rest%%/*}"
assert_eq /cas/abc "/${rest#*/}"
pass
