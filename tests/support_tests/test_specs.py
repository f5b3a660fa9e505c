"""The spec validator catches the mistakes GHL and Instantly would reject, and passes real calls."""

from __future__ import annotations

import pytest

from tests.support.specs import SPECS_DIR, OpenAPISpec, ghl_spec, instantly_spec, specs_available

GHL = "https://services.leadconnectorhq.com"
HEADERS = {"Authorization": "Bearer t0ken", "Version": "2021-07-28"}
CAMPAIGN = "f9cc070d-8dba-4341-b847-f083c358e460"


@pytest.fixture(scope="module")
def ghl() -> OpenAPISpec:
    if not specs_available():
        pytest.skip(f"../shared/specs not found: {SPECS_DIR} (set BRIDGE_SPECS_DIR)")
    return ghl_spec()


@pytest.fixture(scope="module")
def instantly() -> OpenAPISpec:
    if not specs_available():
        pytest.skip(f"../shared/specs not found: {SPECS_DIR} (set BRIDGE_SPECS_DIR)")
    return instantly_spec()


# --- GHL: requests the bridge makes ------------------------------------------------------------


def test_upsert_with_declared_fields_passes(ghl: OpenAPISpec) -> None:
    body = {
        "locationId": "loc_1",
        "email": "a@b.c",
        "firstName": "Ann",
        "lastName": None,  # nullable in UpsertContactDto
        "companyName": "Acme",
        "source": "instantly",
        "customFields": [{"id": "cf_1", "field_value": "hello"}],
    }
    assert ghl.validate_request("POST", f"{GHL}/contacts/upsert", HEADERS, {}, body) == []


def test_add_and_remove_tags_pass(ghl: OpenAPISpec) -> None:
    body = {"tags": ["replied", "instantly"]}
    assert ghl.validate_request("POST", "/contacts/abc123/tags", HEADERS, {}, body) == []
    assert ghl.validate_request("DELETE", "/contacts/abc123/tags", HEADERS, {}, body) == []


def test_custom_fields_listing_passes(ghl: OpenAPISpec) -> None:
    errors = ghl.validate_request(
        "GET", "/locations/loc_1/customFields", HEADERS, {"model": ["contact"]}, None
    )
    assert errors == []


def test_query_string_in_the_url_counts(ghl: OpenAPISpec) -> None:
    url = f"{GHL}/locations/loc_1/customFields?model=people"
    assert ghl.validate_request("GET", url, HEADERS) == [
        "query parameter model: 'people' is not one of ['contact', 'opportunity', 'all']"
    ]


def test_undeclared_body_property_is_an_error(ghl: OpenAPISpec) -> None:
    body = {"locationId": "x", "email": "a@b.c", "bogus": 1}
    errors = ghl.validate_request("POST", "/contacts/upsert", HEADERS, {}, body)
    assert errors == ["body: property bogus should not exist"]


def test_undeclared_property_inside_a_custom_field_is_an_error(ghl: OpenAPISpec) -> None:
    # v3 spells it fieldValue; v2 (what the bridge speaks) only knows field_value.
    body = {"locationId": "x", "customFields": [{"id": "cf_1", "fieldValue": "hi"}]}
    errors = ghl.validate_request("POST", "/contacts/upsert", HEADERS, {}, body)
    assert len(errors) == 1
    assert "body.customFields[0]" in errors[0]
    assert "property fieldValue should not exist" in errors[0]


def test_missing_version_header_is_an_error(ghl: OpenAPISpec) -> None:
    headers = {"Authorization": "Bearer t0ken"}
    errors = ghl.validate_request("POST", "/contacts/abc/tags", headers, {}, {"tags": ["a"]})
    assert errors == ["missing required header Version"]


def test_wrong_version_value_is_an_error(ghl: OpenAPISpec) -> None:
    headers = {"authorization": "Bearer t0ken", "version": "2021-04-15"}  # any header case
    errors = ghl.validate_request("GET", "/locations/loc_1", headers)
    assert errors == ["header Version: '2021-04-15' is not one of ['2021-07-28']"]


def test_missing_bearer_token_is_an_error(ghl: OpenAPISpec) -> None:
    errors = ghl.validate_request("GET", "/locations/loc_1", {"Version": "2021-07-28"})
    assert errors == ["missing Authorization: Bearer <token> header"]


