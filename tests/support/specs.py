"""Check HTTP requests (and fixture responses) against the vendors' OpenAPI files.

The specs live outside the repo (`../shared/specs`, or `$BRIDGE_SPECS_DIR`) and are never copied
in. Schemas are converted to JSON Schema 2020-12 and checked with `jsonschema`:

- OAS 3.0 `nullable: true` becomes a `"null"` type (3.1 files already use type lists).
- Request bodies are checked with strict properties: GHL answers 422 "property X should not
  exist" for anything its DTO does not declare, so every object schema that declares
  `properties` gets `unevaluatedProperties: false` unless it says otherwise.
- Response bodies are checked leniently: real answers carry more than the spec lists.
- Two artefacts of GHL's spec generator mean "type not documented", not what they say:
  `{"type": "object"}` whose own example is not an object (e.g. `dateOfBirth`, numeric
  custom-field values) and array items `{"type": "array"}` with no item type (e.g. pipeline
  `stages`, which are objects in real answers). Both are treated as "any value".
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import referencing
import referencing.jsonschema
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

_REPO_ROOT = Path(__file__).resolve().parents[2]
SPECS_DIR = Path(os.environ.get("BRIDGE_SPECS_DIR") or _REPO_ROOT.parent / "shared" / "specs")

GHL_FILES = (
    "ghl/contacts.json",
    "ghl/locations.json",
    "ghl/opportunities.json",
    "ghl/workflows.json",
    "ghl/common-schemas.json",
)
INSTANTLY_FILES = ("instantly/api_v2.openapi.json",)

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
# Keywords whose value is one subschema / a list of subschemas / a map of subschemas.
_SUBSCHEMA = ("items", "not", "if", "then", "else", "contains", "propertyNames")
_SUBSCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems")
_SUBSCHEMA_MAPS = ("properties", "patternProperties", "$defs", "dependentSchemas")
# Members of these only add constraints to the object around them; strictness belongs there.
_IN_PLACE = ("allOf", "not", "if", "then", "else", "dependentSchemas")


def specs_available() -> bool:
    """True when every spec file the support code loads is present."""
    return all((SPECS_DIR / name).is_file() for name in GHL_FILES + INSTANTLY_FILES)


@functools.lru_cache(maxsize=1)
def ghl_spec() -> OpenAPISpec:
    """The GHL API v2 files the bridge uses (not contacts-v3.json: the bridge speaks v2)."""
    return OpenAPISpec(*(SPECS_DIR / name for name in GHL_FILES))


@functools.lru_cache(maxsize=1)
def instantly_spec() -> OpenAPISpec:
    """Instantly API v2 (OpenAPI 3.1, ~4 MB: loaded once per process)."""
    return OpenAPISpec(*(SPECS_DIR / name for name in INSTANTLY_FILES))


@dataclass(frozen=True)
class Operation:
    """One operation of a loaded spec: where it lives and what it says."""

    method: str  # upper case
    template: str  # as the spec writes it, e.g. "/contacts/{contactId}/tags"
    uri: str  # file URI of the spec file that declares it
    pointer: str  # JSON pointer to the operation object inside that file
    spec: dict[str, Any]  # the raw operation object
    path_item: dict[str, Any]  # the raw path item (for path-level parameters)


class OpenAPISpec:
    """One or more OpenAPI JSON files, with request and response validation."""

    def __init__(self, *files: str | Path):
        if not files:
            raise ValueError("give at least one OpenAPI file")
        self._docs: dict[str, dict[str, Any]] = {}  # file URI -> raw document
        self._routes: list[tuple[tuple[int, ...], re.Pattern[str], Operation]] = []
        self._prefixes: set[str] = set()
        self._validators: dict[tuple[bool, str], Draft202012Validator] = {}
        pending = [Path(f).resolve() for f in files]
        while pending:
            path = pending.pop()
            uri = path.as_uri()
            if uri in self._docs:
                continue
            if not path.is_file():
                raise FileNotFoundError(f"OpenAPI file not found: {path}")
            doc = json.loads(path.read_text(encoding="utf-8"))
            _rewrite_file_refs(doc, path.parent)
            self._docs[uri] = doc
            pending.extend(_referenced_files(doc))
            self._add_routes(uri, doc)
        # Literal segments beat parameters (/contacts/upsert before /contacts/{contactId}).
        self._routes.sort(key=lambda route: route[0])
        self._registries: dict[bool, referencing.Registry] = {}
        # The fake GHL server validates from several threads; build each lazy part once.
        self._lazy_lock = threading.Lock()

    # --- public ---------------------------------------------------------------------------

    def operation(self, method: str, url_or_path: str) -> Operation | None:
        """The operation a request would reach, or None."""
        path = self._route_path(url_or_path)
        for _, pattern, op in self._routes:
            if op.method == method.upper() and pattern.fullmatch(path):
                return op
        return None

    def validate_request(
        self,
        method: str,
        url_or_path: str,
        headers: Mapping[str, str] | None = None,
        query: Mapping[str, list[str] | str] | None = None,
        json_body: Any = None,
    ) -> list[str]:
        """Errors in a request as the spec sees it; [] means the request is fine.

        `json_body` None means "no body". A query string inside `url_or_path` is merged
        into `query`.
        """
        method = method.upper()
        query_values = _query_lists(query or {})
        if "?" in url_or_path:
            for name, values in parse_qs(urlsplit(url_or_path).query, True).items():
                query_values.setdefault(name, []).extend(values)
        op = self.operation(method, url_or_path)
        if op is None:
            return [self._no_operation(method, url_or_path)]

        errors: list[str] = []
        header_values = {name.lower(): value for name, value in (headers or {}).items()}
        errors += self._check_security(op, header_values)
        params = self._parameters(op)
        path_values = self._path_values(op, url_or_path)
        for (name, where), (param, schema_ref) in params.items():
            if where == "path":
                if name in path_values:
                    label = f"path parameter {name}"
                    errors += self._check_value(label, param, schema_ref, [path_values[name]])
            elif where == "header":
                value = header_values.get(name.lower())
                if value is None:
                    if param.get("required"):
                        errors.append(f"missing required header {name}")
                else:
                    errors += self._check_value(f"header {name}", param, schema_ref, [value])
            elif where == "query":
                values = query_values.get(name)
                if values is None:
                    if param.get("required"):
                        errors.append(f"missing required query parameter {name}")
                else:
                    label = f"query parameter {name}"
                    errors += self._check_value(label, param, schema_ref, values)
        declared = {name for name, where in params if where == "query"}
        for name in sorted(set(query_values) - declared):
            errors.append(f"query parameter {name} is not declared for {method} {op.template}")
        errors += self._check_request_body(op, json_body)
        return errors

    def validate_response(
        self, method: str, url_or_path: str, status: int, json_body: Any
    ) -> list[str]:
        """Errors in a response body against the documented answer for `status`.

        Lenient about extra properties; strict about types, enums and required fields.
        """
        method = method.upper()
        op = self.operation(method, url_or_path)
        if op is None:
            return [self._no_operation(method, url_or_path)]
        responses = op.spec.get("responses") or {}
        for key in (str(status), f"{str(status)[0]}XX", "default"):
            if key in responses:
                break
        else:
            documented = ", ".join(responses) or "none"
            return [f"{method} {op.template}: status {status} is not documented ({documented})"]
        pointer = f"{op.pointer}/responses/{_escape(key)}"
        response, uri, pointer = self._deref(op.uri, responses[key], pointer)
        content = response.get("content") or {}
        media = _json_media_type(content)
        if media is None or "schema" not in content[media]:
            return []
        schema_ref = _ref(uri, f"{pointer}/content/{_escape(media)}/schema")
        return self._check_schema(False, schema_ref, json_body, "body")

    # --- routing --------------------------------------------------------------------------

    def _add_routes(self, uri: str, doc: dict[str, Any]) -> None:
        for server in doc.get("servers") or []:
            prefix = urlsplit(server.get("url", "")).path.rstrip("/")
            if prefix:
                self._prefixes.add(prefix)
        for template, item in (doc.get("paths") or {}).items():
            segments = _segments(template)
            pattern = re.compile(
                "/" + "/".join("[^/]+" if _is_param(s) else re.escape(s) for s in segments)
            )
            # Sort key: per segment 0 for literal, 1 for parameter.
            rank = tuple(1 if _is_param(s) else 0 for s in segments)
            for method, spec in item.items():
                if method not in HTTP_METHODS:
                    continue
                pointer = f"/paths/{_escape(template)}/{method}"
                op = Operation(method.upper(), template, uri, pointer, spec, item)
                self._routes.append((rank, pattern, op))

    def _route_path(self, url_or_path: str) -> str:
        """The path part, without a server's base path, trailing slash ignored."""
        path = "/" + "/".join(_segments(urlsplit(url_or_path).path))
        for prefix in self._prefixes:
            if path.startswith(prefix + "/"):
                path = path[len(prefix) :]
        # GHL's router treats "/opportunities/" and "/opportunities" alike.
        return path

    def _path_values(self, op: Operation, url_or_path: str) -> dict[str, str]:
        actual = _segments(self._route_path(url_or_path))
        return {
            s[1:-1]: value
            for s, value in zip(_segments(op.template), actual, strict=False)
            if _is_param(s)
        }

    def _no_operation(self, method: str, url_or_path: str) -> str:
        path = self._route_path(url_or_path)
        methods = sorted({op.method for _, p, op in self._routes if p.fullmatch(path)})
        if methods:
            return f"{method} {path}: method not in spec (spec has {', '.join(methods)})"
        return f"{method} {path}: no such path in spec"

    # --- parameters and security ----------------------------------------------------------

    def _parameters(self, op: Operation) -> dict[tuple[str, str], tuple[dict[str, Any], str]]:
        """(name, in) -> (parameter object, ref to its schema); operation-level wins."""
        found: dict[tuple[str, str], tuple[dict[str, Any], str]] = {}
        item_pointer = op.pointer.rsplit("/", 1)[0]
        for owner, pointer in ((op.path_item, item_pointer), (op.spec, op.pointer)):
            for index, raw in enumerate(owner.get("parameters") or []):
                param, uri, where = self._deref(op.uri, raw, f"{pointer}/parameters/{index}")
                found[(param["name"], param["in"])] = (param, _ref(uri, f"{where}/schema"))
        return found

    def _check_value(
        self, label: str, param: dict[str, Any], schema_ref: str, values: list[str]
    ) -> list[str]:
        schema = param.get("schema")
        if not isinstance(schema, dict):
            return []
        if schema.get("type") == "array":
            item_type = (schema.get("items") or {}).get("type")
            instance: Any = [_coerce(v, item_type) for v in values]
        elif len(values) > 1:
            return [f"{label} given {len(values)} times"]
        else:
            instance = _coerce(values[0], schema.get("type"))
        return self._check_schema(True, schema_ref, instance, label)

    def _check_security(self, op: Operation, headers: Mapping[str, str]) -> list[str]:
        doc = self._docs[op.uri]
        requirements = op.spec.get("security", doc.get("security")) or []
        schemes = (doc.get("components") or {}).get("securitySchemes") or {}

        def is_bearer(name: str) -> bool:
            scheme = schemes.get(name) or {}
            return scheme.get("type") == "http" and scheme.get("scheme", "").lower() == "bearer"

        # Only when every alternative needs a bearer token can we insist on one.
        if requirements and all(req and all(map(is_bearer, req)) for req in requirements):
            value = headers.get("authorization", "")
            if not value.lower().startswith("bearer ") or not value[7:].strip():
                return ["missing Authorization: Bearer <token> header"]
        return []

    # --- bodies ---------------------------------------------------------------------------

    def _check_request_body(self, op: Operation, json_body: Any) -> list[str]:
        if "requestBody" not in op.spec:
            if json_body is not None:
                return [f"{op.method} {op.template} declares no request body"]
            return []
        pointer = f"{op.pointer}/requestBody"
        body, uri, pointer = self._deref(op.uri, op.spec["requestBody"], pointer)
        content = body.get("content") or {}
        media = _json_media_type(content)
        if media is None:
            return [f"{op.method} {op.template} takes {', '.join(content)}, not JSON"]
        if json_body is None:
            return ["missing required JSON body"] if body.get("required") else []
        schema_ref = _ref(uri, f"{pointer}/content/{_escape(media)}/schema")
        return self._check_schema(True, schema_ref, json_body, "body")

    def _check_schema(self, strict: bool, schema_ref: str, instance: Any, label: str) -> list[str]:
        errors = self._validator(strict, schema_ref).iter_errors(instance)
        messages: list[str] = []
        for error in sorted(errors, key=lambda e: [str(p) for p in e.absolute_path]):
            messages.extend(_describe(error, label + _path_text(error.absolute_path)))
        return messages

    def _validator(self, strict: bool, ref: str) -> Draft202012Validator:
        key = (strict, ref)
        with self._lazy_lock:
            if key not in self._validators:
                self._validators[key] = Draft202012Validator(
                    {"$ref": ref}, registry=self._registry(strict)
                )
            return self._validators[key]

    def _registry(self, strict: bool) -> referencing.Registry:
        # Converted lazily: the Instantly file is big and most runs need one variant only.
        # Called with _lazy_lock held.
        if strict not in self._registries:
            resources = [
                (
                    uri,
                    referencing.jsonschema.DRAFT202012.create_resource(
                        _convert_document(doc, strict)
                    ),
                )
                for uri, doc in self._docs.items()
            ]
            self._registries[strict] = referencing.Registry().with_resources(resources)
        return self._registries[strict]

    def _deref(
        self, uri: str, node: dict[str, Any], pointer: str
    ) -> tuple[dict[str, Any], str, str]:
        """Follow `$ref`s between non-schema objects: (object, its file URI, its pointer)."""
        seen = set()
        while "$ref" in node:
            ref = node["$ref"]
            if ref in seen:
                raise ValueError(f"$ref loop at {ref}")
            seen.add(ref)
            target, _, fragment = ref.partition("#")
            uri = target or uri
            node = _resolve_pointer(self._docs[uri], fragment)
            pointer = fragment
        return node, uri, pointer


