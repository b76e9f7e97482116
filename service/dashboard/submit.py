"""The form that submits a run."""

from flask import flash, redirect, render_template, request, url_for
from marshmallow import ValidationError

from service.datasets import BUILTIN_NAMES
from service.errors import Invalid, QueueDown, QuotaExceeded, field_messages
from service.runs import submit_run
from service.runspec import ACTIVATION_NAMES, BATCH_MODES, LOSS_NAMES, RunSpecSchema
from service.web.context import db, queue, settings

from . import forms, queries
from .auth import login_required
from .blueprint import bp


def _dataset_names() -> list[str]:
    builtin = list(BUILTIN_NAMES)
    return builtin + [d.name for d in queries.user_datasets() if d.name not in builtin]


@bp.route("/submit", methods=["GET", "POST"])
@login_required
def submit():
    """A form for a run, validated exactly as POST /api/v1/runs validates a spec."""
    values, errors, message = forms.defaults(), {}, None
    status = 200
    if request.method == "POST":
        values = {name: request.form.get(name, "") for name in forms.FIELDS}
        fields, errors = forms.spec_from_form(values)
        if not errors:
            try:
                run = submit_run(db(), queue(), settings().limits, queries.user(),
                                 RunSpecSchema().load(fields))
                flash(f"run {run.id} queued", "info")
                return redirect(url_for(".run", run_id=run.id))
            except ValidationError as exc:
                for path, text in field_messages(exc.messages).items():
                    errors.setdefault(forms.field_of(path), text)
            except Invalid as exc:
                for path, text in exc.fields.items():
                    errors.setdefault(forms.field_of(path), text)
            except QueueDown as exc:
                message, status = exc.message, 503
            except QuotaExceeded as exc:
                message = "; ".join(f"{k}: {v}" for k, v in exc.fields.items())
                status = 429
        if errors:
            status = 422
            message = message or "The run was not submitted: fix the fields marked below."
            # A field the form does not show (a spec default it cannot change) still shows.
            hidden = {k: v for k, v in errors.items() if k not in forms.FIELDS}
            if hidden:
                message += " " + "; ".join(f"{k}: {v}" for k, v in hidden.items())
    return render_template("submit.html", values=values, errors=errors, message=message,
                           datasets=_dataset_names(), activations=ACTIVATION_NAMES,
                           losses=LOSS_NAMES, batch_modes=BATCH_MODES,
                           optimizers=forms.OPTIMIZERS, schedules=forms.SCHEDULES,
                           plateau_choices=forms.PLATEAU_CHOICES), status
