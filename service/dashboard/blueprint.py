"""The dashboard's blueprint (its name, "dashboard", is what the API's auth hook exempts)."""

from flask import Blueprint

bp = Blueprint("dashboard", __name__, template_folder="templates", static_folder="static",
               static_url_path="/ui/static")