# --- document conversion --------------------------------------------------------------------


def _convert_document(doc: dict[str, Any], strict: bool) -> dict[str, Any]:
    """A copy of `doc` with every schema position converted (nothing else is touched)."""
    doc = copy.deepcopy(doc)
    components = doc.get("components") or {}
    for name, schema in list((components.get("schemas") or {}).items()):
        components["schemas"][name] = _convert_schema(schema, strict)
    for kind in ("parameters", "headers"):
        for param in (components.get(kind) or {}).values():
            _convert_holder(param, strict)
    for kind in ("requestBodies", "responses"):
        for holder in (components.get(kind) or {}).values():
            _convert_content(holder, strict)
    for item in (doc.get("paths") or {}).values():
        for param in item.get("parameters") or []:
            _convert_holder(param, strict)
        for method, op in item.items():
            if method not in HTTP_METHODS:
                continue
            for param in op.get("parameters") or []:
                _convert_holder(param, strict)
            if isinstance(op.get("requestBody"), dict):
                _convert_content(op["requestBody"], strict)
            for response in (op.get("responses") or {}).values():
                _convert_content(response, strict)
    return doc


def _convert_holder(holder: dict[str, Any], strict: bool) -> None:
    if isinstance(holder.get("schema"), dict):
        holder["schema"] = _convert_schema(holder["schema"], strict)


