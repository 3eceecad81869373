"""OpenLineage run events for release steps (openlineage-python), only when configured.

Configured means what the client itself reads: `OPENLINEAGE_URL`, `OPENLINEAGE_CONFIG` or an
`openlineage.yml` in the working directory or `~/.openlineage`, or `OPENLINEAGE__TRANSPORT__*`
variables; `OPENLINEAGE_DISABLED=true` turns it off. Unconfigured, nothing is imported or sent
(the client would fall back to printing events on the console).

Each step is one OpenLineage run: job `<product>.<step>` (namespace `OPENLINEAGE_NAMESPACE`,
default `release_pipelines`), parent run = the release (its run id is derived from the release
id, so every step of one release, in any Dagster run, points at the same parent). A failure to
deliver an event is logged and never fails the release.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from release_pipelines.core.lineage import LineageDataset

PRODUCER = "https://github.com/release-pipelines/dagster-release-pipelines"
RELEASE_NAMESPACE = uuid.UUID("6f1d3c2a-8f55-4c1e-9d7e-2b0e6a1f5c42")  # uuid5 namespace of our run ids


def configured(environ: Mapping[str, str] | None = None, cwd: Path | None = None, home: Path | None = None) -> bool:
    env = os.environ if environ is None else environ
    if env.get("OPENLINEAGE_DISABLED", "").strip().lower() == "true":
        return False
    if env.get("OPENLINEAGE_URL") or env.get("OPENLINEAGE_CONFIG"):
        return True
    if any(k.startswith("OPENLINEAGE__TRANSPORT") for k in env):
        return True
    return ((cwd or Path.cwd()) / "openlineage.yml").is_file() or (
        (home or Path.home()) / ".openlineage" / "openlineage.yml").is_file()


def release_run_id(release_id: str) -> str:
    return str(uuid.uuid5(RELEASE_NAMESPACE, f"release/{release_id}"))


def step_run_id(release_id: str, step: str, dagster_run_id: str | None) -> str:
    return str(uuid.uuid5(RELEASE_NAMESPACE, f"release/{release_id}/{step}/{dagster_run_id or ''}"))


def dataset_namespace(url: str) -> str:
    """OpenLineage's naming: postgres://host:port for PostgreSQL, sqlite://<file> for SQLite."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        return f"postgres://{parsed.host or 'localhost'}:{parsed.port or 5432}"
    return f"{parsed.get_backend_name()}://{parsed.database or ''}"


@dataclass(frozen=True)
class StepRun:
    """One release step as an OpenLineage run."""

    product: str
    release_id: str
    step: str  # e.g. "migrate.shop_db", "contract.shop_db", "gates.shop_db"
    dagster_run_id: str | None = None

    @property
    def namespace(self) -> str:
        return os.environ.get("OPENLINEAGE_NAMESPACE", "release_pipelines")

    @property
    def run_id(self) -> str:
        return step_run_id(self.release_id, self.step, self.dagster_run_id)


class LineageEmitter:
    """Sends START / COMPLETE / FAIL for release steps through the configured transport."""

    def __init__(self, client: Any, log: Callable[[str], None] = print):
        self._client = client
        self._log = log

    @classmethod
    def from_env(cls, log: Callable[[str], None] = print) -> LineageEmitter | None:
        """None when OpenLineage is not configured: callers then send nothing at all."""
        if not configured():
            return None
        try:
            # openlineage-python costs ~0.9 s to import: only when lineage is configured
            from openlineage.client import OpenLineageClient

            return cls(OpenLineageClient(), log)
        except Exception as exc:  # noqa: BLE001 - a broken lineage config must not stop a release
            log(f"OpenLineage is configured but the client could not start: {type(exc).__name__}: {exc}")
            return None

    def emit(self, state: str, run: StepRun, outputs: Sequence[LineageDataset] = (),
             inputs: Sequence[LineageDataset] = (), error: str | None = None) -> None:
        try:
            self._client.emit(run_event(state, run, outputs, inputs, error))
        except Exception as exc:  # noqa: BLE001 - lineage is best effort, the release goes on
            self._log(f"OpenLineage {state} event for {run.step} not delivered: {type(exc).__name__}: {exc}")


