"""How the web app answers an HTTP error: JSON with a message, never an HTML traceback.
(The config page answers its own errors as pages; see admin/blueprint.py.)"""

from __future__ import annotations

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

MAX_BODY_BYTES = 1024 * 1024


def init_app(app: Flask) -> None:
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(RequestEntityTooLarge, _too_large)


def _http_error(exc: HTTPException) -> Response:
    """Every HTTP error answers JSON with a message, never an HTML traceback page."""
    response = jsonify(error=exc.description or exc.name)
    response.status_code = exc.code or 500
    return response


def _too_large(exc: RequestEntityTooLarge) -> Response:
    response = jsonify(error=f"body is larger than {MAX_BODY_BYTES // 1024} KiB")
    response.status_code = 413
    return response
