#!/bin/bash
. "${TEST_SRCDIR}/${TEST_WORKSPACE}/testlib/lib.sh"
assert_eq "$(printf abc | cksum)" "$(printf abc | cksum)"
assert_ne "$(printf abc | cksum)" "$(printf abd | cksum)"
pass
