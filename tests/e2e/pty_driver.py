#!/usr/bin/env python3
"""Runs a command (an OpenSSH client) inside a real pseudo-terminal of a given size, types the
given input, optionally resizes the terminal (which makes ssh send window-change) and prints
everything the terminal showed.

usage: pty_driver.py COLS ROWS RESIZE_COLS RESIZE_ROWS RESIZE_AFTER INPUT -- CMD...
RESIZE_COLS 0 means no resize. RESIZE_AFTER is seconds, or "on:TEXT" to resize once the
terminal has shown TEXT.
"""
import fcntl, os, pty, select, signal, struct, sys, termios, time

cols, rows, rcols, rrows, after, typed = sys.argv[1:7]
cmd = sys.argv[sys.argv.index("--") + 1:]
pid, fd = pty.fork()
if pid == 0:
    os.execvp(cmd[0], cmd)

def winsize(c, r):
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", int(r), int(c), 0, 0))

winsize(cols, rows)
os.kill(pid, signal.SIGWINCH)
out = b""
start = time.time()
resized = int(rcols) == 0
typed_done = False
status = None
while time.time() - start < 60:
    if not typed_done and time.time() - start > 0.5:
        os.write(fd, typed.encode().decode("unicode_escape").encode())
        typed_done = True
    due = (after[3:].encode() in out) if after.startswith("on:") else (time.time() - start > float(after))
    if not resized and due:
        winsize(rcols, rrows)
        os.kill(pid, signal.SIGWINCH)
        resized = True
    r, _, _ = select.select([fd], [], [], 0.1)
    if fd in r:
        try:
            data = os.read(fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            data = b""
        if not data:
            break
        out += data
else:
    os.kill(pid, signal.SIGKILL)
    sys.stdout.write(out.decode(errors="replace"))
    sys.exit(124)
_, status = os.waitpid(pid, 0)
sys.stdout.write(out.decode(errors="replace"))
sys.exit(os.waitstatus_to_exitcode(status))
