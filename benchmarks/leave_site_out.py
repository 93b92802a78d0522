"""How much accuracy is lost at an unseen site, and how much each adaptation variant recovers.

Target (cogimg issue 9): on the synthetic multi-site cohort (≥ 3 sites, medium difficulty),
the drop from in-site to out-of-site balanced accuracy for CN vs AD, and the share of that
drop each variant recovers; goal: the best variant recovers ≥ 50 % for at least one task.

Protocol: :class:`cogimg.paradigms.adaptation.protocol.LeaveSiteOut` on
``experiments/ad/lso_resnet10_t1.yaml`` — for every site, train on the others for a fixed
number of epochs (no model selection on the held-out site), score in-site (held-out 20 % of
the training sites) and out-of-site (the whole held-out site) with 95 % stratified
bootstrap CIs, then each variant (histstd, dann, coral, mmd retrain; adabn, tent adapt the
baseline model without labels). Recovered share = (adapted − out) / (in − out), on the
means over sites.

Run: ``nice -n 19 .venv/bin/python benchmarks/leave_site_out.py --data DIR`` where DIR is
``cogimg synth --out DIR --subjects 150 --spacing 4 --diseases ad --proportions CN=0.5,AD=0.5
--site-confound 0`` (made here when missing). Timings are wall clock on a shared machine.

Measured 2026-12-03 (``--data runs/bench_data/ad4mm_lso150 --epochs 30``; 65 CN + 65 AD, the
20 MCI that the unnamed default weight adds are not used; 20 min, partly beside another
benchmark). Balanced accuracy, mean over the three held-out sites (per site: in-site
n = 18, out-of-site n = 42-44, 95 % CI half-widths 0.11-0.22)::

    in-site 0.630   out-of-site 0.777   histstd 0.723   dann 0.801   coral 0.816
    mmd 0.583   adabn 0.785   tent 0.737
    per site in / out: site-1 0.556 / 0.705, site-2 0.722 / 0.818, site-3 0.611 / 0.810

There is **no in→out drop to recover** on this cohort: the baseline scores higher on the
unseen site than on held-out subjects of its own training sites, at every site, so the 50 %
goal is undefined here, not met. Two things stand in the way, neither settled by this run:
the in-site sets are 18 subjects (one subject moves BA ~5.6 points), and the generator's site
effect at medium difficulty is weak for a T1w CNN at 4 mm (stop-12 note: intensity features
lose only 0.97 → 0.93 at an unseen site). Next: a stronger site effect (``--difficulty hard``
or a larger scanner-contrast spread) and ≥ 300 subjects. MMD at weight 0.1 fell to chance
on two sites (0.523; 0.500, one class predicted).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="synthetic AD cohort (made if missing)")
    parser.add_argument("--subjects", type=int, default=150)
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks/leave_site_out"))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--variants", default="histstd,dann,coral,mmd,adabn,tent")
    parser.add_argument("--sites", default=None, help="held-out sites (default all)")
    parser.add_argument("--adaptation-weight", type=float, default=0.1)
    parser.add_argument("--tent-steps", type=int, default=3)
    args = parser.parse_args()

    if not (args.data / "participants.tsv").exists():
        subprocess.run([sys.executable, "-m", "cogimg", "synth", "--out", str(args.data), "--subjects",
                        str(args.subjects), "--spacing", "4", "--diseases", "ad", "--proportions",
                        "CN=0.5,AD=0.5", "--difficulty", "medium", "--site-confound", "0", "--no-progress"],
                       check=True)
    import pandas as pd

    from cogimg.paradigms.adaptation.protocol import Experiment, LeaveSiteOut, recovery_table

    exp = Experiment.from_yaml(ROOT / "experiments" / "ad" / "lso_resnet10_t1.yaml")
    exp.data_args.update(data_root=str(args.data), num_workers=0)
    exp.trainer_args["max_epochs"] = args.epochs
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    protocol = LeaveSiteOut(exp, args.out, tent_steps=args.tent_steps, tent_lr=1e-3)
    sites = args.sites.split(",") if args.sites else None
    rows = protocol.run([v for v in args.variants.split(",") if v], sites, args.adaptation_weight)
    wall = time.perf_counter() - start
    results = pd.DataFrame(rows)
    results.to_csv(args.out / "lso_results.csv", index=False, float_format="%.4f")
    with pd.option_context("display.width", 140, "display.float_format", "{:.3f}".format):
        print(results.drop(columns=["metric"]).to_string(index=False))
        print()
        summary = pd.DataFrame(recovery_table(rows))
        print(summary.to_string(index=False))
    in_site, out_site = summary["score"].iloc[0], summary["score"].iloc[1]
    best = summary.iloc[2:].sort_values("recovered", ascending=False).head(1)
    if in_site <= out_site:  # recovery_table leaves the shares undefined then
        print(f"\nno in→out drop to recover: in-site {in_site:.3f} ≤ out-of-site {out_site:.3f}")
    elif len(best):
        b = best.iloc[0]
        print(f"\nbest variant: {b['variant']} recovers {100 * b['recovered']:.0f}% of the in→out drop "
              f"(goal ≥ 50%)")
    print(f"{args.epochs} epochs, wall time {wall / 60:.1f} min on a shared CPU")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