def _convert_content(holder: dict[str, Any], strict: bool) -> None:
    for media in (holder.get("content") or {}).values():
        _convert_holder(media, strict)
    for header in (holder.get("headers") or {}).values():
        _convert_holder(header, strict)


def _convert_schema(schema: Any, strict: bool, fragment: bool = False) -> Any:
    """OAS schema -> JSON Schema 2020-12. `fragment`: only adds constraints to its parent."""
    if not isinstance(schema, dict):
        return schema
    schema = dict(schema)
    if _undocumented_object(schema):
        del schema["type"]

    if schema.pop("nullable", False) is True:  # OAS 3.0
        if isinstance(schema.get("type"), str):
            schema["type"] = [schema["type"], "null"]
            if isinstance(schema.get("enum"), list) and None not in schema["enum"]:
                schema["enum"] = [*schema["enum"], None]
        elif "type" not in schema:
            schema = {"anyOf": [schema, {"type": "null"}]}
            return _convert_schema(schema, strict, fragment)

    for key in _SUBSCHEMA:
        if key in schema:
            child = schema[key]
            if key == "items" and _untyped_array(child):
                schema[key] = {}
            else:
                schema[key] = _convert_schema(child, strict, fragment=key in _IN_PLACE)
    for key in _SUBSCHEMA_LISTS:
        if isinstance(schema.get(key), list):
            schema[key] = [
                _convert_schema(member, strict, fragment=_is_fragment(key, member))
                for member in schema[key]
            ]
    for key in _SUBSCHEMA_MAPS:
        if isinstance(schema.get(key), dict):
            schema[key] = {
                name: _convert_schema(child, strict, fragment=key in _IN_PLACE)
                for name, child in schema[key].items()
            }
    for key in ("additionalProperties", "unevaluatedProperties"):
        if isinstance(schema.get(key), dict):
            schema[key] = _convert_schema(schema[key], strict)

    if strict:
        # Known limit: allOf over $refs whose targets declare different properties would be
        # over-strict (each target is strict on its own). None of the bridge's operations do it.
        declares = "properties" in schema or any(
            isinstance(member, dict) and "properties" in member
            for member in schema.get("allOf") or []
        )
        open_ended = "additionalProperties" in schema or "unevaluatedProperties" in schema
        if declares and not open_ended and not fragment:
            schema["unevaluatedProperties"] = False
    else:
        for key in ("additionalProperties", "unevaluatedProperties"):
            if schema.get(key) is False:
                del schema[key]
    return schema


