"""Where schema ids come from: the registry file in the repo, or a Confluent schema registry.

The file ``schemas/registry.yaml`` maps each subject (``<topic>-value``) to its
versions, each with a globally unique id and the file holding that version's
schema text::

    subjects:
      mail.raw-value:
        - {version: 1, id: 1, schema: history/mail.raw/v1.avsc}

Old versions stay listed so that records written with them can still be read,
and so that each version can be checked against its predecessor.

Setting ``MAILINTAKE_SCHEMA_REGISTRY_URL`` makes ``default_registry()`` ask a
Confluent-compatible registry over its REST API instead.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml
from avro.schema import Schema
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, model_validator

from mailintake.contracts.avsc import parse_schema, same_schema
from mailintake.contracts.errors import (
    ContractError,
    RegistryUnavailable,
    UnknownSchemaId,
    UnregisteredSchema,
)
from mailintake.contracts.topics import REGISTRY_FILE_NAME, resolved_schemas_dir, schemas_dir

REGISTRY_URL_ENV = "MAILINTAKE_SCHEMA_REGISTRY_URL"


@dataclass(frozen=True)
class RegisteredSchema:
    """One registered schema. ``subject`` and ``version`` are unknown (None) when
    a registry is asked by id alone."""

    id: int
    text: str
    schema: Schema
    subject: str | None = None
    version: int | None = None


class SchemaRegistry(Protocol):
    """What the codec needs from a registry (hashable, as codecs are cached per registry)."""

    def __hash__(self) -> int: ...

    def id_for(self, subject: str, schema: Schema) -> int:
        """The id of ``schema`` under ``subject``; ``UnregisteredSchema`` if it has none."""
        ...

    def schema_by_id(self, schema_id: int) -> RegisteredSchema:
        """The schema with id ``schema_id``; ``UnknownSchemaId`` if there is none."""
        ...


class _Version(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    version: PositiveInt
    id: PositiveInt
    schema_file: str = Field(alias="schema")


class _RegistryFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    subjects: dict[str, tuple[_Version, ...]]

    @model_validator(mode="after")
    def _consistent(self) -> _RegistryFile:
        seen: dict[int, str] = {}
        for subject, versions in self.subjects.items():
            if [v.version for v in versions] != list(range(1, len(versions) + 1)):
                raise ValueError(f"{subject}: versions must be listed as 1, 2, 3, ... in order")
            for v in versions:
                if v.id in seen:
                    raise ValueError(f"id {v.id} is used by both {seen[v.id]} and {subject} v{v.version}")
                seen[v.id] = f"{subject} v{v.version}"
        return self


class FileRegistry:
    """The registry kept as a yaml file in the repo (the default)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
            parsed = _RegistryFile.model_validate(data)
        except (OSError, yaml.YAMLError, ValidationError) as error:
            raise ContractError(f"{path.name}: {error}") from error
        self._subjects: dict[str, tuple[RegisteredSchema, ...]] = {}
        self._by_id: dict[int, RegisteredSchema] = {}
        for subject, versions in parsed.subjects.items():
            registered = []
            for v in versions:
                schema_path = path.parent / v.schema_file
                try:
                    text = schema_path.read_text(encoding="utf-8")
                except OSError as error:
                    raise ContractError(f"{path.name}: {subject} v{v.version}: {error}") from error
                entry = RegisteredSchema(v.id, text, parse_schema(text, v.schema_file), subject, v.version)
                registered.append(entry)
                self._by_id[v.id] = entry
            self._subjects[subject] = tuple(registered)

    def subjects(self) -> tuple[str, ...]:
        return tuple(self._subjects)

    def versions(self, subject: str) -> tuple[RegisteredSchema, ...]:
        """Every registered version of ``subject``, oldest first (empty if none)."""
        return self._subjects.get(subject, ())

    def id_for(self, subject: str, schema: Schema) -> int:
        for entry in reversed(self.versions(subject)):
            if same_schema(entry.schema, schema):
                return entry.id
        raise UnregisteredSchema(
            f"the schema for {subject} is not registered in {self.path.name}; "
            "copy it into history/ and add it as a new version"
        )

    def schema_by_id(self, schema_id: int) -> RegisteredSchema:
        try:
            return self._by_id[schema_id]
        except KeyError:
            raise UnknownSchemaId(f"no schema with id {schema_id} in {self.path.name}") from None


