"""nvcc with a resource check, for the CUDA build (setup.py puts it in front of nvcc via PYTORCH_NVCC).

    python3 scripts/nvcc_resources.py /path/to/nvcc <nvcc arguments...>

Runs nvcc unchanged (setup.py adds ``-Xptxas=-v``), passes its output through to the build log, and reads
ptxas's report of every kernel per architecture (registers, spill stores/loads, static shared memory).
Prints one line per kernel and fails the compile (exit 1, naming the kernel) when a kernel spills or uses
more than 48 KB of static shared memory, so that a slow kernel cannot slip into a build unnoticed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

SHARED_LIMIT = 48 * 1024

COMPILING = re.compile(r"Compiling entry function '([^']+)' for '(sm_\w+)'")
PROPERTIES = re.compile(r"Function properties for (\S+)")
SPILLS = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
USED = re.compile(r"Used (\d+) registers(?:.*?(\d+) bytes smem)?")


def parse(log: str) -> list[dict]:
    """ptxas -v output -> ``[{name, arch, regs, spill_stores, spill_loads, stack, smem}]`` per entry function."""
    kernels, current, props = [], None, None
    for line in log.splitlines():
        if m := COMPILING.search(line):
            current = dict(name=m.group(1), arch=m.group(2), regs=0, spill_stores=0, spill_loads=0, stack=0, smem=0)
            kernels.append(current)
        elif m := PROPERTIES.search(line):
            props = m.group(1)
        elif (m := SPILLS.search(line)) and current is not None and props == current["name"]:
            current.update(stack=int(m.group(1)), spill_stores=int(m.group(2)), spill_loads=int(m.group(3)))
        elif (m := USED.search(line)) and current is not None:
            current.update(regs=int(m.group(1)), smem=int(m.group(2) or 0))
    return kernels


def demangle(names: list[str]) -> dict[str, str]:
    tool = shutil.which("cu++filt") or shutil.which("c++filt")
    if not tool or not names:
        return {n: n for n in names}
    out = subprocess.run([tool], input="\n".join(names), capture_output=True, text=True).stdout.splitlines()
    return dict(zip(names, out, strict=False)) if len(out) == len(names) else {n: n for n in names}


def short(name: str) -> str:
    """``void yolox_fast::(anonymous namespace)::score_kernel<float, true>(float const*, ...)`` ->
    ``score_kernel<float, true>``: no return type, namespaces of ours, or argument list."""
    name = re.sub(r"^void ", "", name).replace("yolox_fast::(anonymous namespace)::", "")
    if name.endswith(")"):  # drop the argument list: from the "(" matching the last ")"
        depth = 0
        for i in range(len(name) - 1, -1, -1):
            depth += {")": 1, "(": -1}.get(name[i], 0)
            if depth == 0:
                name = name[:i]
                break
    return name


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: nvcc_resources.py NVCC [ARGS...]", file=sys.stderr)
        return 2
    proc = subprocess.run(argv, capture_output=True, text=True)
    sys.stdout.write(proc.stdout)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        return proc.returncode
    kernels = parse(proc.stderr)
    # ptxas's own lines are summarised below; anything else (warnings) goes through
    rest = [ln for ln in proc.stderr.splitlines() if not ln.startswith("ptxas info") and not SPILLS.search(ln)]
    if rest:
        sys.stderr.write("\n".join(rest) + "\n")
    source = next((a for a in argv if a.endswith(".cu")), "?")
    names = demangle(sorted({k["name"] for k in kernels}))
    bad = []
    for k in kernels:
        label = short(names[k["name"]])
        print(f"ptxas {source} {k['arch']}: {label}: {k['regs']} registers, {k['spill_stores']}/{k['spill_loads']} "
              f"bytes spill stores/loads, {k['stack']} bytes stack, {k['smem']} bytes static smem")
        if k["spill_stores"] or k["spill_loads"]:
            bad.append(f"{label} ({k['arch']}) spills {k['spill_stores']} bytes to local memory")
        if k["smem"] > SHARED_LIMIT:
            bad.append(f"{label} ({k['arch']}) uses {k['smem']} bytes of static shared memory (limit {SHARED_LIMIT})")
    if bad:
        print(f"error: {source}: " + "; ".join(bad), file=sys.stderr)
        if "-o" in argv[:-1]:  # no object left behind for a later build to link
            target = argv[argv.index("-o") + 1]
            if os.path.isfile(target):
                os.remove(target)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