def run_event(state: str, run: StepRun, outputs: Sequence[LineageDataset] = (),
              inputs: Sequence[LineageDataset] = (), error: str | None = None) -> Any:
    """The client's RunEvent for one step (imported lazily, see `LineageEmitter.from_env`)."""
    from openlineage.client.event_v2 import (
        InputDataset,
        Job,
        OutputDataset,
        Run,
        RunEvent,
        RunState,
    )
    from openlineage.client.facet_v2 import (
        data_quality_assertions_dataset,
        error_message_run,
        job_type_job,
        parent_run,
    )

    facets: dict[str, Any] = {"parent": parent_run.ParentRunFacet(
        run=parent_run.Run(runId=release_run_id(run.release_id)),
        job=parent_run.Job(namespace=run.namespace, name=f"{run.product}.release"),
        root=parent_run.Root(run=parent_run.RootRun(runId=release_run_id(run.release_id)),
                             job=parent_run.RootJob(namespace=run.namespace, name=f"{run.product}.release")),
    )}
    if error:
        facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(message=error, programmingLanguage="python")
    job_facets = {"jobType": job_type_job.JobTypeJobFacet(processingType="BATCH", integration="RELEASE_PIPELINES",
                                                          jobType="RELEASE_STEP")}
    quality = {
        d.name: {"dataQualityAssertions": data_quality_assertions_dataset.DataQualityAssertionsDatasetFacet(
            assertions=[data_quality_assertions_dataset.Assertion(assertion=a, success=ok, column=column)
                        for a, ok, column in d.assertions])}
        for d in inputs if d.assertions
    }
    return RunEvent(
        eventType=getattr(RunState, state),
        eventTime=datetime.now(UTC).isoformat(),
        run=Run(runId=run.run_id, facets=facets),
        job=Job(namespace=run.namespace, name=f"{run.product}.{run.step}", facets=job_facets),
        inputs=[InputDataset(namespace=d.namespace, name=d.name, facets=_dataset_facets(d),
                             inputFacets=quality.get(d.name, {})) for d in inputs],
        outputs=[OutputDataset(namespace=d.namespace, name=d.name, facets=_dataset_facets(d)) for d in outputs],
        producer=PRODUCER,
    )


def _dataset_facets(dataset: LineageDataset) -> dict[str, Any]:
    from openlineage.client.facet_v2 import (
        column_lineage_dataset,
        dataset_version_dataset,
        lifecycle_state_change_dataset,
        schema_dataset,
    )

    facets: dict[str, Any] = {}
    if dataset.fields or dataset.lifecycle == "DROP":  # no fields otherwise: not known (a gate's input)
        facets["schema"] = schema_dataset.SchemaDatasetFacet(
            fields=[schema_dataset.SchemaDatasetFacetFields(name=n, type=t) for n, t in dataset.fields.items()])
    if dataset.version:
        facets["version"] = dataset_version_dataset.DatasetVersionDatasetFacet(datasetVersion=dataset.version)
    if dataset.lifecycle:
        previous = (lifecycle_state_change_dataset.PreviousIdentifier(name=dataset.previous_name,
                                                                      namespace=dataset.namespace)
                    if dataset.previous_name else None)
        facets["lifecycleStateChange"] = lifecycle_state_change_dataset.LifecycleStateChangeDatasetFacet(
            lifecycleStateChange=lifecycle_state_change_dataset.LifecycleStateChange(dataset.lifecycle),
            previousIdentifier=previous)
    if dataset.column_sources:
        facets["columnLineage"] = column_lineage_dataset.ColumnLineageDatasetFacet(fields={
            column: column_lineage_dataset.Fields(inputFields=[
                column_lineage_dataset.InputField(namespace=ns, name=name, field=field)
                for ns, name, field in sources])
            for column, sources in dataset.column_sources.items()})
    return facets
