"""The catalog's OpenAPI document says exactly what the service answers and what it takes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from httpx import AsyncClient

from tests.helpers import assert_documented, documented_validator

PRODUCT = "/products/{product_id}"

# Every operation, and every status it can answer.
STATUSES = {
    ("/products", "get"): {"200", "400", "422", "500", "503", "504"},
    ("/products", "post"): {"201", "400", "409", "422", "500", "503", "504"},
    (PRODUCT, "get"): {"200", "400", "404", "422", "500", "503", "504"},
    (PRODUCT, "patch"): {"200", "400", "404", "409", "422", "500", "503", "504"},
    (PRODUCT, "delete"): {"204", "400", "404", "422", "500", "503", "504"},
    ("/categories", "get"): {"200", "400", "500", "503", "504"},
    ("/health/live", "get"): {"200", "400", "500"},
    ("/health/ready", "get"): {"200", "400", "500", "503"},
}


@pytest.fixture
async def document(client: AsyncClient) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    found: dict[str, Any] = response.json()
    return found


def body_schema(document: dict[str, Any], name: str) -> Any:
    return document["components"]["schemas"][name]


async def test_every_status_of_every_operation_is_documented_with_its_body(
    document: dict[str, Any],
) -> None:
    operations = {(path, method) for path, item in document["paths"].items() for method in item}
    assert operations == set(STATUSES)
    for (path, method), statuses in STATUSES.items():
        responses = document["paths"][path][method]["responses"]
        assert set(responses) == statuses, (method, path)
        for status, response in responses.items():
            if status == "204":
                assert "content" not in response
                continue
            schema = response["content"]["application/json"]["schema"]
            assert schema, f"{method} {path} {status}: a body of any shape"


async def test_the_validation_errors_are_the_only_422_shape(document: dict[str, Any]) -> None:
    for (path, method), statuses in STATUSES.items():
        if "422" in statuses:
            responses = document["paths"][path][method]["responses"]
            schema = responses["422"]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/HTTPValidationError"}


PRICES_TAKEN: list[Any] = ["24.50", "0", "7", "0.5", "9999999999.99", 0, 12, 0.07, 9999999999.99]
PRICES_REFUSED: list[Any] = [
    "",
    " 5",
    "5 ",
    "+5",
    "1e2",
    "1_000",
    "5.",
    ".5",
    "1.001",
    "1.500",
    "-1",
    "NaN",
    "10000000000",
    "\uff15",  # a fullwidth 5: a digit to Python, not to the pattern
    -1,
    1.005,
    1e10,
    0.1 + 0.2,
    True,
    None,
    [],
]


async def test_a_price_is_taken_exactly_when_the_document_takes_it(
    client: AsyncClient, document: dict[str, Any]
) -> None:
    schema = {"$ref": "#/components/schemas/ProductCreate"}
    validator = documented_validator(document, schema)
    for number, price in enumerate([*PRICES_TAKEN, *PRICES_REFUSED]):
        body = {"sku": f"P-{number}", "name": "Thing", "price": price}
        documented = validator.is_valid(body)
        answer = await client.post("/products", json=body)
        assert documented == (price in PRICES_TAKEN), price
        assert answer.status_code == (201 if documented else 422), (price, answer.text)
        assert_documented(document, "/products", "post", answer)


async def test_patch_takes_no_null_and_the_document_says_so(
    client: AsyncClient, document: dict[str, Any]
) -> None:
    created = await client.post("/products", json={"sku": "N-1", "name": "n", "price": "1"})
    validator = documented_validator(document, {"$ref": "#/components/schemas/ProductUpdate"})
    for field in ("sku", "name", "price", "category_id"):
        assert not validator.is_valid({field: None}), field
        answer = await client.patch(f"/products/{created.json()['id']}", json={field: None})
        assert answer.status_code == 422, field
        assert_documented(document, PRODUCT, "patch", answer)
    assert validator.is_valid({})
    unchanged = await client.patch(f"/products/{created.json()['id']}", json={})
    assert unchanged.status_code == 200
    assert_documented(document, PRODUCT, "patch", unchanged)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", "a\x00b"),
        ("sku", "a b"),
        ("category_id", 2**53),
        ("category_id", 0),
        # The document says integer: pydantic's lax int took true as 1 and "5" as 5.
        ("category_id", True),
        ("category_id", False),
        ("category_id", "5"),
        ("category_id", "\ud800"),
        # A lone surrogate: JSON can carry it, UTF-8 (and so PostgreSQL) cannot.
        ("name", "\ud800"),
        ("name", "a\udfffb"),
        ("sku", "\ud800"),
        ("price", "\ud800"),
    ],
)
async def test_values_postgresql_or_json_cannot_carry_are_refused_by_the_document_and_the_service(
    client: AsyncClient, document: dict[str, Any], field: str, value: Any
) -> None:
    # A NUL in a name was a 422 with a plain-text detail from the database (SQLSTATE 22021),
    # a shape the document did not have.
    created = await client.post("/products", json={"sku": "V-0", "name": "v", "price": "1"})
    body = {"sku": "V-1", "name": "v", "price": "1", field: value}
    for schema, method, path, operation in [
        ("ProductCreate", "POST", "/products", "/products"),
        ("ProductUpdate", "PATCH", f"/products/{created.json()['id']}", PRODUCT),
    ]:
        validator = documented_validator(document, {"$ref": f"#/components/schemas/{schema}"})
        # A lone surrogate is no Unicode text, so no JSON Schema string (the validator, in
        # Rust, cannot even be handed one).
        surrogate = isinstance(value, str) and any("\ud800" <= c <= "\udfff" for c in value)
        assert surrogate or not validator.is_valid(body)
        # As sent on the wire: JSON escapes a lone surrogate (httpx's json= would not encode it).
        sent = json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        answer = await client.request(method, path, content=sent, headers=headers)
        assert answer.status_code == 422, answer.text
        (error, *_) = answer.json()["detail"]
        assert error["loc"] == ["body", field]  # no validator's internal name after it
        # Refused for its shape, not for naming a category that does not exist (true was
        # category 1).
        assert "does not exist" not in error["msg"]
        assert_documented(document, operation, method.lower(), answer)


async def test_a_category_id_written_as_a_whole_float_is_an_integer_as_the_document_says(
    client: AsyncClient, document: dict[str, Any]
) -> None:
    # JSON Schema's integer is a number with no fraction, 2.0 included.
    body = {"sku": "F-1", "name": "f", "price": "1", "category_id": 2.0}
    validator = documented_validator(document, {"$ref": "#/components/schemas/ProductCreate"})
    assert validator.is_valid(body)
    answer = await client.post("/products", json=body)
    # No category 2 in this database: refused for what it names, not for its shape.
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"][0]["msg"] == "category 2 does not exist"


async def test_sort_is_taken_exactly_when_the_document_takes_it(
    client: AsyncClient, document: dict[str, Any]
) -> None:
    (parameter,) = [
        p for p in document["paths"]["/products"]["get"]["parameters"] if p["name"] == "sort"
    ]
    validator = documented_validator(document, parameter["schema"])
    for sort, taken in [
        ("price", True),
        ("-price,name", True),
        ("created_at,-id", True),
        ("nope", False),
        ("price,", False),
        ("price desc", False),
        ("-", False),
        ("name; drop table products", False),
    ]:
        assert validator.is_valid(sort) == taken, sort
        answer = await client.get("/products", params={"sort": sort})
        assert answer.status_code == (200 if taken else 422), (sort, answer.text)
        assert_documented(document, "/products", "get", answer)
        if not taken:
            assert answer.json()["detail"][0]["loc"] == ["query", "sort"]


async def test_the_answers_match_the_document(
    client: AsyncClient, document: dict[str, Any]
) -> None:
    product = {"sku": "KETTLE-1", "name": "Kettle", "price": "24.50"}
    keyed = {"Idempotency-Key": "order-1"}
    created = await client.post("/products", json=product, headers=keyed)
    replayed = await client.post("/products", json=product, headers=keyed)
    reused = await client.post("/products", json={**product, "sku": "K-2"}, headers=keyed)
    taken = await client.post("/products", json=product)
    unknown = await client.post("/products", json={**product, "sku": "K-3", "category_id": 9})
    path = f"/products/{created.json()['id']}"
    answers = [
        ("/products", "post", created, 201),
        ("/products", "post", replayed, 201),
        ("/products", "post", reused, 422),
        ("/products", "post", taken, 409),
        ("/products", "post", unknown, 422),
        (PRODUCT, "get", await client.get(path), 200),
        (PRODUCT, "get", await client.get("/products/424242"), 404),
        (PRODUCT, "get", await client.get("/products/0"), 422),
        (PRODUCT, "patch", await client.patch(path, json={"name": "Kettle 2"}), 200),
        (PRODUCT, "patch", await client.patch("/products/424242", json={}), 404),
        ("/products", "get", await client.get("/products", params={"limit": 1}), 200),
        ("/categories", "get", await client.get("/categories"), 200),
        ("/health/live", "get", await client.get("/health/live"), 200),
        ("/health/ready", "get", await client.get("/health/ready"), 200),
        ("/products", "get", await client.get("/products", headers={"X-DB-LSN": "x"}), 400),
        (PRODUCT, "delete", await client.delete(path), 204),
        (PRODUCT, "delete", await client.delete(path), 404),
    ]
    for operation_path, method, answer, status in answers:
        assert answer.status_code == status, (method, operation_path, answer.text)
        assert_documented(document, operation_path, method, answer)
    assert replayed.headers["Idempotent-Replayed"] == "true"
    assert unknown.json()["detail"][0]["loc"] == ["body", "category_id"]
    assert reused.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]


async def test_the_document_links_a_new_product_to_its_operations(
    document: dict[str, Any],
) -> None:
    links = document["paths"]["/products"]["post"]["responses"]["201"]["links"]
    operation_ids = {
        operation["operationId"]
        for item in document["paths"].values()
        for operation in item.values()
    }
    for link in links.values():
        assert link["operationId"] in operation_ids
        assert link["parameters"] == {"product_id": "$response.body#/id"}


@pytest.mark.parametrize(
    ("path", "allowed"), [("/products", "GET, POST"), ("/products/1", "DELETE, GET, PATCH")]
)
async def test_a_method_a_path_does_not_take_names_all_it_takes(
    client: AsyncClient, path: str, allowed: str
) -> None:
    # Starlette named only the first route's methods: OPTIONS /products said "Allow: GET".
    for method in ("OPTIONS", "PUT"):
        answer = await client.request(method, path)
        assert answer.status_code == 405
        assert answer.headers["Allow"] == allowed
