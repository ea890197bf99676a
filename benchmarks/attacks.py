"""Red-team benchmark: every forgery in the catalogue, its measured detection rate against the prediction.

    PYTHONPATH=src:. python benchmarks/attacks.py [--seeds 100] [--sample 5] [--fraction 0.1]
        [--honest-seeds 20] [--json out.json] [--markdown out.md] [--results docs/REDTEAM.md]

One honest run (``--steps`` steps at interval 4: steps/4 segments) is forged once per attack; the
verifier is then run once per sampling seed 0..seeds-1 with ``--segments N`` and once with
``--all``. For a forgery of F of M segments the prediction is 1 - C(M-F, N)/C(M, N) (sampling
without replacement, ``detection_probability``), never below 1 - (1 - f)^N. Each seed's verdict is
also compared with the exact prediction for its own draw ("draw includes a forged segment"):
"disagree" must be 0. (The verifier's dataset digest is computed once per forgery and reused
across its seeds; replay runs in-process, ``--sandbox off``, as the sandbox is not under test.) Then ``--honest-seeds`` honest runs, one per training seed, must all verify.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the forgers live in tests/support

from machine_info import describe, machine  # noqa: E402
from tests.support.forgers import ATTACKS, forged_segments, honest_run, measure, verdict  # noqa: E402
from tests.support.merkle_forgers import different_index_proof, inner_node_as_leaf  # noqa: E402
from tests.support.runs import DIGITS, record_and_sign  # noqa: E402
from tests.support.steering import steer_every_checkpoint  # noqa: E402

from trainwitness.commit.hints import DEFAULT_EXACT  # noqa: E402
from trainwitness.commit.merkle import verify_inclusion  # noqa: E402
from trainwitness.display import escape_markdown  # noqa: E402
from trainwitness.errors import CommitmentError  # noqa: E402
from trainwitness.verifier import VerifyOptions, verify_run  # noqa: E402
from trainwitness.verifier.bounded import BOUND  # noqa: E402
from trainwitness.verifier.draw import detection_probability  # noqa: E402


def _merkle_rows(trials: int) -> list[dict[str, object]]:
    rng = random.Random(0)
    rows = []
    for name, what, forge in (
        ("merkle-inner-node-as-leaf", "an inner node's children presented as one leaf, with the path above it",
         lambda leaves, i, j: inner_node_as_leaf(leaves, min(i, len(leaves) - 2))),
        ("merkle-proof-for-other-index", "leaf i with the inclusion proof made for leaf j",
         lambda leaves, i, j: different_index_proof(leaves, i, j)),
    ):
        caught = 0
        for _ in range(trials):
            n = rng.randint(2, 200)
            i, j = rng.sample(range(n), 2)
            leaf, proof, root = forge([b"leaf-%d" % k for k in range(n)], i, j)
            try:
                verify_inclusion(root, leaf, proof)
            except CommitmentError:
                caught += 1
        rows.append({"attack": name, "what": what, "caught_by": "commitments", "forged": "-", "segments": "-",
                     "sample": "-", "predicted": 1.0, "with_replacement": 1.0, "measured": caught / trials,
                     "trials": trials, "disagree": trials - caught, "all": "rejected" if caught == trials else "ACCEPTED"})
    return rows


def _steering_rows(work: Path, fraction_of_bound: float = 0.5) -> list[dict[str, object]]:
    """The steering forger (tests/support/steering.py) against each mode: it re-trains a run recorded with 2
    threads, moving every checkpoint by ``fraction_of_bound`` x the bounded-mode bound x its update in
    a random direction (back on the grid, with fresh hints, in exact mode), re-signs, and is verified
    on every segment: with 1 thread in exact and bounded mode, bitwise with the recorded 2 (another
    thread count is refused before replay without exact mode)."""
    rows = []
    for mode, exact in (("plain recording", None), ("exact mode", DEFAULT_EXACT)):
        run = record_and_sign(work / f"steer-{mode.split()[0]}", DIGITS, {"total_steps": 60, "checkpoint_interval": 20},
                              threads=2, exact=exact)
        steer_every_checkpoint(run, fraction_of_bound, exact)
        for bounded in ((False, True) if exact is None else (False,)):
            report = verify_run(run.attestation, run.store, run.weights, run.public_key,
                                VerifyOptions(segments=None, sandbox="off", threads=1 if bounded or exact else None, bounded=bounded))
            distances = [s.distance.overall for s in report.segments if s.distance is not None]
            rows.append({"recorded": mode, "verified": "bounded" if bounded else "bitwise" if exact is None else "exact",
                         "nudge": fraction_of_bound * BOUND, "verdict": "ACCEPTED" if report.accepted else "rejected",
                         "distance_max": max(distances) if distances else None, "segments": len(report.segments)})
    return rows


def run(args: argparse.Namespace) -> dict[str, object]:
    started = time.time()
    work = Path(tempfile.mkdtemp(prefix="trainwitness-attacks-"))
    honest = honest_run(work / "honest", {"total_steps": args.steps, "checkpoint_interval": 4, "hidden": 32})
    m = honest.segment_count()
    rows: list[dict[str, object]] = []
    for number, attack in enumerate(ATTACKS):
        forged = forged_segments(attack, m, args.fraction)
        forgery = attack.build(honest, work / attack.name, forged)
        f = len(forgery.forged) / m if forgery.forged else 1.0
        # Each attack gets its own seeds, so rows are independent samples, not one draw sequence reused.
        count = args.seeds if attack.sampled else min(args.seeds, 20)
        seeds = range(number * args.seeds, number * args.seeds + count)
        result = measure(forgery, m, args.sample, seeds, caught_on_every_draw=not attack.sampled)
        all_accepted, all_check = verdict(forgery, None, None)
        rows.append({
            "attack": attack.name, "what": attack.what, "caught_by": ",".join(sorted(result.checks | {all_check} - {""})),
            "forged": len(forgery.forged) if forgery.forged else "all", "segments": m, "sample": args.sample,
            "predicted": detection_probability(m, args.sample, f) if forgery.forged and attack.sampled else 1.0,
            "with_replacement": 1 - (1 - f) ** args.sample, "measured": result.rate, "trials": len(result.outcomes),
            "disagree": result.disagreements, "all": "ACCEPTED" if all_accepted else "rejected",
        })
        print(f"{attack.name}: measured {result.rate:.3f} over {len(result.outcomes)} seeds", file=sys.stderr)
    rows.extend(_merkle_rows(args.merkle_trials))
    honest_verdicts = []
    for seed in range(args.honest_seeds):
        h = honest_run(work / f"honest-{seed}", {"total_steps": 40, "checkpoint_interval": 4, "hidden": 32,
                                                 "seed": seed, "data_seed": 1000 + seed})
        honest_verdicts.append(verdict(h, None, None)[0])
    steering = _steering_rows(work)
    return {
        "command": " ".join(["PYTHONPATH=src:. python benchmarks/attacks.py", *sys.argv[1:]]),
        "steering": steering,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "machine_line": describe(machine()),
        "seconds": round(time.time() - started, 1),
        "rows": rows,
        "honest": {"runs": len(honest_verdicts), "false_rejects": honest_verdicts.count(False)},
    }


def markdown(result: dict[str, object]) -> str:
    def pct(x: object) -> str:
        return f"{x:.1%}" if isinstance(x, float) else str(x)

    lines = [
        "| attack | caught by | forged F / M | N | predicted 1-C(M-1-F,N)/C(M-1,N) | 1-(1-f)^N | measured | trials | disagree | --all |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:  # type: ignore[attr-defined]
        lines.append(
            f"| {escape_markdown(r['attack'])} | {escape_markdown(r['caught_by'])} | {r['forged']} / {r['segments']} | {r['sample']} | {pct(r['predicted'])} "
            f"| {pct(r['with_replacement'])} | {pct(r['measured'])} | {r['trials']} | {r['disagree']} | {r['all']} |"
        )
    lines += ["", "Steering forger (every checkpoint moved by half the bounded-mode bound x its update, re-signed; "
              "recorded with 2 threads, verified with 1):", "",
              "| recorded | verified | nudge (of a segment's update) | verdict | largest distance seen |", "|---|---|---|---|---|"]
    for r in result["steering"]:  # type: ignore[attr-defined]
        distance = "-" if r["distance_max"] is None else f"{r['distance_max']:.2e}"
        lines.append(f"| {r['recorded']} | {r['verified']} | {r['nudge']:.1e} | {r['verdict']} | {distance} |")
    honest = result["honest"]
    lines.append("")
    lines.append(f"Honest runs: {honest['runs']} training seeds, every segment replayed, "  # type: ignore[index]
                 f"false rejects: {honest['false_rejects']}.")  # type: ignore[index]
    lines.append(f"Measured {result['date']} on {result['machine_line']} in {result['seconds']} s with `{result['command']}`.")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--steps", type=int, default=160, help="honest run length; segments = steps / 4")
    parser.add_argument("--fraction", type=float, default=0.1, help="forged fraction of segments")
    parser.add_argument("--sample", type=int, default=5, help="segments the verifier replays (N)")
    parser.add_argument("--seeds", type=int, default=100, help="verifier sampling seeds per sampled attack")
    parser.add_argument("--honest-seeds", type=int, default=20)
    parser.add_argument("--merkle-trials", type=int, default=1000)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path, help="write the tables to this file")
    parser.add_argument("--results", type=Path, help="replace the tables between the redteam markers in this file (docs/REDTEAM.md)")
    args = parser.parse_args()
    result = run(args)
    table = markdown(result)
    print(table)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if args.markdown:
        args.markdown.write_text(table)
    if args.results:
        from run import update_results  # benchmarks/run.py, beside this file

        update_results(args.results, table, "<!-- redteam:begin -->", "<!-- redteam:end -->")
    rows = result["rows"]
    bad = [r["attack"] for r in rows if r["all"] != "rejected" or r["disagree"]]  # type: ignore[attr-defined]
    within = all(  # measured within 4 binomial standard errors of the prediction
        abs(r["measured"] - r["predicted"]) <= 4 * math.sqrt(r["predicted"] * (1 - r["predicted"]) / r["trials"]) + 1e-9
        for r in rows  # type: ignore[attr-defined]
    )
    # Bounded mode is expected to accept the steering forger (that is its slack); every other mode must not.
    steered = [r for r in result["steering"] if r["verified"] != "bounded" and r["verdict"] != "rejected"]  # type: ignore[attr-defined]
    return 0 if not bad and not steered and within and result["honest"]["false_rejects"] == 0 else 1  # type: ignore[index]


if __name__ == "__main__":
    sys.exit(main())
