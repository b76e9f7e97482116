"""The request parser every blueprint uses: webargs' FlaskParser, with JSON errors of our own
for bodies that are not JSON at all (415) or not valid JSON (400), and unknown query
parameters rejected (422) unless the schema includes them."""

from flask_smorest import Blueprint as SmorestBlueprint
from webargs.flaskparser import FlaskParser, is_json_request

from .errors import ApiError

# Bodies the JSON location leaves alone: an endpoint may read them itself (dataset uploads).
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


class Parser(FlaskParser):
    # Query strings follow their schema's Meta.unknown (RAISE unless a schema says otherwise)
    # instead of webargs' silent EXCLUDE: a mistyped parameter is an error, not ignored.
    DEFAULT_UNKNOWN_BY_LOCATION = {**FlaskParser.DEFAULT_UNKNOWN_BY_LOCATION,
                                   "query": None, "querystring": None}

    def _raw_load_json(self, req):
        if not is_json_request(req) and req.mimetype not in FORM_TYPES \
                and req.get_data(cache=True):
            raise ApiError(415, "unsupported_media_type",
                           f"expected a JSON body (Content-Type: application/json), got "
                           f"{req.mimetype or 'no content type'}",
                           {"body": "not JSON"})
        return super()._raw_load_json(req)

    def _handle_invalid_json_error(self, error, req, *args, **kwargs):
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {error}",
                       {"body": str(error)})


class Blueprint(SmorestBlueprint):
    """flask-smorest's Blueprint with our parser."""

    ARGUMENTS_PARSER = Parser()
