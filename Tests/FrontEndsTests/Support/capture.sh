#!/bin/sh
# A queue program for the tests: keeps the message (fd 0) and the envelope (fd 1)
# in $CAPTURE_DIR, then exits $CAPTURE_EXIT (default 0).
cat > "$CAPTURE_DIR/message" || exit 54
cat <&1 > "$CAPTURE_DIR/envelope" || exit 54
exit "${CAPTURE_EXIT:-0}"
