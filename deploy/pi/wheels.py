#!/usr/bin/env python3
"""Which of the edge agent's packages install from a wheel on each Raspberry Pi, per PyPI today.

    python3 deploy/pi/wheels.py [--extras agent,avro] [--arch aarch64 armv7l armv6l]
                                [--markdown] [--json]

1. Resolves the versions pip would install for ``.[agent]`` (and each extra given) on this
   machine (``pip install --dry-run --report``): pure-Python packages resolve the same everywhere,
   and the compiled ones are pinned by what needs them (pydantic pins one pydantic-core).
2. For every package and Pi architecture, asks PyPI for a wheel of exactly that version:
   ``pip download --only-binary=:all: --no-deps --python-version 3.11 --platform ...`` with the
   tags pip uses on Raspberry Pi OS Bookworm (glibc 2.36): ``manylinux_2_36_<arch>`` down to
   ``manylinux_2_17_<arch>`` (``manylinux2014``), and ``linux_<arch>`` (``armv6l`` has only
   that one).
3. Prints one line per package and arch (``pure`` / ``wheel`` / ``NO WHEEL``), or ``--markdown``
   the table deploy/README.md carries (tests/agent_pi/test_pi_wheels.py checks that the two agree).

Only PyPI is asked (the index pip is configured with here). piwheels (Raspberry Pi OS's second
index, www.piwheels.org) is not: CI cannot reach it. Exit 1 when a package of the ``agent`` extra
(not an optional one) has no wheel on a 64-bit or 32-bit armv7l Pi.

Uses only the standard library and pip, so it runs on a Pi too.
"""

# ruff: noqa: T201  (a command-line script: its output is print)
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ARCHES = ("aarch64", "armv7l", "armv6l")
#: which Pis run which userland arch under Raspberry Pi OS Bookworm
MODELS = {
    "aarch64": "64-bit OS: Pi 3, 4, 5, Zero 2 W",
    "armv7l": "32-bit OS on a Pi 2, 3, 4, 5, Zero 2 W",
    "armv6l": "32-bit OS on a Pi 1, Zero, Zero W",
}
#: the arches the agent role must install on from PyPI wheels alone
REQUIRED_ON = ("aarch64", "armv7l")


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    extra: str  # the extra that brings it: agent (always) or an optional one


@dataclass(frozen=True)
class Result:
    package: Package
    arch: str
    wheel: str | None  # the wheel's file name, None when PyPI has none

    @property
    def kind(self) -> str:
        if self.wheel is None:
            return "NO WHEEL"
        return "pure" if self.wheel.endswith("-none-any.whl") else "wheel"


#: glibc of Raspberry Pi OS Bookworm: a manylinux_2_N wheel installs for every N up to this
GLIBC_MINOR = 36


def platform_tags(arch: str) -> list[str]:
    """The tags pip on the Pi accepts (pip does not expand ``--platform`` to older manylinux
    tags itself: each is listed). There is no manylinux for ``armv6l``: pip on a Pi Zero or
    Pi 1 takes ``linux_armv6l`` wheels (PyPI accepts none) and pure-Python ones."""
    if arch == "armv6l":
        return ["linux_armv6l"]
    return [*(f"manylinux_2_{n}_{arch}" for n in range(GLIBC_MINOR, 16, -1)),
            f"manylinux2014_{arch}", f"linux_{arch}"]


def _pip(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, check=False)


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def resolve(extras: list[str]) -> list[Package]:
    """The packages (and versions) pip installs for each extra, with the extra that adds them."""
    found: dict[str, Package] = {}
    for i, extra in enumerate(extras):
        wanted = ",".join(extras[:i + 1])
        result = _pip("install", "--dry-run", "--ignore-installed", "--quiet", "--report", "-",
                      f"{REPO}[{wanted}]")
        if result.returncode != 0:
            raise SystemExit(f"wheels.py: pip could not resolve .[{wanted}]: "
                             f"{result.stderr.strip().splitlines()[-1:]}")
        report = json.loads(result.stdout)
        for item in report["install"]:
            meta = item["metadata"]
            name = _normal(meta["name"])
            if name != "thermopipe" and name not in found:
                found[name] = Package(name, meta["version"], extra)
    return sorted(found.values(), key=lambda p: (p.extra != "agent", p.extra, p.name))


def probe(package: Package, arch: str) -> Result:
    with tempfile.TemporaryDirectory() as tmp:
        args = ["download", "--only-binary=:all:", "--no-deps", "--quiet", "--dest", tmp,
                "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311"]
        for tag in platform_tags(arch):
            args += ["--platform", tag]
        result = _pip(*args, f"{package.name}=={package.version}")
        wheels = sorted(p.name for p in Path(tmp).glob("*.whl"))
    return Result(package, arch, wheels[0] if result.returncode == 0 and wheels else None)


def check(packages: list[Package], arches: list[str]) -> list[Result]:
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda pa: probe(*pa), [(p, a) for p in packages for a in arches]))


def markdown(results: list[Result], arches: list[str]) -> str:
    """The table for deploy/README.md (no versions: they change every release, the result
    rarely does)."""
    by = {(r.package.name, r.arch): r for r in results}
    packages = list(dict.fromkeys(r.package for r in results))
    lines = ["| package | extra | " + " | ".join(f"`{a}`" for a in arches) + " |",
             "|---|---|" + "---|" * len(arches)]
    for p in packages:
        cells = [by[(p.name, a)].kind for a in arches]
        shown = [f"**{c}**" if c == "NO WHEEL" else c for c in cells]
        lines.append(f"| {p.name} | {p.extra} | " + " | ".join(shown) + " |")
    return "\n".join(lines)


def failures(results: list[Result]) -> list[Result]:
    return [r for r in results
            if r.wheel is None and r.package.extra == "agent" and r.arch in REQUIRED_ON]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extras", default="agent,avro",
                        help="extras to check, the role first (default agent,avro)")
    parser.add_argument("--arch", nargs="+", default=list(ARCHES), choices=ARCHES)
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--markdown", action="store_true", help="the table for deploy/README.md")
    out.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    packages = resolve([e for e in args.extras.split(",") if e])
    results = check(packages, args.arch)
    if args.markdown:
        print(markdown(results, args.arch))
    elif args.json:
        print(json.dumps([{"package": r.package.name, "version": r.package.version,
                           "extra": r.package.extra, "arch": r.arch, "kind": r.kind,
                           "wheel": r.wheel} for r in results], indent=2))
    else:
        for r in results:
            print(f"{r.arch:8} {r.package.extra:6} {r.package.name}=={r.package.version:10} "
                  f"{r.kind:8} {r.wheel or ''}")
    bad = failures(results)
    for r in bad:
        print(f"wheels.py: {r.package.name}=={r.package.version} (agent role) has no wheel for "
              f"{r.arch} on PyPI", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
