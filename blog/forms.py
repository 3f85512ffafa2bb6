"""A refused form: every error in the summary above it, and each beside its field."""

from flask import flash

FieldErrors = dict[str, list[str]]  # a form field's name -> what is wrong with it


def refused(errors: FieldErrors) -> dict[str, str]:
    """Flash every error, in the form's order, and return each field's errors
    as one line, for the template to show beside the field (templates/_fields.html)."""
    for messages in errors.values():
        for message in messages:
            flash(message, "error")
    return {field: " ".join(messages) for field, messages in errors.items() if messages}