def _is_fragment(keyword: str, member: Any) -> bool:
    if keyword in _IN_PLACE:
        return True
    if keyword in ("anyOf", "oneOf") and isinstance(member, dict):
        # A typed object member is a whole alternative shape; an untyped one
        # ({"properties": ..., "required": [...]}) is a condition on the parent.
        types = member.get("type")
        types = types if isinstance(types, list) else [types]
        return "object" not in types and "$ref" not in member
    return False


def _undocumented_object(schema: dict[str, Any]) -> bool:
    # GHL's generator writes `type: object` for values typed `any` (its own examples are numbers
    # and date strings); a real object schema would describe or exemplify an object.
    return (
        schema.get("type") == "object"
        and "example" in schema
        and not isinstance(schema["example"], dict)
        and not any(k in schema for k in ("properties", "additionalProperties", "required"))
    )


def _untyped_array(schema: Any) -> bool:
    # `items: {type: array}` without its own `items` is how the generator writes "list of
    # undocumented things" (pipeline stages, opportunity notes); real elements are objects.
    return (
        isinstance(schema, dict)
        and schema.get("type") == "array"
        and "items" not in schema
        and "prefixItems" not in schema
    )


# --- refs between files ---------------------------------------------------------------------


def _rewrite_file_refs(node: Any, folder: Path) -> None:
    """Make every cross-file `$ref` absolute, mapping `../common/x.json` to `./x.json`.

    The GHL files were copied out of a repo where they sat in `apps/` with `common/` beside it;
    here everything sits in one folder (see SOURCE.md next to them).
    """
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and not ref.startswith("#") and "://" not in ref:
            target, _, fragment = ref.partition("#")
            path = (folder / target).resolve()
            if not path.is_file():
                path = folder / Path(target).name
            node["$ref"] = f"{path.resolve().as_uri()}#{fragment}"
        for value in node.values():
            _rewrite_file_refs(value, folder)
    elif isinstance(node, list):
        for value in node:
            _rewrite_file_refs(value, folder)


