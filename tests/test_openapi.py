from openapi_spec_validator import validate

from appliance.api.schema import API_PREFIX


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
