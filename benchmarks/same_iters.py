"""Final loss at the same ``--iters`` under two settings, on many image pairs (issue 19's "the same --iters never
gives a worse final loss").

Each pair runs ``nst_jax.stylize`` twice with the same iterations, once with setting A and once with B (keywords of
``nst_jax.stylize``, e.g. ``--a conv=lax --b conv=auto``), and the table gives both final losses and B / A - 1.
Loss values do not depend on machine load, so this needs no interleaving.

    python benchmarks/same_iters.py --a conv=lax --b conv=auto --size 256 --iters 100
    python benchmarks/same_iters.py --tiny          # seconds: tiny19 weights, 32 px, 3 iterations, two pairs
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_torch import PAINTINGS, PHOTOS, parse_setting, print_report, report_header  # noqa: E402


def final_losses(pairs, size: int, iters: int, weights: str, a: Dict[str, object], b: Dict[str, object]
                 ) -> List[Dict[str, object]]:
    """One row per (content, style): each setting's final loss and f+g, and B / A - 1."""
    import nst_jax
    from nst_jax.image import sample_path

    rows = []
    for content, style in pairs:
        row: Dict[str, object] = {"pair": f"{content} + {style}"}
        for name, kw in (("a", a), ("b", b)):
            r = nst_jax.stylize(sample_path(content), sample_path(style), size=size, iters=iters, weights=weights,
                                progress=False, **kw)
            row[name], row[f"{name}_fg"] = float(r.terms["total"]), int(r.n_fg)
        row["rel"] = row["b"] / row["a"] - 1.0
        rows.append(row)
        print(f"  {row['pair']}: {row['a']:.6g} / {row['b']:.6g}", flush=True)
    return rows


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--a", default="conv=lax", help="setting A, key=value:key=value (nst_jax.stylize keywords)")
    ap.add_argument("--b", default="", help="setting B (default: the defaults)")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--weights", default="vgg16-hed")
    ap.add_argument("--pairs", default="all", help="'all' (every bundled photo x painting) or 'content+style,...'")
    ap.add_argument("--tiny", action="store_true", help="smoke run: tiny19, 32 px, 3 iterations, two pairs")
    ap.add_argument("--out", default=None, help="also write the markdown to this file")
    args = ap.parse_args(argv)
    try:
        a, b = parse_setting(args.a), parse_setting(args.b)
    except ValueError as e:
        ap.error(str(e))
    if args.pairs == "all":
        pairs = [(c, s) for c in PHOTOS for s in PAINTINGS]
    else:
        pairs = [tuple(p.strip().split("+", 1)) for p in args.pairs.split(",") if p.strip()]
        if any(len(p) != 2 for p in pairs):
            ap.error("--pairs takes 'all' or content+style,...")
    if args.tiny:
        args.weights, args.size, args.iters, pairs = "tiny19", 32, 3, pairs[:2]
    rows = final_losses(pairs, args.size, args.iters, args.weights, a, b)
    lines = report_header(f"Final loss at the same iterations: A = `{args.a or 'defaults'}`, B = "
                          f"`{args.b or 'defaults'}`")
    lines += [f"- {args.size} px, {args.iters} iterations, {args.weights}", "",
              "| pair | A: loss (f+g) | B: loss (f+g) | B / A - 1 |", "|---|---|---|---|"]
    lines += [f"| {r['pair']} | {r['a']:.4g} ({r['a_fg']}) | {r['b']:.4g} ({r['b_fg']}) | {100 * r['rel']:+.1f}% |"
              for r in rows]
    lower = sum(r["rel"] < 0 for r in rows)
    worst = max(r["rel"] for r in rows)
    lines += ["", f"- B lower on {lower} of {len(rows)} pairs; largest increase {100 * worst:+.1f}%"]
    print_report(lines, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
