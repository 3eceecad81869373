"""Multi-step software releases across services and databases, run as Dagster jobs.

`release_pipelines.ReleaseProductComponent` is the `dg` component (registered for `dg` under the
`dagster_dg_cli.registry_modules` entry point). It is imported on first access (PEP 562), so
importing `release_pipelines.core` stays free of Dagster.
"""

__version__ = "0.1.0"
__all__ = ["ReleaseProductComponent"]


def __getattr__(name: str):
    if name == "ReleaseProductComponent":
        # lazy: Dagster is loaded only when someone asks for the component
        from release_pipelines.components.release_product.component import ReleaseProductComponent

        return ReleaseProductComponent
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
