"""``trainwitness export``: the verified facts of an audit as a CycloneDX ML-BOM, built and validated by cyclonedx-python-lib.

The BOM (CycloneDX 1.6, JSON) describes the weights as a ``machine-learning-model`` component (its
SHA-256, its signed licence expression) that depends on one ``data`` component per declared source
(licence, where to obtain it, the SHA-256 of the file there, sample count and size), and the training
program as an ``application`` component (entry point and source tree digest). Properties in the
``trainwitness:`` namespace carry what the audit established: the verdict and every check, the
segments replayed and how sure that makes the verdict, the bytes of data proven, and, with a licence
policy, the Debian ML-Policy class. A value the audit did not check (the declared training time, the
licences as such: they are signed declarations) is named ``trainwitness:declared:*``.

Only an accepted audit is exported: a BOM of a rejected claim would state facts that were not
established. The document is validated against the CycloneDX 1.6 JSON schema by the library's own
strict validator before it is written (a failure is a ``ValueError``: a bug here, not bad input).

SPDX 3 (AI and Dataset profiles) is not produced: its Python bindings (spdx-python-model, spdx-tools'
SPDX 3 support) are pre-release, and issue 17 asks for one format built and validated by its own library.
"""

from __future__ import annotations

import importlib.metadata
import json
from typing import Any

from trainwitness.commit.statement import PREDICATE_TYPE, Statement
from trainwitness.errors import MissingInputError
from trainwitness.verifier.report import Report

__all__ = ["FORMATS", "cyclonedx_json"]

FORMATS = ("cyclonedx",)


def _version() -> str:
    """This package's version (not ``trainwitness.__version__``: the package root's lazy exports name the prover)."""
    try:
        return importlib.metadata.version("trainwitness")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _cyclonedx() -> Any:
    try:
        import cyclonedx  # noqa: F401
    except ImportError as e:
        raise MissingInputError("export needs the 'licences' extra (cyclonedx-python-lib): pip install 'trainwitness[licences]'") from e
    return cyclonedx


def cyclonedx_json(report: Report, statement: Statement) -> str:
    """The CycloneDX 1.6 JSON document of an accepted audit; ``ValueError`` if the report did not accept."""
    if not report.accepted:
        raise ValueError("only an accepted audit is exported")
    _cyclonedx()
    from cyclonedx.model import ExternalReference, ExternalReferenceType, HashAlgorithm, HashType, Property, XsUri
    from cyclonedx.model.bom import Bom
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.model.license import LicenseExpression
    from cyclonedx.output.json import JsonV1Dot6
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    claim = statement.claim
    checks = [Property(name=f"trainwitness:check:{c.name}", value="passed" if c.passed else f"FAILED: {c.detail}") for c in report.checks]
    model_properties = [
        Property(name="trainwitness:verdict", value=report.verdict),
        *checks,
        Property(name="trainwitness:replay-mode", value=report.replay_mode),
        Property(name="trainwitness:segments-replayed", value=f"{len(report.segments)} of {report.segment_count}"),
        *(Property(name=f"trainwitness:detection-probability:{k}-forged", value=f"{v:.4f}") for k, v in report.detection().items()),
        Property(name="trainwitness:data-proven", value=f"{report.data_samples_read} samples, {report.data_bytes_read} of {report.data_total_bytes} bytes"),
        Property(name="trainwitness:predicate-type", value=PREDICATE_TYPE),
        Property(name="trainwitness:total-steps", value=str(claim.total_steps)),
        Property(name="trainwitness:hyperparameters", value=json.dumps(claim.hyperparameters, sort_keys=True)),
    ]
    if claim.declared_training_seconds is not None:
        model_properties.append(Property(name="trainwitness:declared:training-wall-seconds", value=f"{claim.declared_training_seconds:g}"))
    if report.distribution is not None:
        model_properties += [
            Property(name="trainwitness:ml-policy-class", value=report.distribution["class"]),
            Property(name="trainwitness:ml-policy-reason", value=report.distribution["reason"]),
            Property(name="trainwitness:licence-policy", value=report.distribution["licence_policy"]),
        ]
    model = Component(
        type=ComponentType.MACHINE_LEARNING_MODEL, name=statement.subject_name, bom_ref="model",
        hashes=[HashType(alg=HashAlgorithm.SHA_256, content=statement.subject_sha256)],
        licenses=[LicenseExpression(claim.weights_license)] if claim.weights_license else [],
        description="weights whose training was verified by trainwitness (see the trainwitness: properties)",
        properties=model_properties,
    )
    code = Component(
        type=ComponentType.APPLICATION, name=claim.entry_point, bom_ref="training-program",
        description="the training program, identified by its source tree digest (checked by the audit)",
        properties=[Property(name="trainwitness:source-tree-digest", value=str(claim.code["tree_digest"]))],
        external_references=[ExternalReference(
            type=ExternalReferenceType.VCS, url=XsUri(str(claim.code["source_uri"])),
            comment="declared by the prover, not verified: the source tree digest is what the audit checked",
        )] if claim.code.get("source_uri") else [],
    )
    data = []
    for number, source in enumerate(claim.manifest.sources):
        references = []
        if source.uri is not None and source.uri.lower().startswith(("http://", "https://", "s3://")):
            references.append(ExternalReference(type=ExternalReferenceType.DISTRIBUTION, url=XsUri(source.uri)))
        data.append(Component(
            type=ComponentType.DATA, name=source.name, bom_ref=f"data-{number}", description=source.description or None,
            licenses=[LicenseExpression(source.license)] if source.license not in ("", "NOASSERTION", "NONE") else [],
            hashes=[HashType(alg=HashAlgorithm.SHA_256, content=source.archive_sha256.removeprefix("sha256:"))] if source.archive_sha256 else [],
            external_references=references,
            properties=[
                Property(name="trainwitness:samples", value=str(source.num_samples)),
                Property(name="trainwitness:bytes", value=str(source.total_bytes)),
                Property(name="trainwitness:record-format", value=source.format),
                Property(name="trainwitness:manifest-root", value=claim.manifest.root),
            ],
        ))
    bom = Bom()
    bom.metadata.component = model
    bom.metadata.properties.add(Property(name="trainwitness:version", value=_version()))
    for component in (code, *data):
        bom.components.add(component)
    bom.register_dependency(model, [code, *data])
    text: str = JsonV1Dot6(bom).output_as_string(indent=2)
    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)
    if error is not None:
        raise ValueError(f"the CycloneDX document does not validate against the 1.6 schema: {error}")
    return text
