#!/usr/bin/python3
"""make bench: our figures beside Dovecot and Postfix on this machine, in one run.

So far it measures the disk's durable-delivery limit (write, fsync, link, fsync dir),
the reference for the storage and SMTP goals; the protocol comparisons are added as
those parts land.
"""
import argparse
import os
import tempfile
import time


def fsync_limit(n=2000, size=4096):
    """Messages/s for write+fsync+link+fsync(dir) in a loop, one writer."""
    data = os.urandom(size)
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as d:
        tmp, new = os.path.join(d, "tmp"), os.path.join(d, "new")
        os.mkdir(tmp)
        os.mkdir(new)
        dfd = os.open(new, os.O_RDONLY | os.O_DIRECTORY)
        start = time.monotonic()
        for i in range(n):
            p = os.path.join(tmp, str(i))
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.write(fd, data)
            os.fsync(fd)
            os.close(fd)
            os.link(p, os.path.join(new, str(i)))
            os.fsync(dfd)
            os.unlink(p)
        elapsed = time.monotonic() - start
        os.close(dfd)
    return n / elapsed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mox", required=True)
    args = ap.parse_args()
    print(f"mox binary: {args.mox}")
    rate = fsync_limit()
    print(f"disk durable-delivery limit (write+fsync+link+fsync dir, 4 KB): {rate:.0f} msg/s")


if __name__ == "__main__":
    main()
