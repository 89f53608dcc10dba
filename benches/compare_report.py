#!/usr/bin/env python3
"""Helpers for benches/compare.sh.

  compare_report.py report RESULTS.tsv
      Medians per tool and figure, and ratios to restic, from the raw
      results (lines: run, tool, metric, value).

  compare_report.py tree-compare EXPECTED ACTUAL
      Compares two directory trees entry by entry: the set of paths, entry
      type, permission bits, owner, group, size, file content (SHA-256),
      symlink target, extended attributes and mtime (ns), of every entry
      including the top directory. Exits 1 on any difference. (atime, ctime
      and inode numbers cannot be restored by any tool and are not compared.)
"""

import hashlib
import os
import stat
import statistics
import sys
from collections import defaultdict

TOOLS = ["dot", "restic", "borg", "casync"]


# ------------------------------------------------------------- tree-compare


def kind(mode):
    for test, name in (
        (stat.S_ISREG, "file"),
        (stat.S_ISDIR, "dir"),
        (stat.S_ISLNK, "symlink"),
        (stat.S_ISFIFO, "fifo"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "chardev"),
        (stat.S_ISBLK, "blockdev"),
    ):
        if test(mode):
            return name
    return "unknown"


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def xattrs(path):
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return ()
    out = []
    for n in sorted(names):
        try:
            out.append((n, os.getxattr(path, n, follow_symlinks=False)))
        except OSError:
            out.append((n, None))
    return tuple(out)


def manifest(root):
    """rel path -> dict of attributes, for root itself and everything below."""
    entries = {}

    def add(rel, full):
        st = os.lstat(full)
        k = kind(st.st_mode)
        e = {
            "type": k,
            "mode": oct(stat.S_IMODE(st.st_mode)),
            "owner": (st.st_uid, st.st_gid),
            "xattrs": xattrs(full),
            "mtime": st.st_mtime_ns,
        }
        if k == "file":
            e["size"] = st.st_size
            e["content"] = sha256(full)
        elif k == "symlink":
            e["target"] = os.readlink(full)
        elif k in ("chardev", "blockdev"):
            e["rdev"] = st.st_rdev
        entries[rel] = e

    add(".", root)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            add(os.path.relpath(full, root), full)
    return entries


def tree_compare(expected, actual):
    a = manifest(expected)
    b = manifest(actual)
    problems = defaultdict(list)
    for p in sorted(set(a) - set(b)):
        problems["missing (in expected, not in actual)"].append(p)
    for p in sorted(set(b) - set(a)):
        problems["extra (in actual, not in expected)"].append(p)
    for p in sorted(set(a) & set(b)):
        ea, eb = a[p], b[p]
        if ea["type"] != eb["type"]:
            problems["entry type"].append(f"{p}: {ea['type']} != {eb['type']}")
            continue
        for key in ("size", "content", "target", "rdev", "mode", "owner", "xattrs"):
            if ea.get(key) != eb.get(key):
                problems[key].append(f"{p}: {ea.get(key)!r} != {eb.get(key)!r}")
        if ea["mtime"] != eb["mtime"]:
            problems[f"mtime of {ea['type']}"].append(f"{p}: {ea['mtime']} != {eb['mtime']}")
    nfiles = sum(1 for e in a.values() if e["type"] == "file")
    nbytes = sum(e.get("size", 0) for e in a.values())
    if not problems:
        print(
            f"MATCH: {len(a)} entries ({nfiles} files, {nbytes} bytes) identical in "
            "content, type, mode, owner, size, symlink target, xattrs and mtime"
        )
        return 0
    print(f"DIFFERENT: expected {expected} ({len(a)} entries), actual {actual} ({len(b)} entries)")
    for what, items in problems.items():
        print(f"  {what}: {len(items)} entries differ, e.g.")
        for it in items[:5]:
            print(f"    {it}")
    return 1


# ------------------------------------------------------------------- report


def load(path):
    data = defaultdict(lambda: defaultdict(dict))  # tool -> metric -> run -> value
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            run, tool, metric, value = line.split("\t", 3)
            data[tool][metric][int(run)] = value
    return data


def num(v):
    try:
        return float(v)
    except ValueError:
        return None


def per_run(data, tool, metric):
    """run -> float for one figure. 'peak_rss_kib' is the max over all the
    tool's *_rss_kib records of that run."""
    if metric == "peak_rss_kib":
        out = {}
        for m, runs in data[tool].items():
            if m.endswith("_rss_kib"):
                for r, v in runs.items():
                    x = num(v)
                    if x is not None:
                        out[r] = max(out.get(r, 0.0), x)
        return out
    return {r: num(v) for r, v in data[tool].get(metric, {}).items() if num(v) is not None}


def median(d):
    return statistics.median(d.values()) if d else None


def fmt_s(x):
    return "-" if x is None else f"{x:.2f}"


def fmt_mib(x):
    return "-" if x is None else f"{x / 2**20:.1f}"


def fmt_kib_as_mib(x):
    return "-" if x is None else f"{x / 1024:.0f}"


def fmt_ratio(x):
    return "-" if x is None else f"{x:.2f}x"


def table(header, rows):
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    lines = []
    for r in [header] + rows:
        cells = [str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(cells).rstrip())
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


