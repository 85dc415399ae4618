"""Suite-wide set-up shared by every test module."""

import signal

# Ctrl-C must reach the processes under test the way a terminal delivers it. A suite started in the
# background of a non-interactive shell (`make test &`, CI runners, nohup) inherits SIGINT *ignored*,
# and an ignored signal stays ignored across exec: Python then installs no KeyboardInterrupt handler,
# here or in any process a test starts, and every Ctrl-C test would hang. Give SIGINT back its usual
# handler; children then start with the default disposition (a handler is reset on exec).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
