"""Interleaved A/B of two source trees of nst-jax: f+g time and peak memory of the same stylize run.

Each measurement is a fresh Python process with ``PYTHONPATH`` set to one tree, so both versions run in one session
on one machine, alternating A, B, A, B, ... (load drifts hit both alike). A run is ``nst_jax.stylize`` (the public
API both versions share) on the benchmark pair, after a short run that compiles everything; it reports seconds per
f+g (the second run's wall time, preparation included, over its f+g count: no compile, and no version's own account of
what compiling took) and the process's peak resident set (``ru_maxrss``: everything, compile included).

    git worktree add /tmp/nst-old <commit>            # the "before" tree
    python benchmarks/ab_versions.py --a /tmp/nst-old --b . --rounds 3 --size 256 --iters 20

Prints one line per run and the medians with the ratio B/A; ``--json`` writes them too.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

RUN = r"""
import json, resource, sys, time
import nst_jax
from nst_jax.image import sample_path
kw = dict(size={size}, weights={weights!r}, progress=False)
w = nst_jax.stylize(sample_path({content!r}), sample_path({style!r}), iters=2, **kw)   # compiles everything
t = time.perf_counter()
r = nst_jax.stylize(sample_path({content!r}), sample_path({style!r}), iters={iters}, **kw)
wall = time.perf_counter() - t
print(json.dumps({{"s_per_fg": wall / r.n_fg, "n_fg": r.n_fg, "compile_s": w.compile_seconds,
                  "final_loss": r.terms["total"],
                  "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def run_once(tree: Path, args) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree.resolve()), JAX_PLATFORMS="cpu")
    env.pop("JAX_COMPILATION_CACHE_DIR", None)  # compile anew in both: no cache shared between the versions
    code = RUN.format(size=args.size, iters=args.iters, weights=args.weights, content=args.content, style=args.style)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=tree)
    if out.returncode != 0:
        raise SystemExit(f"run in {tree} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--a", required=True, help="source tree A (the 'before')")
    ap.add_argument("--b", required=True, help="source tree B (the 'after')")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--weights", default="vgg16-hed")
    ap.add_argument("--content", default="blue_marble")
    ap.add_argument("--style", default="great_wave")
    ap.add_argument("--json", default=None, help="also write the runs and medians to this file")
    args = ap.parse_args(argv)
    trees = {"A": Path(args.a), "B": Path(args.b)}
    runs = {"A": [], "B": []}
    for k in range(args.rounds):
        for name in ("A", "B") if k % 2 == 0 else ("B", "A"):
            r = run_once(trees[name], args)
            runs[name].append(r)
            print(f"round {k + 1} {name}: {1e3 * r['s_per_fg']:.1f} ms per f+g, peak RSS {r['max_rss_mib']:.0f} MiB, "
                  f"compile {r['compile_s']:.1f} s, final loss {r['final_loss']:.6g}", flush=True)
    med = {n: {key: statistics.median(r[key] for r in rs) for key in ("s_per_fg", "max_rss_mib")}
           for n, rs in runs.items()}
    print(f"median ms per f+g: A {1e3 * med['A']['s_per_fg']:.1f}, B {1e3 * med['B']['s_per_fg']:.1f} "
          f"(B/A {med['B']['s_per_fg'] / med['A']['s_per_fg']:.3f}); median peak RSS MiB: A "
          f"{med['A']['max_rss_mib']:.0f}, B {med['B']['max_rss_mib']:.0f} "
          f"(B/A {med['B']['max_rss_mib'] / med['A']['max_rss_mib']:.3f})")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "runs": runs, "medians": med}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
