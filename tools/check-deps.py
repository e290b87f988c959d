#!/usr/bin/env python3
"""Offline dependency check (what `cargo deny check licenses sources` would do,
without its network fetches): every crate in the workspace's dependency graph
must come from crates.io or this repository, and carry a license from the
allowlist. Exits non-zero listing the offenders."""

import json
import os
import re
import subprocess
import sys

ALLOWED = {
    "MIT", "Apache-2.0", "Apache-2.0 WITH LLVM-exception", "BSD-2-Clause", "BSD-3-Clause",
    "ISC", "Zlib", "Unicode-3.0", "Unicode-DFS-2016", "0BSD", "CC0-1.0", "MPL-2.0", "Unlicense", "BSL-1.0",
}
CRATES_IO = "registry+https://github.com/rust-lang/crates.io-index"


def license_ok(expr):
    """True if the SPDX expression can be satisfied with allowed licenses."""
    if not expr:
        return False
    expr = expr.replace("/", " OR ")
    # An OR needs one allowed alternative; an AND needs all parts allowed.
    def term_ok(term):
        term = term.strip().strip("()").strip()
        if " OR " in term:
            return any(term_ok(t) for t in term.split(" OR "))
        if " AND " in term:
            return all(term_ok(t) for t in term.split(" AND "))
        return term in ALLOWED
    return term_ok(re.sub(r"\s+", " ", expr))


def main():
    root = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
    meta = json.loads(subprocess.check_output(
        ["cargo", "metadata", "--format-version", "1", "--locked"], cwd=root))
    bad = []
    for pkg in meta["packages"]:
        src = pkg.get("source")
        if src is not None and src != CRATES_IO:
            bad.append("%s %s: source %s is not crates.io" % (pkg["name"], pkg["version"], src))
        if src is None:
            continue  # our own crates
        if not license_ok(pkg.get("license")):
            bad.append("%s %s: license %r not in the allowlist" % (pkg["name"], pkg["version"], pkg.get("license")))
    checked = sum(1 for p in meta["packages"] if p.get("source"))
    for b in bad:
        print("check-deps: " + b)
    print("check-deps: %d crates checked, %d problems" % (checked, len(bad)))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