FIGURES = [
    # key, label, formatter
    ("snap1_s", "first snapshot, state A (s)", fmt_s),
    ("snap2_s", "second snapshot, state B (s)", fmt_s),
    ("added_bytes", "store growth by 2nd snapshot (MiB)", fmt_mib),
    ("restore_s", "restore state A (s) [dot: reset in place]", fmt_s),
    ("peak_rss_kib", "peak RSS, all commands (MiB)", fmt_kib_as_mib),
    ("store_after_A_bytes", "store size after 1st snapshot (MiB)", fmt_mib),
    ("init_s", "repository init (s)", fmt_s),
]

RATIOS = [
    # key, label, dot target (<=)
    ("snap1_s", "first snapshot", 0.5),
    ("snap2_s", "second snapshot", 0.5),
    ("restore_s", "restore A (dot reset vs full restore)", 0.3),
    ("peak_rss_kib", "peak memory", 1.0),
    ("added_bytes", "bytes added by 2nd snapshot", None),
]


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def report(path):
    data = load(path)
    runs = sorted({r for t in data.values() for m in t.values() for r in m})
    out = []
    n = len(runs)
    a_bytes = median(per_run(data, "all", "pgdata_A_bytes"))
    b_bytes = median(per_run(data, "all", "pgdata_B_bytes"))
    files = median(per_run(data, "all", "pgdata_A_files"))
    out.append(
        f"runs: {n}; data directory: state A {fmt_mib(a_bytes)} MiB in {files and int(files)} files, "
        f"state B {fmt_mib(b_bytes)} MiB"
    )
    orders = data["all"].get("order", {})
    if orders:
        out.append("snapshot order per run: " + "; ".join(f"{r}: {orders[r]}" for r in sorted(orders)))
    out.append("")
    out.append(f"Medians over {n} run(s)")
    rows = []
    for key, label, f in FIGURES:
        rows.append([label] + [f(median(per_run(data, t, key))) for t in TOOLS])
    out.append(table(["figure"] + TOOLS, rows))
    out.append("")

    out.append("Ratios to restic (ratio of the medians; per-run dot/restic in brackets)")
    rows = []
    for key, label, target in RATIOS:
        med = {t: median(per_run(data, t, key)) for t in TOOLS}
        r = {t: ratio(med[t], med["restic"]) for t in TOOLS}
        dot_runs = per_run(data, "dot", key)
        restic_runs = per_run(data, "restic", key)
        pr = [ratio(dot_runs.get(x), restic_runs.get(x)) for x in runs]
        pr_s = "[" + " ".join(fmt_ratio(x) for x in pr) + "]"
        if target is None:
            tgt, ok = "-", "-"
        else:
            tgt = f"<= {target}x"
            ok = "-" if r["dot"] is None else ("yes" if r["dot"] <= target else "NO")
        rows.append([label, fmt_ratio(r["dot"]) + " " + pr_s, fmt_ratio(r["borg"]), fmt_ratio(r["casync"]), tgt, ok])
    out.append(table(["figure", "dot/restic", "borg/restic", "casync/restic", "dot target", "met"], rows))
    out.append("")

    out.append("Bytes added to each store by the second snapshot (median)")
    med = {t: median(per_run(data, t, "added_bytes")) for t in TOOLS}
    rows = [[t, f"{int(med[t]):,}" if med[t] is not None else "-", fmt_mib(med[t])] for t in TOOLS]
    out.append(table(["tool", "bytes", "MiB"], rows))
    r = ratio(med["dot"], med["casync"])
    ok = "-" if r is None else ("yes" if r <= 1.0 else "NO")
    dot_runs = per_run(data, "dot", "added_bytes")
    ca_runs = per_run(data, "casync", "added_bytes")
    pr = " ".join(fmt_ratio(ratio(dot_runs.get(x), ca_runs.get(x))) for x in runs)
    out.append(f"dot/casync bytes added: {fmt_ratio(r)} [per run: {pr}]  target <= 1.0x  met: {ok}")
    out.append("")

    ver = []
    for t in TOOLS:
        v = data[t].get("verify_match", {})
        if v:
            ver.append(f"{t}: " + " ".join("match" if v[x] == "1" else "MISMATCH" for x in sorted(v)))
    fsck = data["dot"].get("fsck_ok", {})
    rows_after = data["dot"].get("pg_history_rows_after_reset", {})
    out.append("Verification against restic's restore of state A, per run: " + "; ".join(ver))
    if fsck:
        out.append("dot fsck per run: " + " ".join("ok" if fsck[x] == "1" else "FAILED" for x in sorted(fsck)))
    if rows_after:
        out.append(
            "pgbench_history rows after dot reset (state A has 0): "
            + " ".join(rows_after[x] for x in sorted(rows_after))
        )
    if any(v == "0" for v in data["dot"].get("verify_match", {}).values()):
        out.append("!!!!!!!! dot's reset did NOT reproduce state A in at least one run !!!!!!!!")
    print("\n".join(out))


def main(argv):
    if len(argv) == 3 and argv[1] == "report":
        report(argv[2])
        return 0
    if len(argv) == 4 and argv[1] == "tree-compare":
        return tree_compare(argv[2], argv[3])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
