"""Imported first in every worker process the embedded cluster starts (never in
the caller's): a terminal's Ctrl-C goes to the whole process group, and only
the process that started the run reacts to it, by closing the cluster.

In the fork server the workers are forked from, this runs before the server
notes its handlers, so every worker forked from it ignores SIGINT too.
"""
import signal
import threading

if threading.current_thread() is threading.main_thread():
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # (the fork server starts with SIGINT blocked until this point; ignored now,
    # it is unblocked, so that no process it forks later inherits the block)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
