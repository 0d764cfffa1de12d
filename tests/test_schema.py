"""schema.graphql is the schema the code builds, and every part of it is described."""

from __future__ import annotations

from pathlib import Path

from graphql import (
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLInterfaceType,
    GraphQLObjectType,
    GraphQLScalarType,
)

from gateway.__main__ import export_schema
from gateway.api.schema import build_schema
from gateway.settings import GatewaySettings

SCHEMA_FILE = Path(__file__).parent.parent / "schema.graphql"


def test_schema_file_matches_the_code() -> None:
    exported = export_schema(build_schema(GatewaySettings()))
    assert SCHEMA_FILE.read_text() == exported, (
        "schema.graphql is stale: run `python -m gateway export-schema > schema.graphql`."
    )


def test_every_type_field_and_enum_value_has_a_description() -> None:
    schema = build_schema(GatewaySettings())._schema
    missing = []
    for name, graphql_type in schema.type_map.items():
        if name.startswith("__") or name in ("String", "Boolean", "Float", "Int", "ID"):
            continue
        if not graphql_type.description:
            missing.append(name)
        if isinstance(graphql_type, GraphQLObjectType | GraphQLInterfaceType):
            for field_name, field in graphql_type.fields.items():
                if not field.description:
                    missing.append(f"{name}.{field_name}")
                missing += [
                    f"{name}.{field_name}({arg_name})"
                    for arg_name, arg in field.args.items()
                    if not arg.description
                ]
        elif isinstance(graphql_type, GraphQLInputObjectType):
            missing += [
                f"{name}.{field_name}"
                for field_name, field in graphql_type.fields.items()
                if not field.description
            ]
        elif isinstance(graphql_type, GraphQLEnumType):
            missing += [
                f"{name}.{value_name}"
                for value_name, value in graphql_type.values.items()
                if not value.description
            ]
        else:
            assert isinstance(graphql_type, GraphQLScalarType), name
    assert missing == []
