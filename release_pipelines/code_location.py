"""The default Dagster code location: every manifest under RELEASE_MANIFESTS (a file or a folder)
becomes jobs, sensors, schedules, assets and checks. The only module that builds definitions when
it is imported.

    RELEASE_MANIFESTS=path/to/release.yaml dagster dev -m release_pipelines.code_location

In a source checkout RELEASE_MANIFESTS defaults to examples/shop; an installed package has no
example and asks for RELEASE_MANIFESTS. A broken manifest fails the load with the same message
the CLI prints (file, line, field). Inside a `dg` project use the component instead
(`release_pipelines.components`).
"""

from release_pipelines.orchestration.definitions import build_definitions
from release_pipelines.resources import settings

defs = build_definitions(settings.manifests_location())