class ConfluentRegistry:
    """A Confluent-compatible schema registry, asked over its REST API.

    Answers are cached for the life of the object: a registered schema and its id
    never change. Credentials may be given in the URL (``https://user:secret@host``).
    """

    _MEDIA_TYPE = "application/vnd.schemaregistry.v1+json"

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        parts = urllib.parse.urlsplit(url)
        self._auth: str | None = None
        if parts.username is not None:
            pair = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
            self._auth = "Basic " + base64.b64encode(pair.encode()).decode()
            host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname or ""
            parts = parts._replace(netloc=host + (f":{parts.port}" if parts.port else ""))
        self.url = urllib.parse.urlunsplit(parts).rstrip("/")
        self.timeout = timeout
        self._ids: dict[tuple[str, str], int] = {}
        self._schemas: dict[int, RegisteredSchema] = {}

    def _call(self, method: str, path: str, body: Any = None) -> Any | None:
        """The decoded JSON answer, or None for 404; other failures raise ``RegistryUnavailable``."""
        headers = {"Accept": f"{self._MEDIA_TYPE}, application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = self._MEDIA_TYPE
        if self._auth:
            headers["Authorization"] = self._auth
        request = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.load(response)
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return None
            detail = error.read().decode("utf-8", "replace")[:200]
            raise RegistryUnavailable(f"{method} {self.url}{path}: HTTP {error.code}: {detail}") from error
        except (OSError, ValueError) as error:
            # URLError and timeouts are OSErrors; ValueError covers a body that is not JSON.
            raise RegistryUnavailable(f"{method} {self.url}{path}: {error}") from error

    def id_for(self, subject: str, schema: Schema) -> int:
        text = str(schema)
        cached = self._ids.get((subject, text))
        if cached is not None:
            return cached
        answer = self._call("POST", f"/subjects/{urllib.parse.quote(subject, safe='')}", {"schema": text})
        if answer is None:
            raise UnregisteredSchema(f"the schema for {subject} is not registered at {self.url}")
        self._ids[(subject, text)] = int(answer["id"])
        return self._ids[(subject, text)]

    def schema_by_id(self, schema_id: int) -> RegisteredSchema:
        cached = self._schemas.get(schema_id)
        if cached is not None:
            return cached
        answer = self._call("GET", f"/schemas/ids/{schema_id}")
        if answer is None:
            raise UnknownSchemaId(f"no schema with id {schema_id} at {self.url}")
        kind = answer.get("schemaType", "AVRO")
        if kind != "AVRO":
            raise UnknownSchemaId(f"schema id {schema_id} at {self.url} is a {kind} schema, not Avro")
        text = answer["schema"]
        entry = RegisteredSchema(schema_id, text, parse_schema(text, f"schema id {schema_id}"))
        self._schemas[schema_id] = entry
        return entry


@functools.cache
def _registry(url: str | None, folder: Path) -> SchemaRegistry:
    if url:
        return ConfluentRegistry(url)
    return FileRegistry(folder / REGISTRY_FILE_NAME)


def default_registry() -> SchemaRegistry:
    """``ConfluentRegistry`` at ``$MAILINTAKE_SCHEMA_REGISTRY_URL`` if set, else the repo's file."""
    return _registry(os.environ.get(REGISTRY_URL_ENV) or None, resolved_schemas_dir())


def load_file_registry(folder: Path | None = None) -> FileRegistry:
    """The registry file of the schemas folder (default: ``schemas_dir()``)."""
    return FileRegistry((folder or schemas_dir()) / REGISTRY_FILE_NAME)
