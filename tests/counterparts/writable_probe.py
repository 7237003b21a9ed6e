"""Run inside a service's mount namespace (the container's /usr/bin/python3, no thermopipe import):
prints JSON {"rw_mounts": [...], "writable": [...]}: the mount points not mounted read-only, and
every directory that the user this runs as may create a file in (os.access: permissions and
read-only mounts both count). /proc and /sys are left out (ProtectKernelTunables' business).
With paths as arguments: {"paths": {path: writable}} for those only."""

import json
import os
import sys

SKIP = ("/proc", "/sys")


def rw_mounts() -> list[str]:
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            target, options = fields[4], fields[5]
            if "rw" in options.split(",") and not target.startswith(SKIP):
                out.append(target.replace("\\040", " "))
    return sorted(set(out))


def writable() -> list[str]:
    out = []
    for top, dirs, _files in os.walk("/", topdown=True):
        dirs[:] = [d for d in dirs if not os.path.join(top, d).startswith(SKIP)
                   and not os.path.islink(os.path.join(top, d))]
        if os.access(top, os.W_OK | os.X_OK):
            out.append(top)
    return sorted(out)


if sys.argv[1:]:
    print(json.dumps({"paths": {p: os.access(p, os.W_OK) for p in sys.argv[1:]}}))
else:
    print(json.dumps({"uid": os.getuid(), "rw_mounts": rw_mounts(), "writable": writable()}))