def _referenced_files(node: Any) -> list[Path]:
    found: list[Path] = []
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, dict):
            ref = current.get("$ref")
            if isinstance(ref, str) and ref.startswith("file:"):
                found.append(Path(unquote(urlsplit(ref.partition("#")[0]).path)))
            stack.extend(current.values())
        elif isinstance(current, list):
            stack.extend(current)
    return sorted(set(found))


def _resolve_pointer(doc: Any, fragment: str) -> Any:
    node = doc
    for raw in fragment.lstrip("/").split("/") if fragment.strip("/") else []:
        segment = raw.replace("~1", "/").replace("~0", "~")
        node = node[int(segment)] if isinstance(node, list) else node[segment]
    return node


# --- small helpers --------------------------------------------------------------------------


def _segments(path: str) -> list[str]:
    return [s for s in path.split("/") if s]


def _is_param(segment: str) -> bool:
    return segment.startswith("{") and segment.endswith("}")


def _escape(segment: str) -> str:
    return segment.replace("~", "~0").replace("/", "~1")


def _ref(uri: str, pointer: str) -> str:
    # Percent-encode the pointer: templates hold "{" and "}", which are not legal in a URI.
    return f"{uri}#{quote(pointer, safe='/~')}"


def _json_media_type(content: Mapping[str, Any]) -> str | None:
    for media in content:
        if media.split(";")[0].strip() == "application/json" or media.endswith("+json"):
            return media
    return None


