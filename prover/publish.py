"""``trainwitness publish``: lay a signed run out for static hosting (a web server or a bucket).

    OUT/
      index.html               a short page: what is here and the command that verifies it
      attestation.json         the DSSE envelope
      <subject name>           the weights file the attestation names (e.g. model.safetensors)
      <key>.pub                the public key (never a private key)
      SHA256SUMS               sha256sum(1) lines for every file above and below
      store/run.json, store/index.jsonl, store/manifest.jsonl, [store/hints.jsonl], store/checkpoints/*

A verifier reads this tree from its URL (``verify URL/attestation.json --store URL/store ...``) and
fetches only the index files and the checkpoints of the segments it draws. Nothing is published
unchecked: the attestation must verify under the key, the weights must be its subject, and the
store's index must hold every step and checkpoint the attestation commits to. Files are copied
(never linked) and only the names the store format defines are copied: no temporary, lock or
private-key file leaves the run directory.
"""

from __future__ import annotations

import hashlib
import html
import shutil
from dataclasses import dataclass
from pathlib import Path

from trainwitness.commit.atomic import atomic_write
from trainwitness.commit.hints import HINTS_FILE
from trainwitness.commit.statement import Statement
from trainwitness.commit.store import INDEX_FILE, MANIFEST_FILE, RUN_FILE, find_checkpoint, read_index
from trainwitness.errors import MalformedInputError, MissingInputError
from trainwitness.identity.signing import MAX_ENVELOPE_BYTES, key_id, load_public_key, open_envelope

__all__ = ["PublishedRun", "publish_run"]


@dataclass(frozen=True)
class PublishedRun:
    out: Path
    files: tuple[str, ...]  # relative paths, in the order written
    total_bytes: int


def _find_key(run: Path) -> Path:
    keys = sorted(run.glob("*.pub"))
    if len(keys) != 1:
        raise MissingInputError(f"{run}: expected one public key (*.pub), found {len(keys)}; name it with --key")
    return keys[0]


def _copy(src: Path, out: Path, relpath: str, written: list[str]) -> int:
    if src.is_symlink() or not src.is_file():
        raise MalformedInputError(f"{src} is not a regular file; publish copies regular files only")
    dest = out / relpath
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    written.append(relpath)
    return dest.stat().st_size


def publish_run(
    run: Path, out: Path, *, attestation: Path | None = None, store: Path | None = None, weights: Path | None = None,
    key: Path | None = None, base_url: str | None = None,
) -> PublishedRun:
    """Copy a signed run (``run/attestation.json``, ``run/store``, the subject, the one ``*.pub``) to ``out``.

    Raises ``MissingInputError`` for a missing piece, ``MalformedInputError`` when ``out`` is not a
    new or empty directory, and ``SignatureError`` when the attestation does not verify under the key.
    """
    attestation = attestation or run / "attestation.json"
    store = store or run / "store"
    key = key or _find_key(run)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise MalformedInputError(f"{out} is not empty; publish into a new directory")
    if not attestation.is_file():
        raise MissingInputError(f"attestation {attestation} does not exist")
    envelope = attestation.read_bytes()
    if len(envelope) > MAX_ENVELOPE_BYTES:
        raise MalformedInputError(f"attestation {attestation} is over {MAX_ENVELOPE_BYTES} bytes")
    public = load_public_key(key)
    statement = Statement.from_payload(open_envelope(envelope, public))
    weights = weights or run / statement.subject_name
    if not weights.is_file():
        raise MissingInputError(f"weights file {weights} (the attestation's subject {statement.subject_name}) does not exist")
    digest = hashlib.sha256()
    with open(weights, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != statement.subject_sha256:
        raise MalformedInputError(f"{weights} is not the attested subject (its sha256 differs)")
    claim = statement.claim
    index = read_index(store)
    if len(index.steps) != claim.total_steps or [c.step for c in index.checkpoints] != claim.checkpoint_steps:
        raise MalformedInputError(f"store {store} does not hold every step and checkpoint the attestation commits to")

    out.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    total = _copy(attestation, out, "attestation.json", written)
    total += _copy(weights, out, statement.subject_name, written)
    total += _copy(key, out, key.name, written)
    store_files = [RUN_FILE, INDEX_FILE, MANIFEST_FILE] + ([HINTS_FILE] if claim.exact is not None else [])
    for name in store_files:
        if name == RUN_FILE and not (store / name).exists():
            continue
        total += _copy(store / name, out, f"store/{name}", written)
    for step in claim.checkpoint_steps:
        relpath = find_checkpoint(store, step)
        total += _copy(store / relpath, out, f"store/{relpath}", written)
    sums = "".join(f"{_sha256(out / p)}  {p}\n" for p in written)
    atomic_write(out / "SHA256SUMS", sums.encode("utf-8"))
    written.append("SHA256SUMS")
    atomic_write(out / "index.html", _index_page(statement, key.name, public_key_id=key_id(public), base_url=base_url).encode("utf-8"))
    written.append("index.html")
    return PublishedRun(out=out, files=tuple(written), total_bytes=total)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _index_page(statement: Statement, key_name: str, public_key_id: str, base_url: str | None) -> str:
    base = (base_url or "https://HOST/PATH").rstrip("/")
    e = html.escape
    command = (
        f"trainwitness verify {base}/attestation.json --store {base}/store "
        f"--weights {base}/{statement.subject_name} --key {base}/{key_name} --segments 10"
    )
    sources = "".join(
        f"<li><code>{e(s.name)}</code>: licence <code>{e(s.license)}</code>, {s.num_samples} samples"
        + (f", obtainable from <code>{e(s.uri)}</code>" if s.uri else "") + "</li>"
        for s in statement.claim.manifest.sources
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{e(statement.subject_name)}: training attestation</title>
<style>body{{font-family:sans-serif;max-width:50em;margin:2em auto;line-height:1.45}}code,pre{{background:#f4f4f4}}pre{{padding:.6em;white-space:pre-wrap}}</style>
</head><body>
<h1>{e(statement.subject_name)}</h1>
<p>Weights with a signed <a href="https://in-toto.io/">in-toto</a> attestation of how they were trained
(<code>trainwitness</code>). Subject SHA-256: <code>{e(statement.subject_sha256)}</code>.
Signing key id: <code>{e(public_key_id)}</code> (compare it with one the publisher announces elsewhere).</p>
<h2>Verify</h2>
<pre>{e(command)}</pre>
<p>The verifier fetches the store's index and only the checkpoints of the segments it draws at random.</p>
<h2>Files</h2>
<ul><li><a href="attestation.json">attestation.json</a></li><li><a href="{e(statement.subject_name)}">{e(statement.subject_name)}</a></li>
<li><a href="{e(key_name)}">{e(key_name)}</a> (public key)</li><li><a href="SHA256SUMS">SHA256SUMS</a></li><li><code>store/</code>: index and checkpoints</li></ul>
<h2>Declared data (signed, checked by the verifier)</h2><ul>{sources}</ul>
</body></html>
"""
