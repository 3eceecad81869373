"""An Alembic project as its users have it, and the `Config` every common env.py works with.

Users point at a folder (with or without the ``alembic.ini`` that ``alembic init`` writes beside
it), at an ini file, or at a ``pyproject.toml`` with ``[tool.alembic]``. The Config reads those
files like the ``alembic`` command does (``%(here)s``, ``-n`` section, ``-x`` arguments), and the
database URL goes in as the ``sqlalchemy.url`` main option, in memory only: it never lands on disk.
"""

from __future__ import annotations

import configparser
import logging
import re
from argparse import Namespace
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic.config import Config
from sqlalchemy.engine import Connection

from release_pipelines.core.manifest import Database, MigrationsSource
from release_pipelines.resources.migration_safety import MigrationError

INI = "alembic.ini"
PYPROJECT = "pyproject.toml"


@dataclass(frozen=True)
class AlembicProject:
    """Where a project's scripts are and which configuration files describe it."""

    script_location: Path
    ini: Path | None = None
    toml: Path | None = None
    section: str = "alembic"
    engine: str | None = None
    x_arguments: tuple[str, ...] = ()

    @property
    def env_py(self) -> Path:
        return self.script_location / "env.py"

    def describe(self) -> str:
        files = [str(f) for f in (self.ini, self.toml) if f is not None]
        return f"{self.script_location}" + (f" ({', '.join(files)})" if files else "")


def find_project(
    location: str | Path | None = None,
    *,
    ini: str | Path | None = None,
    section: str = "alembic",
    engine: str | None = None,
    x_arguments: Sequence[str] = (),
) -> AlembicProject:
    """Resolve a folder and/or a configuration file to a project; one clear error if it is none."""
    for argument in x_arguments:
        if "=" not in argument:
            raise MigrationError(f"-x {argument!r}: expected key=value")
    config_file = Path(ini) if ini is not None else None
    if config_file is None and location is not None:
        config_file = _config_beside(Path(location))
    ini_file, toml_file = _split_config(config_file) if config_file else (None, None)
    if ini_file is not None or toml_file is not None:
        script_location = _script_location(ini_file, toml_file, section)
        if location is not None and Path(location).resolve() not in (
            script_location.resolve(),
            (config_file or Path()).resolve().parent,
        ):
            script_location = Path(location)
    elif location is not None:
        script_location = Path(location)
    else:
        raise MigrationError("give the Alembic folder (script location) or its alembic.ini")
    project = AlembicProject(
        script_location, ini_file, toml_file, section, engine, tuple(x_arguments)
    )
    if not script_location.is_dir():
        raise MigrationError(
            f"{script_location} does not exist: script_location must name the folder `alembic init` made"
        )
    if not project.env_py.is_file():
        raise MigrationError(
            f"{script_location} has no env.py, so it is not an Alembic project; "
            "create one with `alembic init` or point at the folder that has it"
        )
    return project


def project_for(database: Database, manifest_dir: str | Path) -> AlembicProject:
    """The project of a manifest database; its paths are relative to the manifest file."""
    source = database.migrations
    base = Path(manifest_dir)
    if isinstance(source, MigrationsSource):
        return find_project(
            base / source.path if source.path else None,
            ini=base / source.ini if source.ini else None,
            section=source.section,
            engine=source.engine,
        )
    return find_project(base / source)


def as_project(project: AlembicProject | str | Path) -> AlembicProject:
    return project if isinstance(project, AlembicProject) else find_project(project)


def _config_beside(location: Path) -> Path | None:
    """The ini or pyproject.toml of a folder: in it (a project root) or in its parent (what
    `alembic init alembic` lays out), when its script_location names that folder."""
    if location.is_file():
        return location
    for folder in (location, location.parent):
        for name in (INI, PYPROJECT):
            candidate = folder / name
            if not candidate.is_file():
                continue
            if folder == location and not (location / "env.py").is_file():
                return candidate  # a project root: its config says where the scripts are
            try:
                ini_file, toml_file = _split_config(candidate)
                found = _script_location(ini_file, toml_file, "alembic")
            except MigrationError:
                continue
            if found.resolve() == location.resolve():
                return candidate
    return None


def _split_config(path: Path) -> tuple[Path | None, Path | None]:
    """An ini and/or a pyproject.toml: `alembic init -t pyproject` writes both side by side."""
    if not path.is_file():
        raise MigrationError(f"{path} does not exist: point ini at the project's alembic.ini")
    if path.name.endswith(".toml"):
        ini = path.parent / INI
        return (ini if ini.is_file() else None), path
    toml = path.parent / PYPROJECT
    has_tool_alembic = toml.is_file() and re.search(
        r"^\[tool\.alembic\]", toml.read_text(encoding="utf-8"), re.MULTILINE
    )
    return path, (toml if has_tool_alembic else None)


