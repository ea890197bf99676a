"""What an audit fetches from a server: the store's index, the drawn checkpoints, the drawn records, and a constant.

    python benchmarks/remote_audit.py            # prints two Markdown tables (about a minute on 2 cores)

Table 1 publishes a digits run (``trainwitness publish``), serves it on loopback and verifies it by URL
for several sample sizes N, counting every byte received: it should be the attestation, key, weights
and index files (fixed per run) plus the files of the checkpoints at both ends of the drawn segments,
and nothing else (the "other" column is what is left: it must be 0). Table 2 serves a JSON-lines
dataset and fetches the records a number of random sample ids need, by range: bytes fetched against
the records' own bytes (the excess is the line ends and small gaps merged into one request).
"""

from __future__ import annotations

import random
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests.support.servers, tests.support.runs

from tests.support.runs import record_and_sign  # noqa: E402
from tests.support.servers import static_server  # noqa: E402

from trainwitness.data.manifest import SourceInput, build_manifest, read_manifest  # noqa: E402
from trainwitness.prover.publish import publish_run  # noqa: E402
from trainwitness.verifier import VerifyOptions, verify_run  # noqa: E402
from trainwitness.verifier.fetch import Fetcher  # noqa: E402
from trainwitness.verifier.remote_data import fetch_remote_sources  # noqa: E402

FIXED = ["attestation.json", "k.pub", "model.safetensors", "store/run.json", "store/index.jsonl", "store/manifest.jsonl"]


def store_table(root: Path) -> list[str]:
    run = record_and_sign(root / "run", overrides={"total_steps": 400, "checkpoint_interval": 20}, delta_every=5)
    site = publish_run(run.root, root / "site").out
    size = lambda rel: (site / rel).stat().st_size  # noqa: E731
    fixed = sum(size(p) for p in FIXED)
    total = sum(p.stat().st_size for p in site.rglob("*") if p.is_file())
    rows = ["| segments drawn (of 20) | checkpoint files fetched | bytes fetched | index, attestation, weights, key | drawn checkpoints (with delta chains) | other | whole published run |",
            "|---|---|---|---|---|---|---|"]
    with static_server(site) as (url, log):
        for n in (1, 3, 10):
            log.bytes_sent.clear()
            report = verify_run(f"{url}/attestation.json", f"{url}/store", f"{url}/model.safetensors", f"{url}/k.pub",
                                VerifyOptions(segments=n, seed=11, sandbox="off"))
            assert report.accepted, report.to_text()
            fetched = {p.lstrip("/") for p, b in log.bytes_sent.items() if b and p.startswith("/store/checkpoints/")}
            checkpoints = sum(size(p) for p in fetched)
            other = report.fetched_bytes - fixed - checkpoints
            rows.append(f"| {n} | {len(fetched)} | {report.fetched_bytes:,} | {fixed:,} | {checkpoints:,} | {other:,} | {total:,} |")
    return rows


def records_table(root: Path) -> list[str]:
    rng = random.Random(5)
    site = root / "data"
    site.mkdir()
    lines = [("{\"text\": \"" + "x" * rng.randrange(50, 400) + "\"}").encode() for _ in range(100_000)]
    (site / "corpus.jsonl").write_bytes(b"".join(line + b"\n" for line in lines))
    summary = build_manifest([SourceInput("corpus", site / "corpus.jsonl", license="CC0-1.0")], root / "m.jsonl")
    manifest = read_manifest(root / "m.jsonl", summary)
    rows = ["| samples needed (of 100,000) | records' bytes | bytes fetched | requests | dataset |", "|---|---|---|---|---|"]
    with static_server(site) as (url, _):
        for n in (32, 640, 6400):
            needed = rng.sample(range(100_000), n)
            fetcher = Fetcher()
            fetch_remote_sources(fetcher, manifest, {"corpus": f"{url}/corpus.jsonl"}, needed, root / f"scratch-{n}")
            own = sum(len(lines[i]) for i in needed)
            rows.append(f"| {n:,} | {own:,} | {fetcher.bytes_fetched:,} | {fetcher.requests:,} | {summary.total_bytes + len(lines):,} |")
    return rows


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        print("\n".join(store_table(Path(tmp))))
        print()
        print("\n".join(records_table(Path(tmp))))


if __name__ == "__main__":
    main()
