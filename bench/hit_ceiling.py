"""How much of a viewer's fresh pick any 10 titles can hold, from the workload's own odds.

    python bench/hit_ceiling.py [--alpha 0.9] [--date 2025-04-13]

A viewer's first request of a day is either their followed series' next episode or a
fresh pick: half the time from their edge's taste, half from their favourite genre at
that edge (``edgecache.simulate.workload``). With the true probabilities of that mix (which no
model sees), the best 9 and 10 titles hold this share of the pick on average: the
ceiling of per-user hit@10 on fresh picks.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from edgecache.settings import WorkloadParams
from edgecache.simulate.workload import GENRES, build_workload, day_index, item_probs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alpha", type=float, default=0.9)
    parser.add_argument("--date", default="2025-04-13")
    parser.add_argument("--every", type=int, default=7, help="sample every n-th viewer")
    args = parser.parse_args(argv)
    wl = build_workload(WorkloadParams(alpha=args.alpha))
    probs = item_probs(wl, day_index(args.date))
    in_genre = wl.item_genre[None, :] == np.arange(len(GENRES))[:, None]
    viewers = range(0, wl.params.users, args.every)
    mass = np.zeros(2)
    for u in viewers:
        e, g = wl.user_edge[u], wl.user_genre[u]
        pg = probs[e] * in_genre[g]
        pg = pg / pg.sum() if pg.sum() > 0 else probs[e]
        top = np.sort(0.5 * probs[e] + 0.5 * pg)[::-1]
        mass += [top[:9].sum(), top[:10].sum()]
    mass /= len(viewers)
    print(f"alpha {args.alpha}: best 9 titles hold {mass[0]:.3f}, best 10 hold {mass[1]:.3f} of a fresh pick")
    return 0


if __name__ == "__main__":
    sys.exit(main())