def test_unknown_path_and_unknown_method_are_errors(ghl: OpenAPISpec) -> None:
    assert ghl.validate_request("POST", "/contacts/abc/labels", HEADERS, {}, {}) == [
        "POST /contacts/abc/labels: no such path in spec"
    ]
    assert ghl.validate_request("PATCH", "/contacts/abc", HEADERS, {}, {}) == [
        "PATCH /contacts/abc: method not in spec (spec has DELETE, GET, PUT)"
    ]


def test_wrong_type_is_an_error(ghl: OpenAPISpec) -> None:
    errors = ghl.validate_request("POST", "/contacts/abc/tags", HEADERS, {}, {"tags": "replied"})
    assert errors == ["body.tags: 'replied' is not of type 'array'"]
    body = {"locationId": "x", "email": 42}
    errors = ghl.validate_request("POST", "/contacts/upsert", HEADERS, {}, body)
    assert errors == ["body.email: 42 is not of type 'string', 'null'"]


def test_missing_required_body_property_is_an_error(ghl: OpenAPISpec) -> None:
    errors = ghl.validate_request("POST", "/contacts/upsert", HEADERS, {}, {"email": "a@b.c"})
    assert errors == ["body: 'locationId' is a required property"]


def test_undeclared_query_param_is_an_error(ghl: OpenAPISpec) -> None:
    query = {"model": "contact", "limit": "10"}
    errors = ghl.validate_request("GET", "/locations/loc_1/customFields", HEADERS, query)
    assert errors == [
        "query parameter limit is not declared for GET /locations/{locationId}/customFields"
    ]


def test_missing_required_query_param_is_an_error(ghl: OpenAPISpec) -> None:
    errors = ghl.validate_request("GET", "/opportunities/pipelines", HEADERS, {})
    assert errors == ["missing required query parameter locationId"]


def test_enum_in_body_is_enforced(ghl: OpenAPISpec) -> None:
    body = {
        "pipelineId": "p",
        "locationId": "l",
        "name": "Reply from a@b.c",
        "status": "won",
        "contactId": "c",
    }
    assert ghl.validate_request("POST", "/opportunities/", HEADERS, {}, body) == []
    errors = ghl.validate_request("POST", "/opportunities/", HEADERS, {}, {**body, "status": "x"})
    assert errors == ["body.status: 'x' is not one of ['open', 'won', 'lost', 'abandoned', 'all']"]


def test_trailing_slash_does_not_matter(ghl: OpenAPISpec) -> None:
    query = {"locationId": "loc_1"}
    assert ghl.validate_request("GET", "/workflows", HEADERS, query) == []
    assert ghl.validate_request("GET", "/workflows/", HEADERS, query) == []


def test_generator_artefacts_accept_what_ghl_accepts(ghl: OpenAPISpec) -> None:
    # dateOfBirth and numeric custom-field values are `type: object` in the spec, with string and
    # number examples: the generator's way of writing "any".
    body = {
        "locationId": "x",
        "dateOfBirth": "1990-09-25",
        "customFields": [{"id": "cf_n", "field_value": 12.5}],
    }
    assert ghl.validate_request("POST", "/contacts/upsert", HEADERS, {}, body) == []


def test_response_checks_are_lenient_on_extra_properties(ghl: OpenAPISpec) -> None:
    answer = {"new": True, "contact": {"id": "c1", "somethingNew": 1}, "traceId": "t"}
    assert ghl.validate_response("POST", "/contacts/upsert", 200, answer) == []
    wrong = {"new": "yes", "contact": {"id": "c1"}}
    assert ghl.validate_response("POST", "/contacts/upsert", 200, wrong) == [
        "body.new: 'yes' is not of type 'boolean'"
    ]


def test_response_status_must_be_documented(ghl: OpenAPISpec) -> None:
    # GHL documents 400 (not 404) for an unknown contact id.
    error = {"statusCode": 400, "message": "Contact not found"}
    assert ghl.validate_response("GET", "/contacts/abc", 400, error) == []
    assert ghl.validate_response("GET", "/contacts/abc", 404, error) == [
        "GET /contacts/{contactId}: status 404 is not documented (200, 400, 401, 422)"
    ]