def _query_lists(query: Mapping[str, list[str] | str]) -> dict[str, list[str]]:
    return {
        name: [value] if isinstance(value, str) else [str(v) for v in value]
        for name, value in query.items()
    }


def _coerce(value: str, type_: Any) -> Any:
    """A query/header string as the type its schema declares (left alone if it is not one)."""
    types = type_ if isinstance(type_, list) else [type_]
    if "integer" in types and re.fullmatch(r"-?\d+", value):
        return int(value)
    if "number" in types and re.fullmatch(r"-?\d+(\.\d+)?([eE][-+]?\d+)?", value):
        return float(value)
    if "boolean" in types and value in ("true", "false"):
        return value == "true"
    return value


def _describe(error: ValidationError, where: str) -> list[str]:
    """GHL-like wording for one error found at `where` (e.g. "body.customFields[0]")."""
    if error.validator in ("unevaluatedProperties", "additionalProperties"):
        extras = _unexpected(error)
        if extras:
            return [f"{where}: property {name} should not exist" for name in extras]
    if error.validator in ("anyOf", "oneOf") and error.context:
        # Name the failure of the branch that came closest, not just "none matched".
        reason = best_match(error.context)
        closest = "; ".join(_describe(reason, where + _path_text(reason.relative_path)))
        return [f"{where}: matches none of the allowed shapes; closest: {closest}"]
    return [f"{where}: {error.message}"]


def _path_text(path: Any) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)


def _unexpected(error: ValidationError) -> list[str]:
    # jsonschema names the offenders only in its message: "('a', 'b' were unexpected)".
    match = re.search(r"\((.*) (?:was|were) unexpected\)", error.message)
    if match:
        return re.findall(r"'((?:[^'\\]|\\.)*)'", match.group(1))
    if isinstance(error.instance, dict) and isinstance(error.schema, dict):
        declared = set(error.schema.get("properties") or {})
        return sorted(set(error.instance) - declared)
    return []
