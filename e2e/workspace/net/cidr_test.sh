#!/bin/bash
. "${TEST_SRCDIR}/${TEST_WORKSPACE}/testlib/lib.sh"
bits=24
assert_eq 256 "$((1 << (32 - bits)))"
pass