def _script_location(ini: Path | None, toml: Path | None, section: str) -> Path:
    named = toml or ini
    config = Config(file_=ini, toml_file=toml, ini_section=section)
    try:
        if ini is not None and not config.file_config.has_section(section) and toml is None:
            raise MigrationError(
                f"{ini} has no [{section}] section; name the section with `section:` (alembic -n)"
            )
        value = config.get_alembic_option("script_location")
    except (configparser.Error, ValueError) as exc:
        raise MigrationError(f"{named} cannot be read: {str(exc).splitlines()[0]}") from None
    except AttributeError:
        raise MigrationError(
            f"{toml} needs Alembic >= 1.16 for [tool.alembic] (installed Alembic is older); "
            "use an alembic.ini"
        ) from None
    if not value or not isinstance(value, str):
        where = "[tool.alembic]" if toml is not None else f"[{section}]"
        raise MigrationError(
            f"{named} has no script_location in {where}; add `script_location = %(here)s/alembic` "
            "(the folder with env.py)"
        )
    if ":" in value and not Path(value).is_absolute() and not Path(value).exists():
        raise MigrationError(
            f"{named}: script_location {value!r} is a package resource; point at the folder instead"
        )
    path = Path(value)
    return path if path.is_absolute() else (named or Path()).resolve().parent / path


def make_config(
    project: AlembicProject,
    *,
    url: str | None = None,
    connection: Connection | None = None,
    **attributes: Any,
) -> Config:
    """The Config env.py sees: the project's files, `-x` arguments, the URL as main option
    (`%` escaped for configparser), the runner's connection under ``attributes["connection"]``."""
    config = Config(
        file_=project.ini,
        toml_file=project.toml,
        ini_section=project.section,
        cmd_opts=Namespace(x=list(project.x_arguments)),
    )
    config.set_main_option("script_location", str(project.script_location).replace("%", "%%"))
    engine = selected_engine(project, config)
    if url is not None:
        escaped = url.replace("%", "%%")
        config.set_main_option("sqlalchemy.url", escaped)
        if engine is not None:
            config.set_main_option("databases", engine)
            config.set_section_option(engine, "sqlalchemy.url", escaped)
        config.attributes["url"] = url
    if connection is not None:
        config.attributes["connection"] = connection
    config.attributes.update(attributes)
    return config


def selected_engine(project: AlembicProject, config: Config) -> str | None:
    """The one database of a multidb project (`databases = a, b` in the ini) this run is for."""
    listed = config.get_main_option("databases")
    if not listed:
        return project.engine
    names = [n for n in re.split(r",\s*", listed.strip()) if n]
    if project.engine is not None and project.engine not in names:
        raise MigrationError(
            f"{project.ini}: engine {project.engine!r} is not one of databases = {', '.join(names)}"
        )
    if project.engine is None and len(names) > 1:
        raise MigrationError(
            f"{project.ini} is a multidb project (databases = {', '.join(names)}): choose one with "
            "`engine: NAME` under migrations (--engine NAME)"
        )
    return project.engine or names[0]


def version_table_options(config: Config) -> dict[str, str]:
    """`version_table` / `version_table_schema` a project sets in its ini (its env.py passes them
    to `context.configure`): where the runner reads the current revision."""
    options = {}
    for name in ("version_table", "version_table_schema"):
        value = config.get_main_option(name)
        if value:
            options[name] = value
    return options


@contextmanager
def preserved_logging() -> Iterator[None]:
    """env.py usually calls `fileConfig(alembic.ini)`, which disables every logger it does not
    name (Dagster's included): put the process's logging back as it was afterwards."""
    manager = logging.Logger.manager
    loggers = {
        name: (lg.disabled, lg.level, list(lg.handlers), lg.propagate)
        for name, lg in manager.loggerDict.items()
        if isinstance(lg, logging.Logger)
    }
    root = (logging.root.level, list(logging.root.handlers))
    try:
        yield
    finally:
        for name, (disabled, level, handlers, propagate) in loggers.items():
            logger = logging.getLogger(name)
            logger.disabled, logger.level, logger.handlers, logger.propagate = (
                disabled,
                level,
                handlers,
                propagate,
            )
        logging.root.level, logging.root.handlers = root