def test_error_schemas_resolve_across_files(ghl: OpenAPISpec) -> None:
    # 422 is a $ref to ../common/common-schemas.json, which lives beside the others here.
    good = {"statusCode": 422, "message": ["property x should not exist"], "error": "Bad"}
    assert ghl.validate_response("POST", "/contacts/upsert", 422, good) == []
    bad = {"statusCode": 422, "message": "property x should not exist"}
    assert ghl.validate_response("POST", "/contacts/upsert", 422, bad) == [
        "body.message: 'property x should not exist' is not of type 'array'"
    ]


# --- Instantly: what the bridge reads ---------------------------------------------------------


INSTANTLY_HEADERS = {"Authorization": "Bearer key", "User-Agent": "Mozilla/5.0"}


def test_emails_poll_passes(instantly: OpenAPISpec) -> None:
    query = {
        "email_type": ["received"],
        "limit": ["100"],
        "sort_order": ["asc"],
        "min_timestamp_created": ["2026-01-01T00:00:00.000Z"],
    }
    url = "https://api.instantly.ai/api/v2/emails"
    assert instantly.validate_request("GET", url, INSTANTLY_HEADERS, query) == []


def test_emails_poll_rejects_bad_values(instantly: OpenAPISpec) -> None:
    query = {"email_type": "inbound", "limit": "500", "latest_of_thread": "yes"}
    errors = instantly.validate_request("GET", "/api/v2/emails", INSTANTLY_HEADERS, query)
    assert sorted(errors) == [
        "query parameter email_type: 'inbound' is not one of ['received', 'sent', 'manual']",
        "query parameter latest_of_thread: 'yes' is not of type 'boolean'",
        "query parameter limit: 500 is greater than the maximum of 100",
    ]


def test_instantly_paths_keep_their_api_v2_prefix(instantly: OpenAPISpec) -> None:
    # The spec writes full paths (/api/v2/emails) under the bare host.
    assert instantly.operation("GET", "/api/v2/emails") is not None
    assert instantly.operation("GET", "/emails") is None


def test_leads_list_passes_and_limit_max_is_100(instantly: OpenAPISpec) -> None:
    body = {"campaign": CAMPAIGN, "limit": 100, "starting_after": "x"}
    path = "/api/v2/leads/list"
    assert instantly.validate_request("POST", path, INSTANTLY_HEADERS, {}, body) == []
    errors = instantly.validate_request("POST", path, INSTANTLY_HEADERS, {}, {**body, "limit": 200})
    assert errors == ["body.limit: 200 is greater than the maximum of 100"]


def test_leads_list_rejects_undeclared_filter(instantly: OpenAPISpec) -> None:
    # The spec's description mentions `interest_status`, but the body schema does not declare it.
    body = {"campaign": CAMPAIGN, "interest_status": 1}
    errors = instantly.validate_request("POST", "/api/v2/leads/list", INSTANTLY_HEADERS, {}, body)
    assert errors == ["body: property interest_status should not exist"]


def test_instantly_requires_bearer_key(instantly: OpenAPISpec) -> None:
    errors = instantly.validate_request("POST", "/api/v2/leads/list", {}, {}, {"limit": 10})
    assert errors == ["missing Authorization: Bearer <token> header"]


def test_instantly_31_null_types_in_responses(instantly: OpenAPISpec) -> None:
    # Email.cc_address_email_list is ["null", "string"]; timestamp_created is a plain string.
    email = {
        "id": "e1",
        "timestamp_created": "2026-01-01T00:00:00.000Z",
        "timestamp_email": "2026-01-01T00:00:00.000Z",
        "message_id": "<m@x>",
        "subject": "Re: hi",
        "to_address_email_list": "me@example.com",
        "cc_address_email_list": None,
        "body": {"text": "thanks", "html": "<p>thanks</p>"},
        "organization_id": "o1",
        "eaccount": "me@example.com",
    }
    answer = {"items": [email]}
    assert instantly.validate_response("GET", "/api/v2/emails", 200, answer) == []
    answer = {"items": [{**email, "timestamp_created": None}]}
    assert instantly.validate_response("GET", "/api/v2/emails", 200, answer) == [
        "body.items[0].timestamp_created: None is not of type 'string'"
    ]
