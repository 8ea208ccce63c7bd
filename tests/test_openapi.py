import pytest
from flask import Flask
from openapi_spec_validator import validate
from pydantic import BaseModel

from appliance.api.schema import (
    API_PREFIX,
    ApiBlueprint,
    Schema,
    SchemaNameCollision,
    build_openapi,
)


def test_the_document_is_valid_openapi_3_1(client):
    document = client.get("/api/v1/openapi.json").get_json()
    assert document["openapi"].startswith("3.1")
    validate(document)


def test_every_api_route_is_in_the_document(app, client):
    document = client.get("/api/v1/openapi.json").get_json()
    documented = {(path, method.upper()) for path, item in document["paths"].items()
                  for method in item}
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith(API_PREFIX) or rule.endpoint == "system.openapi_json":
            continue
        path = rule.rule.replace("<", "{").replace(">", "}")
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert (path, method) in documented, f"{method} {path} is not documented"


def test_operations_reference_the_error_envelope(client):
    document = client.get("/api/v1/openapi.json").get_json()
    assert "ErrorBody" in document["components"]["schemas"]
    health_db = document["paths"]["/api/v1/health/db"]["get"]
    assert health_db["responses"]["503"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorBody"}


def test_responses_match_their_documented_schema(client):
    """Each documented GET without parameters answers with exactly its schema's fields."""
    document = client.get("/api/v1/openapi.json").get_json()
    schemas = document["components"]["schemas"]
    for path, item in document["paths"].items():
        op = item.get("get")
        if op is None or op.get("parameters") or op.get("security"):
            continue
        body = client.get(path).get_json()
        ref = op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
        schema = schemas[ref.rsplit("/", 1)[1]]
        assert set(body) == set(schema["properties"]), path


def test_every_schema_has_a_name_of_its_own(client):
    """Generated clients name their classes after the component names and titles: two
    classes of one name came out as `appliance__api__webhooks__WebhookOut` and the like,
    which openapi-python-client could not resolve (operations went missing)."""
    schemas = client.get("/api/v1/openapi.json").get_json()["components"]["schemas"]
    assert [name for name in schemas if "__" in name] == []
    titles = [schema.get("title", name) for name, schema in schemas.items()]
    assert sorted(title for title in set(titles) if titles.count(title) > 1) == []


def _app_with(*responses: type[BaseModel]) -> Flask:
    """An app with one GET operation per response model."""
    app = Flask(__name__)
    bp = ApiBlueprint("probe", __name__, url_prefix=API_PREFIX)
    for number, response in enumerate(responses):
        def view() -> dict:
            return {}
        view.__name__ = f"probe_{number}"
        bp.operation(f"/probe/{number}", summary="Probe", response=response)(view)
    app.register_blueprint(bp)
    return app


def test_the_document_builder_refuses_two_schema_classes_of_one_name():
    def first():
        class ThingOut(Schema):
            a: int
        return ThingOut

    def second():
        class ThingOut(Schema):
            b: str
        return ThingOut

    app = _app_with(first(), second())
    with pytest.raises(SchemaNameCollision, match="ThingOut"):
        build_openapi(app, "test")


def test_the_document_builder_accepts_distinct_names():
    class OneOut(Schema):
        a: int

    class OtherOut(Schema):
        b: str

    document = build_openapi(_app_with(OneOut, OtherOut), "test")
    assert {"OneOut", "OtherOut"} <= set(document["components"]["schemas"])
    validate(document)
