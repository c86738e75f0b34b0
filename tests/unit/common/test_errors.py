import grpc
import pytest

from tessera.common import errors


@pytest.mark.parametrize(
    ("error", "http", "code"),
    [
        (errors.InvalidArgument("x"), 400, grpc.StatusCode.INVALID_ARGUMENT),
        (errors.NotFound("x"), 404, grpc.StatusCode.NOT_FOUND),
        (errors.ResourceExhausted("x", retry_after_s=2), 429, grpc.StatusCode.RESOURCE_EXHAUSTED),
        (errors.Unauthenticated("x"), 401, grpc.StatusCode.UNAUTHENTICATED),
        (errors.AlreadyExists("x"), 409, grpc.StatusCode.ALREADY_EXISTS),
        (errors.Cancelled("x"), 499, grpc.StatusCode.CANCELLED),
        (errors.ModelNotReady("x"), 503, grpc.StatusCode.UNAVAILABLE),
        (errors.Unavailable("x"), 503, grpc.StatusCode.UNAVAILABLE),
        (ValueError("secret detail"), 500, grpc.StatusCode.INTERNAL),
    ],
)
def test_one_table_maps_every_error(error, http, code):
    assert errors.http_status(error) == http
    assert errors.grpc_status(error) == code


def test_public_message_hides_unexpected_errors():
    assert errors.public_message(errors.InvalidArgument("n must be 1..4")) == "n must be 1..4"
    assert errors.public_message(KeyError("internal path /x")) == "internal error"
    assert errors.error_code_name(errors.NotFound("x")) == "not_found"


def test_every_domain_error_is_in_the_table():
    classes = {c for c, _ in errors.STATUS_TABLE}
    for name in dir(errors):
        obj = getattr(errors, name)
        if (
            isinstance(obj, type)
            and issubclass(obj, errors.TesseraError)
            and obj is not errors.TesseraError
        ):
            assert any(issubclass(obj, c) for c in classes), name
