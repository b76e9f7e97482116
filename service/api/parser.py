"""The request parser every blueprint uses: webargs' FlaskParser, with JSON errors of our own
for bodies that are not JSON at all (415), not valid JSON or nested too deeply (400), or
holding values no field can take (422 naming them: ``service.web.jsonbody``), and unknown
query parameters rejected (422) unless the schema includes them."""

from flask_smorest import Blueprint as SmorestBlueprint
from webargs import core
from webargs.flaskparser import FlaskParser, is_json_request

from service.web.jsonbody import BadValues, TooDeep, decode_body

from .errors import ApiError

# Bodies the JSON location leaves alone: an endpoint may read them itself (dataset uploads).
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


class Parser(FlaskParser):
    # Query strings follow their schema's Meta.unknown (RAISE unless a schema says otherwise)
    # instead of webargs' silent EXCLUDE: a mistyped parameter is an error, not ignored.
    DEFAULT_UNKNOWN_BY_LOCATION = {**FlaskParser.DEFAULT_UNKNOWN_BY_LOCATION,
                                   "query": None, "querystring": None}

    def _raw_load_json(self, req):
        if not is_json_request(req):
            if req.mimetype not in FORM_TYPES and req.get_data(cache=True):
                raise ApiError(415, "unsupported_media_type",
                               f"expected a JSON body (Content-Type: application/json), got "
                               f"{req.mimetype or 'no content type'}",
                               {"body": "not JSON"})
            return core.missing
        try:
            return decode_body(req.get_data(cache=True))
        except TooDeep as exc:
            raise ApiError(400, "invalid_json", f"the body is not usable JSON: {exc}",
                           {"body": str(exc)}) from None
        except BadValues as exc:
            raise ApiError(422, "validation_error", f"invalid {', '.join(sorted(exc.fields))}",
                           exc.fields) from None

    def _handle_invalid_json_error(self, error, req, *args, **kwargs):
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {error}",
                       {"body": str(error)})


class Blueprint(SmorestBlueprint):
    """flask-smorest's Blueprint with our parser."""

    ARGUMENTS_PARSER = Parser()
